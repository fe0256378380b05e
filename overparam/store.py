"""Results on disk: atomic Parquet and JSON writes, and `load`.

Layout of one sweep (DESIGN.md section 3):

  runs.parquet     one row per trained network
  steps/           Parquet dataset, one row per network x recorded step
  layers/          Parquet dataset, one row per network x recorded step x layer
  datasets/        one Parquet file per training set: dataset_id, index, x (list), y
  manifest.json    resolved config, versions, device, git commit, timings, status

Every file is written under a hidden temporary name in its final folder and
renamed into place, so a reader (pandas, pyarrow, DuckDB, polars) never sees
a partial file: Parquet readers skip names that start with '.' or '_'.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

RUNS, STEPS, LAYERS, DATASETS, MANIFEST = (
    "runs.parquet", "steps", "layers", "datasets", "manifest.json")


def atomic_write(path: Path, write) -> None:
    """Calls write(tmp) on a hidden temporary file beside `path`, then renames it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        crash_point("write")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def crash_point(name: str) -> None:
    """Test hook: OVERPARAM_CRASH_AT='name:k' kills the process (SIGKILL) the k-th time."""
    spec = os.environ.get("OVERPARAM_CRASH_AT", "")
    if not spec.startswith(name + ":"):
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == int(spec.split(":")[1]):
        os.kill(os.getpid(), signal.SIGKILL)


_crash_counts: dict[str, int] = {}


def write_parquet(table: pa.Table | pd.DataFrame, path: Path) -> None:
    """Writes `table` to `path` atomically."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp))


def write_json(obj: Any, path: Path) -> None:
    """Writes `obj` as indented JSON to `path` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text + "\n"))


def part_name(batch: int, chunk: int) -> str:
    return f"part-b{batch:05d}-c{chunk:05d}.parquet"


def dataset_table(dataset_id: str, X: np.ndarray, y: np.ndarray) -> pa.Table:
    """X: (n, d), y: (n,) -> one row per point, x as a fixed-size list."""
    n, d = X.shape
    x = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), d)
    return pa.table({"dataset_id": [dataset_id] * n, "index": np.arange(n), "x": x, "y": y})


@dataclasses.dataclass
class Results:
    """A loaded sweep: the tables as pandas DataFrames, and the manifest."""

    path: Path
    runs: pd.DataFrame
    steps: pd.DataFrame
    layers: pd.DataFrame
    manifest: dict

    def dataset(self, dataset_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The exact (X (n, d), y (n,)) that runs with this dataset_id trained on."""
        df = pd.read_parquet(self.path / DATASETS / f"{dataset_id}.parquet")
        return np.stack(df["x"].to_numpy()), df["y"].to_numpy()


class ResultsError(ValueError):
    """A directory that is not a readable overparam results directory."""


def load(path: str | os.PathLike) -> Results:
    """Reads a results directory written by `overparam.sweep`.

    Raises ResultsError (one line) for a missing, foreign or corrupted directory.
    """
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise ResultsError(f"{path} is not an overparam results directory (no {MANIFEST})")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        status = manifest["status"]
    except (ValueError, KeyError, TypeError) as e:
        raise ResultsError(f"{path / MANIFEST} is corrupted ({type(e).__name__})") from None
    if status != "complete" or not (path / RUNS).is_file():
        raise ResultsError(f"{path} holds an unfinished sweep (status {status!r}); run the "
                           "same command again to finish it")

    def table(name, keys):
        try:
            df = pd.read_parquet(path / name)
        except (OSError, ValueError, pa.ArrowException) as e:
            reason = (str(e).splitlines() or [type(e).__name__])[0]
            raise ResultsError(f"{path / name} is corrupted or unreadable: {reason}") from None
        return df.sort_values(keys, ignore_index=True) if keys else df

    return Results(path=path, runs=table(RUNS, None),
                   steps=table(STEPS, ["run_id", "step"]),
                   layers=table(LAYERS, ["run_id", "step", "layer"]),
                   manifest=manifest)
