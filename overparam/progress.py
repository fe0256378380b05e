"""The progress line of a sweep: work done (FLOPs), work rate, elapsed time and ETA.

Progress is measured in work, not in network-steps: the engine weighs a
batch's network-steps by `plan.step_flops` of its shape, so that a width-1024
batch counts as the (width/64)^2 times more work it is than a width-64 one, and
the ETA is the remaining work over the work rate (measured while training:
time spent compiling is left out of the rate).

  [###########-----------]  47.3%   12.3 GFLOP/s  01:23 elapsed  ETA 02:41
  compiling 2/6: width 1024 depth 2 n=128 (batch 64)  00:04

Every line fits in 80 columns, whatever the counts and rates (fixed-width
fields, hours past 99 shown as days, a final cut). On a terminal the line is
redrawn in place, by a timer thread every `redraw_interval` seconds (so the
clock moves between chunks and while compiling), each redraw padded with
spaces over the previous one (no escape sequences: it works on any terminal,
`TERM=dumb` included). Anywhere else (a log file, a pipe) it writes whole lines
only, never a carriage return: one per update at most every `min_interval`
seconds (an update held back is written by the timer once that has passed),
one per compile, and the last one.

Neither tqdm nor rich: tqdm is not installed, and rich (installed, but not a
dependency) would have to become one for a single line; neither weighs the
ETA by a rate measured outside compile time, and both draw with ANSI escapes
on a terminal. This bar is small and takes an injected clock and stream, so
the tests drive it (`tick`) without sleeping.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

COLUMNS = 80  # the widest line drawn; on a terminal one column less (no auto-wrap)
_PREFIXES = ("", "k", "M", "G", "T", "P", "E", "Z", "Y", "R", "Q")
_RATE_WIDTH = 13       # "999.9 GFLOP/s"
_DURATION_WIDTH = 8    # "99:59:59"
# "100.0%  " + rate + "  " + duration + " elapsed  ETA " + duration
_TAIL_WIDTH = 8 + _RATE_WIDTH + 2 + _DURATION_WIDTH + 14 + _DURATION_WIDTH


def duration(seconds: float | None) -> str:
    """mm:ss, h:mm:ss up to 99 hours, then days and hours ("12d03h"); at most 8 characters."""
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    s = max(int(round(seconds)), 0)
    if s < 3600:
        return f"{s // 60:02d}:{s % 60:02d}"
    if s < 100 * 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    days, hours = divmod(s // 3600, 24)
    return f"{days}d{hours:02d}h" if days < 1000 else ">999d"


def flop_rate(per_second: float | None) -> str:
    """FLOP/s with an SI prefix, at most 13 characters ("999.9 GFLOP/s")."""
    if per_second is None or not math.isfinite(per_second) or per_second <= 0:
        return "-- FLOP/s"
    for prefix in _PREFIXES:
        if per_second < 999.95:
            return f"{per_second:.1f} {prefix}FLOP/s"
        per_second /= 1000
    return ">999 QFLOP/s"


def _terminal_columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or COLUMNS
    except (AttributeError, OSError, ValueError):
        return COLUMNS


class Progress:
    """Work done out of `total` (any unit; the engine's is FLOPs), drawn as one line.

    Use as a context manager (it starts and stops the redraw timer). `begin`
    sets the total when it is known (the engine plans first); a total given
    here begins at once. `update(work)` after each chunk, from any thread;
    `compiling(text)` around a compile; `message(text)` for a line of its own
    above the bar, written even when the bar is disabled. in_logs=False: nothing
    unless the stream is a terminal (a dry run's compile lines, erased once planned).
    """

    def __init__(self, total: float | None = None, *, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, min_interval: float = 5.0,
                 redraw_interval: float = 0.5, columns: int | None = None,
                 enabled: bool = True, in_logs: bool = True):
        self.stream = sys.stderr if stream is None else stream
        self.clock, self.min_interval, self.redraw_interval = clock, min_interval, redraw_interval
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled and (in_logs or self.tty)
        columns = columns or (min(COLUMNS, _terminal_columns(self.stream)) if self.tty
                              else COLUMNS)
        self.columns = min(columns, COLUMNS) - (1 if self.tty else 0)
        self._lock = threading.RLock()
        self.created = clock()
        self.total, self.done, self.begun, self.finished = 0.0, 0.0, False, False
        self.start = self._paused = 0.0
        self._rate = 0.0           # work per training second, at the last update
        self._estimate: tuple[float, float] | None = None  # (busy seconds, ETA) at the last update
        self._status: tuple[str, float] | None = None      # the compile line and its start
        self._shown = 0            # terminal: length of the line on screen (0: none)
        self._last_draw = -math.inf
        self._pending = False      # not a terminal: an update not written yet
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        if total is not None:
            self.begin(total)

    # ------------------------------------------------------------------ state

    def begin(self, total: float) -> None:
        """Starts counting `total` work; the rate is measured from now."""
        with self._lock:
            self.total, self.done = max(float(total), 0.0), 0.0
            self.start, self._paused, self._estimate, self._rate = self.clock(), 0.0, None, 0.0
            self.begun, self.finished = True, False
            if self.tty:
                self._draw()

    def _busy(self, now: float) -> float:
        """Seconds since `begin`, less those spent compiling."""
        compiling = now - self._status[1] if self._status and self.begun else 0.0
        return now - self.start - self._paused - compiling

    def rate(self) -> float:
        """Work per second of training (compile time left out), as of the last update."""
        return self._rate

    def eta(self) -> float | None:
        """Seconds left: the remaining work over the rate at the last update, counted down
        since (None before the first update)."""
        with self._lock:
            if self.done >= self.total:
                return 0.0
            if self._estimate is None:
                return None
            busy, left = self._estimate
            return max(left - (self._busy(self.clock()) - busy), 0.0)

    def update(self, work: float) -> None:
        """Adds `work` done (the engine: network-steps x FLOPs per network-step)."""
        with self._lock:
            self.done += float(work)
            now = self.clock()
            busy = self._busy(now)
            self._rate = rate = self.done / busy if busy > 0 else 0.0
            left = (self.total - self.done) / rate if rate > 0 else None
            self._estimate = (busy, left) if left is not None else None
            if not self.enabled or self.finished or self._stop.is_set():  # closed
                return
            end = self.done >= self.total
            if self.tty:
                if end or now - self._last_draw >= self.redraw_interval:
                    self._draw(end=end)
            elif end or now - self._last_draw >= self.min_interval:
                self._write_line(self.line())
            else:
                self._pending = True
            self.finished = end

    def tick(self) -> None:
        """What the timer does every `redraw_interval`: redraws the line on a terminal;
        elsewhere writes an update held back once `min_interval` has passed."""
        with self._lock:
            if not self.enabled or self._stop.is_set():
                return
            if self.tty:
                if self._status or (self.begun and not self.finished):
                    self._draw()
            elif self._pending and self.clock() - self._last_draw >= self.min_interval:
                self._write_line(self.line())

    # ------------------------------------------------------------------ text

    def line(self) -> str:
        """The bar, or while compiling the compile line; at most `columns` characters."""
        with self._lock:
            now = self.clock()
            if self._status is not None:
                text, since = self._status
                return self._fit(f"{text}  {duration(now - since)}")
            frac = min(self.done / self.total, 1.0) if self.total > 0 else 1.0
            tail = (f"{100 * frac:5.1f}%  {flop_rate(self.rate()):>{_RATE_WIDTH}}  "
                    f"{duration(now - self.created)} elapsed  ETA {duration(self.eta())}")
            width = self.columns - _TAIL_WIDTH - 4
            if width < 5:
                return self._fit(tail)
            filled = int(frac * width)
            return self._fit(f"[{'#' * filled}{'-' * (width - filled)}]  {tail}")

    def _fit(self, text: str) -> str:
        return text[: self.columns]

    # ------------------------------------------------------------------ drawing

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: no more progress
            self.enabled = False
        except RuntimeError:  # a signal handler's message while this thread was writing
            try:
                os.write(self.stream.fileno(), text.encode())
            except (AttributeError, OSError, ValueError):
                pass

    def _write_line(self, text: str) -> None:
        """Not a terminal: one whole line."""
        self._write(text + "\n")
        self._last_draw, self._pending = self.clock(), False

    def _draw(self, *, end: bool = False) -> None:
        """Terminal: the line in place, padded over the previous one; `end` leaves it."""
        if not self.enabled:
            return
        text = self.line()
        self._write("\r" + text + " " * max(self._shown - len(text), 0) + ("\n" if end else ""))
        self._shown = 0 if end else len(text)
        self._last_draw = self.clock()

    def _erase(self) -> None:
        if self._shown:
            self._write("\r" + " " * self._shown + "\r")
            self._shown = 0

    @contextlib.contextmanager
    def compiling(self, text: str) -> Iterator[None]:
        """Shows `text` (with its elapsed time on a terminal) while the block compiles."""
        with self._lock:
            self._status = (text, self.clock())
            if self.enabled:
                if self.tty:
                    self._draw()
                else:
                    self._write(self._fit(text) + "\n")
        try:
            yield
        finally:
            with self._lock:
                text, since = self._status
                if self.begun:
                    self._paused += self.clock() - since
                self._status = None
                if self.enabled and self.tty:
                    if self.begun and not self.finished:
                        self._draw()
                    else:
                        self._erase()

    def message(self, text: str) -> None:
        """`text` on a line of its own (the bar, on a terminal, redrawn below it), even when
        the bar is disabled. Safe in a signal handler: waits at most a second for a
        drawing thread."""
        locked = self._lock.acquire(timeout=1.0)
        try:
            if self.enabled and self.tty:
                self._erase()
            self._write(text + "\n")
            if self.enabled and self.tty and (self._status or (self.begun and not self.finished)):
                self._draw()
        finally:
            if locked:
                self._lock.release()

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> Progress:
        if self.enabled and self.redraw_interval > 0 and self._timer is None:
            self._timer = threading.Thread(target=self._run_timer, name="progress", daemon=True)
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run_timer(self) -> None:
        while not self._stop.wait(self.redraw_interval):
            self.tick()

    def close(self) -> None:
        """Stops the timer and leaves the last line: the bar as it stands (a terminal ends
        it with a newline), an update held back written out."""
        self._stop.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(timeout=1.0)
        with self._lock:
            if not self.enabled:
                return
            if self.tty:
                if self.begun and not self.finished:
                    self._draw(end=True)
                else:
                    self._erase()
                self.finished = self.finished or self.begun
            elif self._pending:
                self._write_line(self.line())
