"""The files of a results directory: their names, and how each is written.

Owns the layout's names (RUNS, STEPS, LAYERS, DATASETS, MANIFEST, `part_name`),
atomic writes (`atomic_write`: every file is written under a hidden temporary
name in its final folder, `.<name>.<8 hex>.overparam.tmp`, and renamed into
place, so a reader never sees a partial file: Parquet readers skip names that
start with '.' or '_'), the hashed Parquet and JSON writes built on it
(`write_parquet`, `write_parquet_if_changed`, `write_json`, `FileEntry`), and the
test hooks that kill, hang or fail a process at a named point.

Test hooks (environment variables, read at each point):
  OVERPARAM_CRASH_AT=name:k   the k-th time the process reaches crash point
                              `name` ('write': every atomic write, after the
                              temporary file is complete and before it is
                              renamed; 'chunk': after a chunk's parts, before
                              its checkpoint; 'compile', 'import'), it kills
                              itself with SIGKILL, or with the signal named by
                              OVERPARAM_CRASH_SIGNAL (e.g. SIGTERM)
  OVERPARAM_HANG_AT=name:k    the k-th time, the thread at crash point `name`
                              blocks for good (after CRASH_AT's signal, if both
                              name it): a write or a device that never returns
  OVERPARAM_CRASH_LOG=path    every crash point appends its name to `path`
                              (a clean run counts the points a test can kill at)
  OVERPARAM_FAIL_AT=write:k   the k-th atomic write fails as a full disk would
                              (OSError ENOSPC)

Imports nothing of overparam (`store` re-exports its names for the callers).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

RUNS, STEPS, LAYERS, DATASETS, MANIFEST = (
    "runs.parquet", "steps", "layers", "datasets", "manifest.json")
TABLE_DIRS = (STEPS, LAYERS, DATASETS)  # folders of Parquet files listed in the manifest
TEMP_SUFFIX = ".overparam.tmp"
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")


class WriteError(OSError):
    """A file of the results directory could not be written; str(err) is one line
    naming the path (a full disk, a read-only file system...)."""

    def __init__(self, path: Path, error: OSError):
        reason = error.strerror or str(error) or type(error).__name__
        super().__init__(error.errno, f"cannot write {path}: {reason}")
        self.path = path


def is_temporary(path: Path) -> bool:
    """True for the temporary files of `atomic_write` (what a crash leaves behind)."""
    return bool(_TEMP_NAME.match(path.name))


def atomic_write(path: Path, write) -> None:
    """Calls write(tmp) on a hidden temporary file beside `path`, then renames it to `path`.

    Raises WriteError (naming `path`) where the file system refuses.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _fail_point("write")
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        crash_point("write")
        os.replace(tmp, path)
    except OSError as e:
        raise (e if isinstance(e, WriteError) else WriteError(path, e)) from None
    finally:
        tmp.unlink(missing_ok=True)


_crash_counts: dict[str, int] = {}


def _hook_hit(variable: str, name: str) -> bool:
    """True the k-th time `name` is reached, where os.environ[variable] == 'name:k'."""
    spec = os.environ.get(variable, "")
    if not spec.startswith(name + ":"):
        return False
    key = (variable, name)
    _crash_counts[key] = _crash_counts.get(key, 0) + 1
    return _crash_counts[key] == int(spec.split(":")[1])


def crash_point(name: str) -> None:
    """Test hook: see the module docstring (OVERPARAM_CRASH_AT, _SIGNAL, _LOG)."""
    log = os.environ.get("OVERPARAM_CRASH_LOG")
    if log:
        with open(log, "a") as f:
            f.write(name + "\n")
    if _hook_hit("OVERPARAM_CRASH_AT", name):
        sig = os.environ.get("OVERPARAM_CRASH_SIGNAL", "SIGKILL")
        os.kill(os.getpid(), signal.Signals[sig])
    if _hook_hit("OVERPARAM_HANG_AT", name):
        os.read(os.pipe()[0], 1)  # blocks this thread for good, as a device that never answers


def _fail_point(name: str) -> None:
    if _hook_hit("OVERPARAM_FAIL_AT", name):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """What the manifest records of a written file: its rows and content hash."""

    rows: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_parquet(table: pa.Table | pd.DataFrame, path: Path) -> FileEntry:
    """Writes `table` to `path` atomically; returns its rows and hash."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    digest = []
    def write(tmp):
        pq.write_table(table, tmp)
        digest.append(sha256(tmp))

    atomic_write(Path(path), write)
    return FileEntry(rows=table.num_rows, sha256=digest[0])


def write_parquet_if_changed(table: pa.Table, path: Path) -> FileEntry:
    """`write_parquet`, unless `path` already holds exactly the bytes it would write (a
    rerun, or a table that has not changed): then nothing is written."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    entry = FileEntry(rows=table.num_rows, sha256=hashlib.sha256(sink.getvalue()).hexdigest())
    if Path(path).is_file() and sha256(path) == entry.sha256:
        return entry
    return write_parquet(table, path)


def write_json(obj: Any, path: Path) -> None:
    """Writes `obj` as indented JSON to `path` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text + "\n"))


def part_name(batch: int, chunk: int) -> str:
    return f"part-b{batch:05d}-c{chunk:05d}.parquet"
