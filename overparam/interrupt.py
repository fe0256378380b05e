"""SIGINT and SIGTERM: a clean stop, never a traceback; a second Ctrl-C stops now.

Two modes. Outside a `deferred()` block (start-up, planning, compiling), the
handlers `install`ed by the command line raise `Interrupted` at once: nothing
is being written that a resume could not redo. Inside it (the training loop,
where a batch is between two writes) a signal sets a flag that the engine
reads at the next chunk boundary, so it stops with every written file complete
and the checkpoint consistent. The first signal is acknowledged at once
(`NOTICE` on stderr, or through `flag.notify`). A second Ctrl-C raises
`Interrupted(now=True)` at once, from wherever the main thread is (waiting on
the writer thread, `wait`, or the device): the writer may then be in the middle
of a chunk, which is what a kill at that moment would leave, and resumable
(every file is written atomically, temporaries are cleaned on resume). The
command line then exits without waiting for that writer. SIGTERM always stops
at the next chunk boundary. Once the sweep is past training (`flag.hold()`),
signals no longer stop it: it completes.

Imports nothing heavy: the command line installs the handlers before it
imports JAX, so that Ctrl-C during an import is a clean stop too.

`Interrupted` is a BaseException, as KeyboardInterrupt is: code that catches
Exception (a library's error handling, a one-line error of ours) never turns a
signal into an error or drops it. `install(once=True, line=...)` is the
analysis's command line (a stop that is only the removal of its hidden
directory): only the first signal raises, one escaping to the top (a signal
during an import) is `line` on stderr and exit 128 + signum, `received` tells
whether a signal came (even one a library caught and dropped), and
`exit_on_signal` answers a signal after the work at once, without an exception.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)
NOTICE = "stopping after this chunk; Ctrl-C again to stop now"
HOLDING = "too late to stop: the sweep is writing its last files"
POLL_SECONDS = 0.25  # `wait`'s slices: how soon the main thread runs a handler at the latest


class Interrupted(BaseException):
    """The sweep (or analysis) stopped on SIGINT or SIGTERM; the results directory can be
    resumed. A BaseException, as KeyboardInterrupt: `except Exception` does not catch it.

    now: raised by a second Ctrl-C without waiting for the chunk being computed and
    written, whose thread may still be running.
    """

    def __init__(self, signum: int, now: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.now = signum, now


_received: int | None = None  # the first signal `install`'s handlers took
_once = False                 # install(once=True): later signals do not raise


def _raise(signum, frame):
    global _received
    del frame
    if _once and _received is not None:
        return  # the first signal's stop is under way: it is not cut short
    if _received is None:
        _received = signum
    raise Interrupted(signum)


def install(once: bool = False, line: Callable[[int], str] | None = None) -> None:
    """SIGINT and SIGTERM raise Interrupted from now on (main thread only).

    once: only the first signal raises; later ones are ignored while it stops.
    line: an Interrupted that reaches the top of the program uncaught (raised during
    an import, before any `try` of the command line) prints `line(signum)` on stderr
    and exits 128 + signum, with no traceback.
    """
    global _received, _once
    _received, _once = None, once
    for sig in SIGNALS:
        signal.signal(sig, _raise)
    if line is not None:
        previous = sys.excepthook

        def hook(kind, value, tb):
            if isinstance(value, Interrupted):
                _exit(value.signum, line(value.signum))
            previous(kind, value, tb)

        sys.excepthook = hook


def installed() -> bool:
    """Whether `install`'s handlers take SIGINT now."""
    return signal.getsignal(signal.SIGINT) is _raise


def received() -> int | None:
    """The first signal that `install`'s handlers took since it was called, even where the
    Interrupted it raised was caught and dropped on the way; None if none came."""
    return _received


def _exit(signum: int, text: str):
    """`text` on stderr, then the process ends now with status 128 + signum."""
    with contextlib.suppress(OSError, ValueError):
        say(text)
        sys.stdout.flush()
    os._exit(128 + signum)


def exit_on_signal(line: Callable[[int], str]) -> None:
    """From now on SIGINT and SIGTERM end the process at once: `line(signum)` on stderr and
    exit status 128 + signum, without raising (for a command line past its work, where
    nothing is left to stop cleanly and an exception could only be a traceback)."""
    for sig in SIGNALS:
        signal.signal(sig, lambda signum, frame: _exit(signum, line(signum)))


def say(text: str) -> None:
    """`text` on its own line on stderr, at once (also from a signal handler that
    interrupted a write to stderr)."""
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except RuntimeError:  # "reentrant call": the handler interrupted this thread's write
        os.write(2, ("\n" + text + "\n").encode())


class _Flag:
    """What `deferred` yields: `signum` (the first signal, or None), `notify` (how a signal
    is acknowledged: a callable taking one line, `say` unless replaced) and `hold`."""

    def __init__(self, notify: Callable[[str], None] | None = None):
        self.signum: int | None = None
        self.notify = notify or say
        self.interrupts = 0   # SIGINTs so far
        self.holding = False

    def hold(self) -> None:
        """From here on a signal no longer stops the sweep (a second Ctrl-C included):
        it is past training and completes."""
        self.holding = True

    def set(self, signum, frame=None):
        del frame
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1 and not self.holding:
                raise Interrupted(signum, now=True)
        if self.signum is None:
            self.signum = signum
        if self.holding:
            self.notify(HOLDING)
        elif signum == signal.SIGINT:
            self.notify(NOTICE)
        else:
            self.notify(f"{signal.Signals(signum).name}: stopping after this chunk")


@contextlib.contextmanager
def deferred(notify: Callable[[str], None] | None = None):
    """Within the block a signal sets `flag.signum` (and says so) instead of raising; a
    second SIGINT raises Interrupted(now=True).

    Yields the flag. The previous handlers come back on exit; a signal that
    arrived in the block is left for the caller to act on. Outside the main
    thread (where Python cannot take signals) the flag simply stays unset.
    """
    flag = _Flag(notify)
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = {sig: signal.signal(sig, flag.set) for sig in SIGNALS}
    try:
        yield flag
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def wait(future: concurrent.futures.Future, poll: float = POLL_SECONDS):
    """future.result(), waited for in slices of `poll` seconds: the main thread then runs
    a signal's handler (a second Ctrl-C raising Interrupted) within `poll` even where
    the operating system gave the signal to another thread."""
    while True:
        try:
            return future.result(timeout=poll)
        except concurrent.futures.TimeoutError:
            continue
