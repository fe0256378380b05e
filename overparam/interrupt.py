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


class Interrupted(Exception):
    """The sweep stopped on SIGINT or SIGTERM; the results directory can be resumed.

    now: raised by a second Ctrl-C without waiting for the chunk being computed and
    written, whose thread may still be running.
    """

    def __init__(self, signum: int, now: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.now = signum, now


def _raise(signum, frame):
    del frame
    raise Interrupted(signum)


def install() -> None:
    """SIGINT and SIGTERM raise Interrupted from now on (main thread only)."""
    for sig in SIGNALS:
        signal.signal(sig, _raise)


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
