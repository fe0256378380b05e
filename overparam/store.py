"""Results on disk: atomic, hashed writes, and `load`, which verifies what it reads.

Layout of one sweep (docs/DESIGN.md section 3):

  runs.parquet     one row per trained network
  steps/           Parquet dataset, one row per network x recorded step
  layers/          Parquet dataset, one row per network x recorded step x layer
  datasets/        one Parquet file per training set: dataset_id, index, x (list), y
  manifest.json    resolved config, versions, device, git commit, timings, status,
                   and `files`: every Parquet file above with its rows and SHA-256

Every file is written under a hidden temporary name in its final folder
(`.<name>.<8 hex>.overparam.tmp`) and renamed into place, so a reader
(pandas, pyarrow, DuckDB, polars) never sees a partial file: Parquet readers
skip names that start with '.' or '_'. `verify_complete`, the one verification
that both `load` and a rerun of a complete sweep run, refuses a directory whose
manifest has a field of the wrong type, value or name (`check_manifest`), that
holds a symbolic link or a special file (`check_tree`), whose files differ from
the manifest's list (one missing, extra, truncated or altered, or with another
row count than its entry), whose files' columns and types are not
`overparam.schema`'s, or that was written with another schema version. Owns the
bytes on disk and their verification; never decides what a table holds (that
is `records` and `schema`'s).

Nothing read from a results directory is trusted: every path it names is checked
against the names overparam writes (`check_name`, `DATASET_ID`) before a file is
opened, no symbolic link is followed, and nothing it names is imported
(`Results.initial_net` imports a flax module that overparam does not ship only
when its caller names it).

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
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import signal
import stat
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from overparam import config as config_lib
from overparam import schema

RUNS, STEPS, LAYERS, DATASETS, MANIFEST = (
    "runs.parquet", "steps", "layers", "datasets", "manifest.json")
TABLE_DIRS = (STEPS, LAYERS, DATASETS)  # folders of Parquet files listed in the manifest


def settings(grid_point: tuple[str, ...] = config_lib.GRID_POINT) -> tuple[str, ...]:
    """The runs' settings `Results.with_settings` joins to the steps and layers tables: a
    run's grid point (config.GRID_POINT: every swept field) with seed, d and lr_spec beside
    depth, n and lr, then the sweep's settings that tell runs apart, and their status."""
    beside = {"depth": ("seed",), "n": ("d",), "lr": ("lr_spec",)}
    return (*(c for k in grid_point for c in (k, *beside.get(k, ()))), "reduction", "momentum",
            "lr_scaling", "train_output", "center_output", "dataset_id", "status")


SETTINGS = settings()
_JOINED_AS = {"loss": "loss_fn"}  # settings joined under another name (steps has a loss)
TEMP_SUFFIX = ".overparam.tmp"
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")
STATUSES = ("running", "interrupted", "complete")  # a manifest's status
DATASET_ID = re.compile(r"[0-9a-f]{12}")  # the form of config.dataset_id's ids
SHA256 = re.compile(r"[0-9a-f]{64}")
# The relative path of every file a manifest lists (`part_name`'s parts, a dataset by id).
LISTED = re.compile(r"runs\.parquet|(steps|layers)/part-b\d{5,}-c\d{5,}\.parquet"
                    r"|datasets/[0-9a-f]{12}\.parquet")
# A run's arch as a manifest may hold it: overparam's own, or a module 'pkg.mod:Class'
# (never imported to check it).
_MODULE_ARCH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


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


@dataclasses.dataclass
class Results:
    """A loaded sweep: the tables as pandas DataFrames, and the manifest."""

    path: Path
    runs: pd.DataFrame
    steps: pd.DataFrame
    layers: pd.DataFrame
    manifest: dict
    partial: bool = False  # an unfinished sweep: the chunks written so far (`load`)

    def with_settings(self, table: str = "steps",
                      settings: tuple[str, ...] = SETTINGS) -> pd.DataFrame:
        """The steps or layers table with each run's settings joined (columns `settings`
        of runs.parquet, after run_id): one tidy frame to group and plot. The loss
        function (runs.loss) is joined as `loss_fn`, so that it never meets the steps'
        loss values."""
        if table not in (STEPS, LAYERS):
            raise ValueError(f"table must be {STEPS!r} or {LAYERS!r}, got {table!r}")
        frame = getattr(self, table)
        names = {s: _JOINED_AS.get(s, s) for s in settings}
        joined = self.runs[["run_id", *settings]].rename(columns=names)
        return frame.merge(joined, on="run_id", how="left", validate="many_to_one")[
            [*frame.columns[:1], *names.values(), *frame.columns[1:]]]

    def dataset(self, dataset_id: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """The exact (X (n, d), y (n,)) that runs with this dataset_id trained on, or with
        split='test' their held-out points (n_test, d), (n_test,)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not (isinstance(dataset_id, str) and DATASET_ID.fullmatch(dataset_id)):
            raise ResultsError(f"dataset_id {dataset_id!r} is not an overparam dataset id (12 "
                               f"hexadecimal digits): no file of {self.path / DATASETS} is "
                               "read for it")
        df = _read(inside(self.path, f"{DATASETS}/{dataset_id}.parquet"))
        df = df[df["split"] == split]
        d = len(df["x"].iloc[0]) if len(df) else int(self.manifest["config"]["d"])
        X = np.stack(df["x"].to_numpy()) if len(df) else np.zeros((0, d), df["y"].dtype)
        return X, df["y"].to_numpy()

    def initial_net(self, run_id: str, *, modules: Sequence[str] = ()):
        """The initial weights of run `run_id`, rebuilt bit-identically from its seed
        and key tags (the derivation is `config.Run`'s): a `model.Net` of NumPy arrays,
        for the mlp hidden (W_1(0) (m, d), ..., W_L(0) (m, m)) and out (a(0), (m,)); for
        another arch its measured layers' weights, its output layer's and the others
        (overparam/networks.py), as its network draws them.

        modules: the flax modules that this call may import, each an arch
        ('pkg.mod:Class') or a module ('pkg.mod'). A run whose arch is a module that
        overparam does not ship (`networks.shipped`: not mlp, cnn, resnet or
        overparam.modules) is rebuilt only when its module is named here: a results
        directory is data, and what it names is never imported on its say-so.

        Raises ResultsError for a run_id that is not in runs.parquet, or whose arch is
        a module not in `modules` (then nothing is imported).
        """
        import jax  # imported here: reading results needs no JAX

        from overparam import model, networks, train

        rows = self.runs[self.runs["run_id"] == run_id]
        if rows.empty:
            raise ResultsError(f"run_id {run_id!r} is not in {self.path / RUNS}")
        run = rows.iloc[0]
        arch, modules = run["arch"], (modules,) if isinstance(modules, str) else modules
        if not networks.shipped(arch) and not (
                arch in modules or str(arch).partition(":")[0] in modules):
            raise ResultsError(f"{self.path / RUNS}: run {run_id}'s arch {arch!r} is not a "
                               "network overparam ships; it is imported only when named: "
                               f"initial_net({run_id!r}, modules=[{arch!r}])")
        with jax.enable_x64(run["dtype"] == "float64"):
            tags = (np.uint32(run[k]) for k in ("seed", "init_tag", "batch_tag"))
            keys = train.derive_keys(train.Hyper(*tags, lr=np.float32(0),
                                                 output_scale=np.float32(1)))
            if run["arch"] == "mlp":
                net = jax.jit(model.init_from_keys, static_argnames=(
                    "d", "width", "depth", "param", "dtype"))(
                    keys.hidden, keys.out, d=int(run["d"]), width=int(run["width"]),
                    depth=int(run["depth"]), param=run["param"], dtype=run["dtype"])
            else:
                network = networks.network_of(
                    run["arch"], run["param"], int(run["width"]), int(run["depth"]),
                    int(run["d"]), run["dtype"], run["precision"])
                X = np.zeros((1, int(run["d"])), run["dtype"])
                net = jax.jit(network.init)(keys.hidden, keys.out, X)
            return jax.tree_util.tree_map(np.asarray, net)


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
    _check_contents(path, manifest, manifest["files"])
    _check_dataset_ids(path, manifest["files"])


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types; each becomes one line
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ResultsError(f"{path} is corrupted or unreadable: {reason}") from None


def _check_contents(path: Path, manifest: dict, files: list[str] | dict[str, dict]) -> None:
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
        why = schema.check(rel.split("/")[0], found, dtype, d=d)
        if why:
            raise ResultsError(f"{path / rel} {why} (overparam.schema); recompute the sweep "
                               "with --overwrite")
        if isinstance(files, dict) and meta.num_rows != files[rel]["rows"]:
            raise ResultsError(f"{path / rel} has {meta.num_rows} rows where {MANIFEST} lists "
                               f"{files[rel]['rows']} (files[{rel!r}].rows); recompute the "
                               "sweep with --overwrite")


def _check_dataset_ids(path: Path, files: dict | None) -> None:
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


_KEYS = {RUNS: None, STEPS: ["run_id", "step"], LAYERS: ["run_id", "step", "layer"]}


def load(path: str | os.PathLike, *, partial: bool = False) -> Results:
    """Reads a results directory written by `overparam.sweep`, after verifying it.

    partial: also read an unfinished sweep (running or interrupted): runs.parquet as
    it stands (status 'running' for the runs of batches not finished) and every
    chunk whose steps/ and layers/ parts are both written; `Results.partial` says so.
    Such a sweep has no final list of hashes yet, so only its manifest's fields
    (`check_manifest`) and its files' names and schemas are checked. A complete sweep
    is read whole either way, after `verify_complete` (the check a rerun of its sweep
    makes too).

    Raises ResultsError (one line) and nothing else for a missing, foreign,
    unfinished (without `partial`) or damaged directory: a manifest field of the wrong
    type, value or name, a symbolic link or special file in the directory, a file
    missing, extra, truncated or altered against the manifest's list of files and
    hashes, a file whose columns, types or row count are not the schema's and the
    manifest's, or a schema version other than `schema.VERSION` (results of an older
    overparam: recompute them).
    """
    path = Path(path)
    manifest = read_manifest(path)
    if manifest["status"] != "complete":
        if not partial:
            raise ResultsError(f"{path} holds an unfinished sweep (status "
                               f"{manifest['status']!r}); run the same command again to "
                               "finish it (or load it with partial=True)")
        check_manifest(path, manifest)
        return _load_partial(path, manifest)
    verify_complete(path, manifest)
    tables = {}
    for name, keys in _KEYS.items():
        df = _read(path / name)
        tables[name] = df.sort_values(keys, ignore_index=True) if keys else df
    return Results(path=path, runs=tables[RUNS], steps=tables[STEPS], layers=tables[LAYERS],
                   manifest=manifest)


def _load_partial(path: Path, manifest: dict) -> Results:
    """The chunks of an unfinished sweep written so far (see `load`)."""
    if not (path / RUNS).is_file():
        raise ResultsError(f"{path} holds a sweep that has written no results yet (no "
                           f"{RUNS}); try again once it has started training")
    names = {}
    for table in (STEPS, LAYERS):
        folder = path / table
        names[table] = {p.name for p in folder.iterdir()
                        if not p.name.startswith((".", "_"))} if folder.is_dir() else set()
        for name in sorted(names[table]):
            if check_name(f"{table}/{name}") or not (folder / name).is_file():
                raise ResultsError(f"{folder / name} was not written by overparam (not a "
                                   "part); move it out of the directory")
    parts = sorted(names[STEPS] & names[LAYERS])  # chunks with both parts written
    files = [RUNS, *(f"{t}/{n}" for t in (STEPS, LAYERS) for n in parts)]
    _check_contents(path, manifest, files)
    _check_dataset_ids(path, None)
    dtype = manifest["config"]["dtype"]
    tables = {}
    for name, keys in _KEYS.items():
        if name == RUNS:
            tables[name] = _read(path / RUNS)
            continue
        try:
            arrow = [pq.read_table(path / name / n) for n in parts]
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types; each becomes one line
            raise ResultsError(f"{path / name} is corrupted or unreadable: "
                               f"{type(e).__name__}") from None
        table = (pa.concat_tables(arrow) if arrow else
                 schema.schema_of(name, dtype).empty_table())
        tables[name] = table.to_pandas().sort_values(keys, ignore_index=True)
    return Results(path=path, runs=tables[RUNS], steps=tables[STEPS], layers=tables[LAYERS],
                   manifest=manifest, partial=True)
