"""Results on disk: `load`, which verifies what it reads, and `Results`.

Layout of one sweep (docs/DESIGN.md section 3):

  runs.parquet     one row per trained network
  steps/           Parquet dataset, one row per network x recorded step
  layers/          Parquet dataset, one row per network x recorded step x layer
  datasets/        one Parquet file per training set: dataset_id, index, x (list), y
  manifest.json    resolved config, versions, device, git commit, timings, status,
                   and `files`: every Parquet file above with its rows and SHA-256

Owns reading a results directory: `load` (a complete sweep after
`integrity.verify_complete`, an unfinished one as far as it is written) and
`Results` (the tables, the settings joined, a dataset, a run's initial weights).
How each file is written is `overparam.writes`' (atomic hashed writes, the
crash hooks); how a directory is verified is `overparam.integrity`'s; store
re-exports their public names, so that `store.X` is the one door to the bytes on
disk. Never decides what a table holds (that is `records` and `schema`'s).

Nothing read from a results directory is trusted (overparam.integrity), and
nothing it names is imported: `Results.initial_net` imports a flax module that
overparam does not ship only when its caller names it. It imports
`overparam.initial` (the programs' side: JAX) when called, the one import of
store against the chain (docs/DESIGN.md section 4): reading the tables needs no
JAX.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from overparam import config as config_lib
from overparam import schema
from overparam.integrity import (  # noqa: F401 - re-exported: store is the door to the disk
    DATASET_ID,
    LISTED,
    SHA256,
    STATUSES,
    ResultsError,
    check_contents,
    check_dataset_ids,
    check_files,
    check_manifest,
    check_name,
    check_tree,
    inside,
    read_manifest,
    read_table,
    verify,
    verify_complete,
    visible_files,
)
from overparam.writes import (  # noqa: F401 - re-exported, likewise
    DATASETS,
    LAYERS,
    MANIFEST,
    RUNS,
    STEPS,
    TABLE_DIRS,
    TEMP_SUFFIX,
    FileEntry,
    WriteError,
    atomic_write,
    crash_point,
    is_temporary,
    part_name,
    sha256,
    write_json,
    write_parquet,
    write_parquet_if_changed,
)


def settings(grid_point: tuple[str, ...] = config_lib.GRID_POINT) -> tuple[str, ...]:
    """The runs' settings `Results.with_settings` joins to the steps and layers tables: a
    run's grid point (config.GRID_POINT: every swept field) with seed, d and lr_spec beside
    depth, n and lr, then the sweep's settings that tell runs apart, and their status."""
    beside = {"depth": ("seed",), "n": ("d",), "lr": ("lr_spec",)}
    return (*(c for k in grid_point for c in (k, *beside.get(k, ()))), "reduction", "momentum",
            "lr_scaling", "train_output", "center_output", "dataset_id", "status")


SETTINGS = settings()
_JOINED_AS = {"loss": "loss_fn"}  # settings joined under another name (steps has a loss)


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
        df = read_table(inside(self.path, f"{DATASETS}/{dataset_id}.parquet"))
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
        from overparam import initial  # here: reading results needs no JAX

        return initial.initial_net(self.runs, run_id, modules=modules,
                                   source=self.path / RUNS)



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
        df = read_table(path / name)
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
    check_contents(path, manifest, files)
    check_dataset_ids(path, None)
    dtype = manifest["config"]["dtype"]
    tables = {}
    for name, keys in _KEYS.items():
        if name == RUNS:
            tables[name] = read_table(path / RUNS)
            continue
        try:
            arrow = [pq.read_table(path / name / n) for n in parts]
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types; each becomes one line
            raise ResultsError(f"{path / name} is corrupted or unreadable: "
                               f"{type(e).__name__}") from None
        table = (pa.concat_tables(arrow) if arrow else
                 schema.schema_of(name, dtype, extra=schema.optional(
                     name, manifest["config"])).empty_table())
        tables[name] = table.to_pandas().sort_values(keys, ignore_index=True)
    return Results(path=path, runs=tables[RUNS], steps=tables[STEPS], layers=tables[LAYERS],
                   manifest=manifest, partial=True)
