"""A results directory as a whole: what it holds, and its one writer.

A results directory is in one of these states, read from its manifest.json:
absent or empty ('new'), 'running' or 'interrupted' (resumable: same config
only), 'complete' (`inspect`). One sweep at a time writes it: `Lock` holds an
exclusive OS lock (flock) on `<out>/.overparam.lock` for the whole sweep, which
the OS drops when the process dies, so a crash never leaves a stale lock
(`exclusive`: the leader's lock, for every process). Owns too what --overwrite
clears (`clear`) and what a crash leaves (`clean_leftovers`). The per-batch
checkpoints inside it are `overparam.checkpoint`'s.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from overparam import multihost, store

LOCK = ".overparam.lock"


class OutError(ValueError):
    """A results directory that cannot be used; str(err) is one line."""

    def __init__(self, message: str):
        super().__init__(f"--out: {message}")


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'field: old -> new' for every field that differs."""
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def _is_own(path: Path) -> bool:
    """overparam's own hidden files at the top of a directory: the lock, temporaries
    (regular files: a link of those names is not overparam's)."""
    return (path.is_file() and not path.is_symlink()
            and (path.name == LOCK or store.is_temporary(path)))


def inspect(out: Path, config: dict[str, Any], *, overwrite: bool) -> tuple[str, dict]:
    """What to do with `out`, without changing it: ('new' | 'overwrite' | 'resume' |
    'complete', manifest or {}).

    Refuses a file, a foreign non-empty directory, an unreadable manifest and,
    unless overwrite, a damaged manifest (`store.check_manifest`: a field of the wrong
    type, value or name, a link in the directory) or a sweep of another configuration.
    """
    if not out.exists():
        return "new", {}
    if not out.is_dir():
        raise OutError(f"{out} exists and is not a directory")
    if not (out / store.MANIFEST).is_file():
        if any(not _is_own(p) for p in out.iterdir()):
            raise OutError(f"{out} is not empty and holds no overparam sweep (no "
                           f"{store.MANIFEST}); choose another --out")
        return "new", {}   # empty, or only what a crash of overparam leaves
    try:
        manifest = store.read_manifest(out)
    except store.ResultsError as e:
        raise OutError(f"{e}; delete the directory or choose another --out") from None
    if overwrite:
        return "overwrite", manifest
    try:
        store.check_manifest(out, manifest)
    except store.ResultsError as e:
        raise OutError(f"{out} holds a damaged sweep: {e}; --overwrite recomputes it") from None
    diff = config_diff(manifest["config"], config)
    if diff:
        raise OutError(f"{out} holds a different sweep ({'; '.join(diff)}); choose another "
                       "--out, or pass --overwrite to replace it")
    return ("complete" if manifest["status"] == "complete" else "resume"), manifest


def verify_complete(out: Path, manifest: dict) -> None:
    """Checks a complete `out` with `store.verify_complete`, the very checks `load` makes
    (OutError if it fails)."""
    try:
        store.verify_complete(out, manifest)
    except store.ResultsError as e:
        raise OutError(f"{out} holds this sweep, but damaged: {e}") from None


def clean_leftovers(out: Path) -> int:
    """Deletes the temporary files a crash left behind (overparam's names only); returns
    how many. A temporary directory (an analysis being written, or one a kill left: its
    next run recovers it, overparam/analysis/outdir.py) and what it holds are left alone."""
    leftovers = [p for p in out.rglob(f"*{store.TEMP_SUFFIX}") if store.is_temporary(p)
                 and not p.is_dir() and not any(
                     store.is_temporary(folder) for folder in p.relative_to(out).parents)]
    for p in leftovers:
        p.unlink(missing_ok=True)
    return len(leftovers)


def clear(out: Path) -> None:
    """Deletes everything in `out` but the lock (what --overwrite replaces)."""
    for p in out.iterdir():
        if p.name != LOCK:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


class Lock:
    """The one-writer lock of a results directory (creates the directory if needed).

    `acquire` raises OutError, naming the holder, when another process holds
    it. `release` removes the lock file (while still holding the lock) and,
    if `acquire` created the directory and nothing else was put in it, the
    directory too.
    """

    def __init__(self, out: Path):
        self.out, self.path = Path(out), Path(out) / LOCK
        self.created, self._fd = False, None

    def acquire(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise OutError(f"{self.out} exists and is not a directory")
        self.created = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutError(f"cannot create {self.out}: {_reason(e)}") from None
        while self._fd is None:
            try:  # never through a link: truncating it would write outside `out`
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                self._remove_created()
                if e.errno == errno.ELOOP:
                    raise OutError(f"{self.path} is a symbolic link; overparam never writes "
                                   "through one: remove it") from None
                raise OutError(f"cannot write in {self.out}: {_reason(e)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "starting up"
                os.close(fd)
                raise OutError(f"{self.out} is in use by another sweep ({holder}); wait for "
                               "it to end, or choose another --out") from None
            # The previous holder removes the file when it ends: a lock taken on a
            # file that is no longer at `path` locks nothing, so take it again.
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if not current:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        if self.created:
            try:
                self.out.rmdir()
            except OSError:
                pass  # not empty: the sweep wrote into it



@contextmanager
def exclusive(out: Path):
    """Holds `out`'s Lock for the block: the leader takes it for every process, and every
    process raises OutError if it could not."""
    lock, error = Lock(out), None
    if multihost.is_leader():
        try:
            lock.acquire()
        except OutError as e:
            error = e
    if not multihost.gather(0 if error else 1)[0]:  # the leader's verdict, for everyone
        raise error or OutError(f"process 0 could not lock {out}")
    try:
        yield
    finally:
        lock.release()
