"""One-line errors for the command-line entry points (sweep, analyze)."""

from __future__ import annotations

import signal
import sys


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (KeyError('x') -> x)."""
    text = str(e).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return (text or type(e).__name__).splitlines()[0]


def fail(message: str) -> None:
    """Prints `error: message` on stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def analysis_interrupted(signum: int) -> str:
    """The one line on stderr of an analysis stopped by SIGINT or SIGTERM."""
    return (f"interrupted by {signal.Signals(signum).name}: the analysis stopped; its "
            "directory is as it was before (or complete, if the signal came once it was)")
