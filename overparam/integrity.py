"""Verified reading: the checks of a results directory before anything is read from it.

`verify_complete`, the one verification that both `store.load` and a rerun of a
complete sweep run, refuses a directory whose manifest has a field of the wrong
type, value or name (`check_manifest`), that holds a symbolic link or a special
file (`check_tree`), whose files differ from the manifest's list (one missing,
extra, truncated or altered, or with another row count than its entry), whose
files' columns and types are not `overparam.schema`'s, or that was written with
another schema version. Every failure is a `ResultsError`, one line naming the
file (and the manifest's field).

Nothing read from a results directory is trusted: every path it names is
checked against the names overparam writes (`check_name`, `DATASET_ID`) before a
file is opened (`inside`), and no symbolic link is followed.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from overparam import config as config_lib
from overparam import schema
from overparam.writes import DATASETS, MANIFEST, RUNS, TABLE_DIRS, sha256

STATUSES = ("running", "interrupted", "complete")  # a manifest's status
DATASET_ID = re.compile(r"[0-9a-f]{12}")  # the form of config.dataset_id's ids
SHA256 = re.compile(r"[0-9a-f]{64}")
# The relative path of every file a manifest lists (`part_name`'s parts, a dataset by id).
LISTED = re.compile(r"runs\.parquet|(steps|layers)/part-b\d{5,}-c\d{5,}\.parquet"
                    r"|datasets/[0-9a-f]{12}\.parquet")
# A run's arch as a manifest may hold it: overparam's own, or a module 'pkg.mod:Class'
# (never imported to check it).
_MODULE_ARCH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


class ResultsError(ValueError):
    """A directory that is not a readable overparam results directory; str(err) is one line."""


_MISSING = object()


def _field_error(file: Path, field: str, value: Any, why: str) -> ResultsError:
    """'<file>: <field>: missing' or '<file>: <field>: <why>, got <value>' (one line)."""
    got = "missing" if value is _MISSING else f"{why}, got {_short(value)}"
    return ResultsError(f"{file}: {field}: {got}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _count(value: Any, low: int = 0) -> bool:
    """Whether `value` is an integer >= low (a bool is not)."""
    return type(value) is int and value >= low


def read_manifest(path: Path) -> dict:
    """The manifest of results directory `path`: a JSON object whose status is one of
    STATUSES and whose config is an object (what it takes to know the directory's state;
    `check_manifest` checks the rest). ResultsError if absent, a link, or unreadable."""
    file = Path(path) / MANIFEST
    if file.is_symlink():
        raise ResultsError(_link(file))
    if not file.is_file():
        raise ResultsError(f"{path} is not an overparam results directory (no {MANIFEST})")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise ResultsError(f"{file} is corrupted ({type(e).__name__})") from None
    if not isinstance(manifest, dict):
        raise ResultsError(f"{file} is corrupted (not a JSON object)")
    status = manifest.get("status", _MISSING)
    if not (isinstance(status, str) and status in STATUSES):
        raise _field_error(file, "status", status, f"must be one of {', '.join(STATUSES)}")
    config = manifest.get("config", _MISSING)
    if not isinstance(config, dict):
        raise _field_error(file, "config", config, "must be an object (the sweep's fields)")
    return manifest


def _link(path: Path) -> str:
    return (f"{path} is a symbolic link; a results directory holds none (overparam never "
            "follows one out of it): replace it with what it points to")


def check_tree(path: Path) -> None:
    """Raises ResultsError naming the first entry under `path` that is a symbolic link, or
    neither a directory nor a regular file (a FIFO, a socket, a device): overparam writes
    neither, and reading or writing through one would leave the directory. `path` itself
    may be a link (the user named it)."""
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(dirs + names):
            entry = Path(root) / name
            try:
                mode = os.lstat(entry).st_mode
            except FileNotFoundError:
                continue  # gone meanwhile: a running sweep's temporary file
            if stat.S_ISLNK(mode):
                raise ResultsError(_link(entry))
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise ResultsError(f"{entry} is not a regular file; a results directory "
                                   "holds only files and folders: move it out")


def inside(root: Path, rel: str) -> Path:
    """root / rel, once checked to stay in `root`: rel relative, without '..', and none of
    its components a symbolic link (ResultsError otherwise). The file need not exist."""
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise ResultsError(f"{rel!r} is not a path inside {root}; no file is read for it")
    path = Path(root)
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise ResultsError(_link(path))
    return path


def check_name(rel: Any) -> str | None:
    """Why `rel` is not the relative path of a file a manifest lists (LISTED: runs.parquet,
    a part of steps/ or layers/, a dataset by its id), or None if it is."""
    if isinstance(rel, str) and LISTED.fullmatch(rel):
        return None
    return ("not a file overparam writes (runs.parquet, steps/ or layers/"
            "part-b<batch>-c<chunk>.parquet, datasets/<12 hex digits>.parquet)")


def check_files(file: Path, files: Any, field: str = "files") -> None:
    """Checks a list of files as a manifest (or a checkpoint, field 'parts') holds it:
    {LISTED path: {'rows': integer >= 0, 'sha256': 64 lowercase hex digits}}. Raises
    ResultsError '<file>: <field>[<path>].<key>: <why>'."""
    if not isinstance(files, dict):
        raise _field_error(file, field, files, "must be an object {path: {rows, sha256}}")
    for rel, entry in files.items():
        where = f"{field}[{_short(rel)}]"
        why = check_name(rel)
        if why:
            raise ResultsError(f"{file}: {where}: {why}")
        if not isinstance(entry, dict):
            raise _field_error(file, where, entry, "must be an object {rows, sha256}")
        extra = sorted(set(entry) - {"rows", "sha256"})
        if extra:
            raise ResultsError(f"{file}: {where}.{_short(extra[0])}: not a field of a file's "
                               "entry (rows, sha256)")
        rows, digest = entry.get("rows", _MISSING), entry.get("sha256", _MISSING)
        if not _count(rows):
            raise _field_error(file, f"{where}.rows", rows, "must be an integer >= 0")
        if not (isinstance(digest, str) and SHA256.fullmatch(digest)):
            raise _field_error(file, f"{where}.sha256", digest,
                               "must be 64 lowercase hexadecimal digits")


def _check_arch(field: str, value: Any) -> str:
    """config's check of an arch, but by its form only: a manifest's arch is never
    imported to check it."""
    if (isinstance(value, str) and value in config_lib.ARCHS) or (
            isinstance(value, str) and _MODULE_ARCH.fullmatch(value)):
        return value
    raise config_lib.ConfigError(field, f"unknown value {_short(value)}; allowed: "
                                 f"{', '.join(config_lib.ARCHS)}, or a flax module "
                                 "'pkg.mod:Class'")


def _check_config(file: Path, config: dict) -> None:
    """Every field of a Sweep, and no other, each as `config`'s own check of it allows
    (swept fields: a non-empty list of such values)."""
    unknown = sorted(set(config) - set(config_lib.DEFAULTS))
    if unknown:
        raise ResultsError(f"{file}: config.{unknown[0]}: not a field of overparam's sweeps")
    for f in config_lib.FIELDS:
        value = config.get(f.name, _MISSING)
        if value is _MISSING:
            raise _field_error(file, f"config.{f.name}", value, "")
        check = _check_arch if f.name == "arch" else f.metadata["check"]
        try:
            if not f.metadata["swept"]:
                check(f.name, value)
            elif not (isinstance(value, list) and value):
                raise config_lib.ConfigError(f.name, f"must be a non-empty list, got "
                                             f"{_short(value)}")
            else:
                for v in value:
                    check(f.name, v)
        except config_lib.ConfigError as e:
            raise ResultsError(f"{file}: {e}") from None


def _check_version(file: Path, manifest: dict) -> None:
    version = manifest.get("schema_version", 1)  # 1: written before it was recorded
    if type(version) is not int or version != schema.VERSION:
        by = ("an older" if type(version) is int and version < schema.VERSION else
              "a newer" if type(version) is int else "an unknown")
        raise ResultsError(f"{file}: schema_version: results schema version {_short(version)} "
                           f"(written by {by} overparam); this overparam reads version "
                           f"{schema.VERSION}: recompute the sweep with --overwrite")


def _check_plan(file: Path, manifest: dict) -> None:
    """The plan a resumed sweep reuses (prepare.plan_of_manifest), and its resume count."""
    budget = manifest.get("memory_budget_mb", _MISSING)
    if not (type(budget) in (int, float) and math.isfinite(budget) and budget > 0):
        raise _field_error(file, "memory_budget_mb", budget, "must be a number > 0 (MiB)")
    multiple = manifest.get("batch_multiple_of", _MISSING)
    if not _count(multiple, 1):
        raise _field_error(file, "batch_multiple_of", multiple, "must be an integer >= 1")
    groups = manifest.get("groups", _MISSING)
    if not isinstance(groups, list):
        raise _field_error(file, "groups", groups, "must be a list of {size, memory_bytes, "
                           "measured}")
    for i, group in enumerate(groups):
        if not isinstance(group, dict):
            raise _field_error(file, f"groups[{i}]", group, "must be an object {size, "
                               "memory_bytes, measured}")
        for key, ok, what in (("size", lambda v: _count(v, 1), "an integer >= 1"),
                              ("memory_bytes", _count, "an integer >= 0"),
                              ("measured", lambda v: type(v) is bool, "true or false")):
            value = group.get(key, _MISSING)
            if value is _MISSING or not ok(value):
                raise _field_error(file, f"groups[{i}].{key}", value, f"must be {what}")
    resumed = manifest.get("resumed", 0)
    if not _count(resumed):
        raise _field_error(file, "resumed", resumed, "must be an integer >= 0")


def check_manifest(path: Path, manifest: dict) -> None:
    """Checks every field of `manifest` (as `read_manifest` returns it) that overparam
    reads, and that the directory holds no link or special file (`check_tree`):

      schema_version  schema.VERSION (absent: 1, an older overparam's)
      config          every field of a Sweep and no other, each as config's check of it
                      allows (arch: by its form; it is never imported)
      num_runs        an integer >= 0
      files           {LISTED path: {rows: integer >= 0, sha256: 64 hex digits}}
                      (`check_files`); required once complete, with runs.parquet, whose
                      rows are num_runs
      memory_budget_mb, batch_multiple_of, groups, resumed (an unfinished sweep): the
                      plan its resume reuses, `_check_plan`

    Raises ResultsError, one line: '<dir>/manifest.json: <field>: <why>, got <value>'.
    """
    path = Path(path)
    file = path / MANIFEST
    _check_version(file, manifest)
    check_tree(path)
    _check_config(file, manifest["config"])
    num_runs = manifest.get("num_runs", _MISSING)
    if not _count(num_runs):
        raise _field_error(file, "num_runs", num_runs, "must be an integer >= 0")
    files = manifest.get("files", _MISSING)
    if manifest["status"] != "complete":
        if files is not _MISSING:
            check_files(file, files)
        _check_plan(file, manifest)
        return
    if files is _MISSING:
        raise ResultsError(f"{file}: files: missing, so nothing can be verified (written by "
                           "an older overparam); recompute the sweep with --overwrite")
    check_files(file, files)
    if RUNS not in files:
        raise ResultsError(f"{file}: files: lists no {RUNS}")
    if files[RUNS]["rows"] != num_runs:
        raise ResultsError(f"{file}: files[{RUNS!r}].rows: {files[RUNS]['rows']} rows, where "
                           f"num_runs is {num_runs}")


def visible_files(path: Path) -> list[str]:
    """The files a Parquet reader takes as tables of `path` (relative paths, sorted):
    runs.parquet and every file of steps/, layers/ and datasets/ not hidden by '.' or '_'."""
    found = [RUNS] if (path / RUNS).exists() else []
    for folder in TABLE_DIRS:
        if (path / folder).is_dir():
            found += [f"{folder}/{p.name}" for p in (path / folder).iterdir()
                      if not p.name.startswith((".", "_"))]
    return sorted(found)


def verify(path: Path, files: dict[str, dict] | None) -> None:
    """Checks that `path` holds exactly the files of the manifest's list, unaltered.

    files: {relative path: {'rows', 'sha256'}}. Raises ResultsError naming the
    first file that is missing, extra (not written by the sweep), or whose
    content hash differs (truncated, altered). Part of `verify_complete`.
    """
    path = Path(path)
    if not isinstance(files, dict):
        raise ResultsError(f"{path / MANIFEST} lists no files to verify (written by an older "
                           "overparam); recompute the sweep with --overwrite")
    redo = "; recompute the sweep with --overwrite"
    on_disk = set(visible_files(path))
    missing = sorted(set(files) - on_disk)
    if missing:
        raise ResultsError(f"{path / missing[0]} is missing ({len(missing)} of the sweep's "
                           f"files are){redo}")
    extra = sorted(on_disk - set(files))
    if extra:
        more = f", and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise ResultsError(f"{path / extra[0]} was not written by this sweep (not in "
                           f"{MANIFEST}{more}); move it out of the directory")
    for rel in sorted(files):
        try:
            same = sha256(inside(path, rel)) == files[rel]["sha256"]
        except (OSError, KeyError, TypeError) as e:
            raise ResultsError(f"{path / rel} cannot be checked ({type(e).__name__})") from None
        if not same:
            raise ResultsError(f"{path / rel} is altered or truncated (its SHA-256 differs from "
                               f"the one in {MANIFEST}){redo}")


def verify_complete(path: Path, manifest: dict) -> None:
    """The one verification of a complete sweep: `load` runs it before it reads the
    tables, and a rerun of the sweep's command (engine.run_sweep) before it says
    "complete and verified", so the two cannot disagree. In turn: the manifest's fields
    and the directory's entries (`check_manifest`), the list of files against the
    directory (`verify`: none missing or extra, every SHA-256), every file's columns and
    types (overparam.schema) and row count (its Parquet footer's) against its entry, and
    runs.parquet's dataset ids (each a dataset the manifest lists).

    Raises ResultsError, one line naming the file (and the manifest's field).
    """
    path = Path(path)
    check_manifest(path, manifest)
    if manifest["status"] != "complete":
        raise ResultsError(f"{path / MANIFEST}: status: {manifest['status']!r}, not 'complete'")
    verify(path, manifest["files"])
    check_contents(path, manifest, manifest["files"])
    check_dataset_ids(path, manifest["files"])


def read_table(path: Path) -> pd.DataFrame:
    """The Parquet file `path` as a DataFrame (ResultsError, one line, if unreadable)."""
    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types; each becomes one line
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ResultsError(f"{path} is corrupted or unreadable: {reason}") from None


def check_contents(path: Path, manifest: dict, files: list[str] | dict[str, dict]) -> None:
    """Raises ResultsError naming the first of `files` (relative paths, checked names)
    whose columns or types are not the schema's (overparam.schema) or, where `files` gives
    their entries, whose row count is not its entry's."""
    dtype, d = manifest["config"]["dtype"], manifest["config"]["d"]
    for rel in sorted(files):
        try:
            meta = pq.read_metadata(inside(path, rel))
            found = meta.schema.to_arrow_schema()
        except ResultsError:
            raise
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types; each becomes one line
            raise ResultsError(f"{path / rel} is corrupted or unreadable: "
                               f"{type(e).__name__}") from None
        table = rel.split("/")[0]
        why = schema.check(table, found, dtype, d=d,
                           extra=schema.optional(table, manifest["config"]))
        if why:
            raise ResultsError(f"{path / rel} {why} (overparam.schema); recompute the sweep "
                               "with --overwrite")
        if isinstance(files, dict) and meta.num_rows != files[rel]["rows"]:
            raise ResultsError(f"{path / rel} has {meta.num_rows} rows where {MANIFEST} lists "
                               f"{files[rel]['rows']} (files[{rel!r}].rows); recompute the "
                               "sweep with --overwrite")


def check_dataset_ids(path: Path, files: dict | None) -> None:
    """Raises ResultsError unless every dataset_id of runs.parquet has DATASET_ID's form
    (a reader opens datasets/<dataset_id>.parquet) and, where `files` lists a complete
    sweep's files, is one of its datasets."""
    try:
        ids = pq.read_table(inside(path, RUNS), columns=["dataset_id"]).column(0)
    except ResultsError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types; each becomes one line
        raise ResultsError(f"{path / RUNS} is corrupted or unreadable: "
                           f"{type(e).__name__}") from None
    for did in ids.unique().to_pylist():
        if not (isinstance(did, str) and DATASET_ID.fullmatch(did)):
            raise ResultsError(f"{path / RUNS}: dataset_id {_short(did)} is not an overparam "
                               "dataset id (12 hexadecimal digits)")
        if files is not None and f"{DATASETS}/{did}.parquet" not in files:
            raise ResultsError(f"{path / RUNS}: dataset_id {did!r} is not a dataset of the "
                               f"sweep (no {DATASETS}/{did}.parquet in {MANIFEST})")
