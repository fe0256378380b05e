"""The analysis's output directory: built whole out of sight, then swapped in.

`building(out)` yields a hidden directory beside `out`, under the results' temporary
names (`.<name>.<8 hex>.overparam.tmp`, `store.is_temporary`), into which the analysis
writes everything; when the block ends normally it replaces `out` by it:

  1. the analyses nested in the old `out` (comparisons, in compare_*/ by default) are
     hard-linked into the new one (copied where the file system has no hard links);
  2. `out` is renamed aside, to a temporary name;
  3. the new directory is renamed to `out`;
  4. the old one is removed.

So a reader of `out` sees the previous analysis or the new complete one, never a mix.
SIGINT and SIGTERM wait for 2 and 3 (they are taken just after, on a complete `out`);
a block that ends by an exception (a signal, an error) removes its directory and leaves
`out` as it was. Only a kill (SIGKILL, a power loss) can fall between 2 and 3, leaving
no `out` and two complete temporaries; and a kill at any other moment leaves a
temporary. The next `building` of that `out` (or of the analysis it is nested in)
first recovers (`recover`): where `out` is missing, the newest complete temporary
(one holding report.md, which an analysis writes last) becomes `out`; then every
temporary of that name is removed. Nothing else is touched: foreign files are never
removed, and `building` refuses (OutputError) an existing `out` that holds anything but
an analysis's own files (FILES, figures/ of PNGs and PDFs, temporaries, nested
analyses): an analysis replaces its directory whole.

One analysis at a time writes an `out`: `building` holds an exclusive flock on the
directory that holds `out` and on `out` itself (directories: no lock file is left; the
operating system drops the locks when the process dies). Another analysis of that `out`,
of the analysis it is nested in or of one nested in it is refused at once
(OutputError). Parents that `building` had to create are removed again if the analysis
fails and they are still empty.

Test hook: store.crash_point('swap') between steps 2 and 3.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

from overparam import interrupt, store

FILES = ("report.md", "fits.csv", "generalization.csv", "per_run.parquet")  # run_analysis's
FIGURES = "figures"                 # figures.write_figures's folder: PNGs and PDFs
FIGURE_SUFFIXES = (".png", ".pdf")
COMPLETE = "report.md"              # written last: a directory holding it is complete


class OutputError(ValueError):
    """An analysis output directory that cannot be used; str(err) is one line."""

    def __init__(self, message: str):
        super().__init__(f"--out: {message}")


def _temporary(out: Path) -> Path:
    """A fresh temporary name beside `out` (store's convention)."""
    return out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}{store.TEMP_SUFFIX}"


def visible_name(path: Path) -> str | None:
    """The name whose temporary `path` is (`.<name>.<8 hex>.overparam.tmp` -> name), or
    None if `path` is not one of overparam's temporaries."""
    if not store.is_temporary(path):
        return None
    return path.name[1:-len(".01234567" + store.TEMP_SUFFIX)]


def temporaries(out: Path) -> list[Path]:
    """overparam's temporaries beside `out` that stand for `out` (sorted)."""
    if not out.parent.is_dir():
        return []
    return sorted(p for p in out.parent.iterdir() if visible_name(p) == out.name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def recover(out: Path) -> None:
    """Undoes what a kill left of earlier analyses of `out`: if `out` is missing, the
    newest complete temporary that stands for it (holding report.md) becomes `out`; then
    every other temporary of `out` is removed (a temporary analysis, a previous one set
    aside). Callers hold `out`'s lock."""
    left = temporaries(out)
    if not os.path.lexists(out):
        complete = [t for t in left if t.is_dir() and not t.is_symlink()
                    and (t / COMPLETE).is_file()]
        if complete:
            newest = max(complete, key=lambda t: (t / COMPLETE).stat().st_mtime_ns)
            os.rename(newest, out)
            left.remove(newest)
    for t in left:
        _remove(t)


def foreign_entry(out: Path) -> Path | None:
    """The first entry of directory `out` that is no part of an analysis (None if there is
    none): anything but FILES, figures/ with PNGs and PDFs, overparam's temporaries and
    directories that hold only these (nested analyses, e.g. compare_*/)."""
    for p in sorted(out.iterdir()):
        if store.is_temporary(p):
            continue
        if p.is_symlink():
            return p
        if p.is_file() and p.name in FILES:
            continue
        if p.is_dir() and p.name == FIGURES:
            odd = [q for q in sorted(p.iterdir()) if not store.is_temporary(q) and not (
                q.is_file() and not q.is_symlink() and q.suffix in FIGURE_SUFFIXES)]
            if odd:
                return odd[0]
            continue
        if p.is_dir():
            inner = foreign_entry(p)
            if inner is not None:
                return inner
            continue
        return p
    return None


def _check(out: Path) -> None:
    if out.name in ("", ".", ".."):
        raise OutputError(f"{out} cannot hold an analysis (give a directory with a name)")
    if not os.path.lexists(out):
        return
    if not out.is_dir():
        raise OutputError(f"{out} exists and is not a directory")
    odd = foreign_entry(out)
    if odd is not None:
        raise OutputError(f"{out} holds {odd.relative_to(out)}, which no analysis wrote; "
                          "an analysis replaces its directory whole: move that away or "
                          "choose another --out")


def _lock(path: Path, out: Path, held: list[int]) -> None:
    """Takes an exclusive flock on directory `path`, if it exists, and appends its
    descriptor to `held`; OutputError naming `out` if another process holds it."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OutputError(f"another analysis is writing {out} (or an analysis it "
                                  "holds or is held in); wait for it to end") from None
            raise
        with contextlib.suppress(FileNotFoundError):
            now, locked = os.stat(path), os.fstat(fd)
            if (now.st_dev, now.st_ino) == (locked.st_dev, locked.st_ino):
                held.append(fd)  # still the directory at `path`, not one swapped out
                return
        os.close(fd)
    raise OutputError(f"{out} changed while it was being locked; try again")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _carry_nested(old: Path, new: Path) -> None:
    """The analyses nested in `old` (every directory but figures/), as they are, into
    `new`: recovered first, their temporaries left out; files hard-linked."""
    if not old.is_dir():
        return
    for name in sorted({visible_name(p) for p in old.iterdir()} - {None}):
        recover(old / name)  # a nested analysis that a kill left set aside
    ignore = lambda folder, names: [n for n in names if store.is_temporary(Path(n))]
    for p in sorted(old.iterdir()):
        if p.is_dir() and not p.is_symlink() and p.name != FIGURES and not (
                store.is_temporary(p)):
            shutil.copytree(p, new / p.name, ignore=ignore, copy_function=_link_or_copy)


def _swap(out: Path, new: Path) -> None:
    """Steps 2-4 of the module docstring. A signal during 2-3 is taken after 3."""
    aside = None
    with interrupt.deferred(lambda text: None) as stop:
        try:
            if os.path.lexists(out):
                aside = _temporary(out)
                os.rename(out, aside)
            store.crash_point("swap")
            os.rename(new, out)
        except BaseException:  # a second Ctrl-C, a failed rename: the old one back
            if aside is not None and not os.path.lexists(out):
                os.rename(aside, out)
            raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    if stop.signum is not None:  # now that `out` is complete: as the handlers in place say
        signal.raise_signal(stop.signum)


def _make_parents(folder: Path) -> list[Path]:
    """Creates `folder` and its missing parents; returns those created, deepest first."""
    created = []
    for p in (folder, *folder.parents):
        if os.path.lexists(p):
            break
        created.append(p)
    folder.mkdir(parents=True, exist_ok=True)
    return created


@contextlib.contextmanager
def building(out: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty hidden directory beside `out` to write an analysis into; swaps it in
    for `out` when the block ends normally, removes it otherwise (module docstring).

    Raises OutputError, before anything is written, where `out` is a file or holds
    anything but an analysis, or another analysis holds it; OSError where the file
    system refuses.
    """
    real = Path(os.path.realpath(out))  # a link to the directory: its target is replaced
    _check(real)
    created = _make_parents(real.parent)
    locks: list[int] = []
    done = False
    try:
        _lock(real.parent, Path(out), locks)
        recover(real)  # under the parent's lock; it may bring `out` back
        _lock(real, Path(out), locks)
        _check(real)  # again, now that no other analysis can change it
        new = _temporary(real)
        new.mkdir()
        try:
            yield new
            _carry_nested(real, new)
            _swap(real, new)
            done = True
        finally:
            if os.path.lexists(new):
                shutil.rmtree(new, ignore_errors=True)
    finally:
        for fd in locks:
            os.close(fd)
        if not done:
            for p in created:  # deepest first; only while still empty
                with contextlib.suppress(OSError):
                    p.rmdir()
