"""SIGINT and SIGTERM: a clean stop, never a traceback.

Two modes. Outside a `deferred()` block (start-up, planning, compiling), the
handlers `install`ed by the command line raise `Interrupted` at once: nothing
is being written that a resume could not redo. Inside it (the training loop,
where a batch is between two writes) a signal only sets a flag that the
engine reads at the next chunk boundary, so it stops with every written file
complete and the checkpoint consistent.

Imports nothing heavy: the command line installs the handlers before it
imports JAX, so that Ctrl-C during an import is a clean stop too.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The sweep stopped on SIGINT or SIGTERM; the results directory can be resumed."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum, frame):
    del frame
    raise Interrupted(signum)


def install() -> None:
    """SIGINT and SIGTERM raise Interrupted from now on (main thread only)."""
    for sig in SIGNALS:
        signal.signal(sig, _raise)


class _Flag:
    signum: int | None = None

    def set(self, signum, frame):
        del frame
        if self.signum is None:
            self.signum = signum


@contextlib.contextmanager
def deferred():
    """Within the block a signal sets `flag.signum` instead of raising.

    Yields the flag. The previous handlers come back on exit; a signal that
    arrived in the block is left for the caller to act on. Outside the main
    thread (where Python cannot take signals) the flag simply stays unset.
    """
    flag = _Flag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = {sig: signal.signal(sig, flag.set) for sig in SIGNALS}
    try:
        yield flag
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
