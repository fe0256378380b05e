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
skip names that start with '.' or '_'. `load` refuses a directory whose
files differ from the manifest's list (one missing, extra, truncated or
altered), whose files' columns and types are not `overparam.schema`'s, or
that was written with another schema version. Owns the bytes on disk and
their verification; never decides what a table holds (that is `records` and
`schema`'s).

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
import os
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from overparam import schema

RUNS, STEPS, LAYERS, DATASETS, MANIFEST = (
    "runs.parquet", "steps", "layers", "datasets", "manifest.json")
TABLE_DIRS = (STEPS, LAYERS, DATASETS)  # folders of Parquet files listed in the manifest
# The runs' settings `Results.with_settings` joins to the steps and layers tables.
SETTINGS = ("width", "depth", "seed", "n", "d", "loss", "optimizer", "lr", "lr_spec",
            "batch_size", "arch", "param", "output_scale", "digits_task", "reduction", "momentum",
            "lr_scaling", "train_output", "center_output", "dataset_id", "status")
_JOINED_AS = {"loss": "loss_fn"}  # settings joined under another name (steps has a loss)
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
        df = _read(self.path / DATASETS / f"{dataset_id}.parquet")
        df = df[df["split"] == split]
        d = len(df["x"].iloc[0]) if len(df) else int(self.manifest["config"]["d"])
        X = np.stack(df["x"].to_numpy()) if len(df) else np.zeros((0, d), df["y"].dtype)
        return X, df["y"].to_numpy()

    def initial_net(self, run_id: str):
        """The initial weights of run `run_id`, rebuilt bit-identically from its seed
        and key tags (the derivation is `config.Run`'s): a `model.Net` of NumPy arrays,
        for the mlp hidden (W_1(0) (m, d), ..., W_L(0) (m, m)) and out (a(0), (m,)); for
        another arch its measured layers' weights, its output layer's and the others
        (overparam/networks.py), as its network draws them.

        Raises ResultsError for a run_id that is not in runs.parquet.
        """
        import jax  # imported here: reading results needs no JAX

        from overparam import model, networks, train

        rows = self.runs[self.runs["run_id"] == run_id]
        if rows.empty:
            raise ResultsError(f"run_id {run_id!r} is not in {self.path / RUNS}")
        run = rows.iloc[0]
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


def read_manifest(path: Path) -> dict:
    """The manifest of results directory `path`; ResultsError if absent or unreadable."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise ResultsError(f"{path} is not an overparam results directory (no {MANIFEST})")
    try:
        manifest = json.loads(file.read_text())
        if not isinstance(manifest.get("config"), dict) or "status" not in manifest:
            raise KeyError("config/status")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ResultsError(f"{file} is corrupted ({type(e).__name__})") from None
    return manifest


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
    content hash differs (truncated, altered).
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
            same = sha256(path / rel) == files[rel]["sha256"]
        except (OSError, KeyError, TypeError) as e:
            raise ResultsError(f"{path / rel} cannot be checked ({type(e).__name__})") from None
        if not same:
            raise ResultsError(f"{path / rel} is altered or truncated (its SHA-256 differs from "
                               f"the one in {MANIFEST}){redo}")


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types; each becomes one line
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ResultsError(f"{path} is corrupted or unreadable: {reason}") from None


def _check_schemas(path: Path, manifest: dict, files) -> None:
    """Raises ResultsError naming the first of `files` (relative paths) whose columns or
    types are not the schema's (overparam.schema)."""
    dtype, d = manifest["config"].get("dtype", "float32"), manifest["config"].get("d")
    for rel in sorted(files):
        try:
            found = pq.read_schema(path / rel)
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types; each becomes one line
            raise ResultsError(f"{path / rel} is corrupted or unreadable: "
                               f"{type(e).__name__}") from None
        why = schema.check(rel.split("/")[0], found, dtype, d=d)
        if why:
            raise ResultsError(f"{path / rel} {why} (overparam.schema); recompute the sweep "
                               "with --overwrite")


def _check_version(path: Path, manifest: dict) -> None:
    version = manifest.get("schema_version", 1)  # 1: written before it was recorded
    if type(version) is not int or version != schema.VERSION:
        by = ("an older" if type(version) is int and version < schema.VERSION else
              "a newer" if type(version) is int else "an unknown")
        raise ResultsError(f"{path} was written with results schema version {version!r} (by "
                           f"{by} overparam); this overparam reads version {schema.VERSION}: "
                           "recompute the sweep with --overwrite")


_KEYS = {RUNS: None, STEPS: ["run_id", "step"], LAYERS: ["run_id", "step", "layer"]}


def load(path: str | os.PathLike, *, partial: bool = False) -> Results:
    """Reads a results directory written by `overparam.sweep`, after verifying it.

    partial: also read an unfinished sweep (running or interrupted): runs.parquet as
    it stands (status 'running' for the runs of batches not finished) and every
    chunk whose steps/ and layers/ parts are both written; `Results.partial` says so.
    Such a sweep has no final list of hashes yet, so only its files' schemas are
    checked. A complete sweep is read whole either way.

    Raises ResultsError (one line) and nothing else for a missing, foreign,
    unfinished (without `partial`) or damaged directory: a file missing, extra,
    truncated or altered against the manifest's list of files and hashes, a file
    whose columns or types are not the schema's, or a schema version other than
    `schema.VERSION` (results of an older overparam: recompute them).
    """
    path = Path(path)
    manifest = read_manifest(path)
    complete = manifest["status"] == "complete"
    if not complete and not partial:
        raise ResultsError(f"{path} holds an unfinished sweep (status "
                           f"{manifest['status']!r}); run the same command again to finish it "
                           "(or load it with partial=True)")
    _check_version(path, manifest)
    if not complete:
        return _load_partial(path, manifest)
    verify(path, manifest.get("files"))
    _check_schemas(path, manifest, manifest["files"])
    tables = {}
    for name, keys in _KEYS.items():
        df = _read(path / name)
        rows = sum(e["rows"] for rel, e in manifest["files"].items()
                   if rel == name or rel.startswith(name + "/"))
        if len(df) != rows:
            raise ResultsError(f"{path / name} has {len(df)} rows where the manifest lists "
                               f"{rows}")
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
    parts = sorted(names[STEPS] & names[LAYERS])  # chunks with both parts written
    files = [RUNS, *(f"{t}/{n}" for t in (STEPS, LAYERS) for n in parts)]
    _check_schemas(path, manifest, files)
    dtype = manifest["config"].get("dtype", "float32")
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
