"""A progress bar for long sweeps: network-steps done, rate and ETA.

The clock and the stream are injectable so tests need no sleeps.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Counts network-steps done out of `total` and draws a one-line bar.

    On a terminal the line is redrawn in place; otherwise a line is written at
    most every `min_interval` seconds (and at the end).
    """

    def __init__(self, total: int, *, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, min_interval: float = 0.5,
                 width: int = 30, enabled: bool = True):
        self.total, self.done = max(int(total), 1), 0
        self.stream = sys.stderr if stream is None else stream
        self.clock, self.min_interval = clock, min_interval
        self.width, self.enabled = width, enabled
        self.start = self.last_draw = clock()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._lock = threading.Lock()

    def rate(self) -> float:
        """Network-steps per second since start."""
        elapsed = self.clock() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        frac = min(self.done / self.total, 1.0)
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        rate = self.rate()
        eta = _duration((self.total - self.done) / rate) if rate > 0 else "--:--"
        elapsed = _duration(self.clock() - self.start)
        return (f"[{bar}] {100 * frac:5.1f}% {self.done:,}/{self.total:,} network-steps "
                f"| {rate:,.0f}/s | {elapsed} elapsed, ETA {eta}")

    def update(self, steps: int) -> None:
        with self._lock:
            self.done += int(steps)
            now = self.clock()
            if not self.enabled or (now - self.last_draw < self.min_interval
                                    and self.done < self.total):
                return
            self.last_draw = now
            end = "\n" if not self.tty else ("\n" if self.done >= self.total else "")
            self.stream.write(("\r" if self.tty else "") + self.line() + end)
            self.stream.flush()
