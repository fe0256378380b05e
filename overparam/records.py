"""Records to Parquet: each chunk's steps/ and layers/ parts, the datasets, the runs table.

Owns the row layout of every results table (the types are `schema`'s): a
chunk's records leave the device once, become one steps/ and one layers/ part,
and update the per-run results (`RunResults`) that runs.parquet is built from
at the end, so no written table is read back. It never trains and never
decides what is written when (that is the engine's).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from overparam import chunks, schema, store, train
from overparam import config as config_lib
from overparam import data as data_lib
from overparam import plan as plan_lib


@dataclasses.dataclass
class RunResults:
    """Per-run results of one batch's real networks, updated chunk by chunk.

    zero_step: first recorded step with train_error = 0 (None: not yet);
    final_loss: the loss at the last step (None until then, or if not finite).
    Kept in the batch's checkpoint (`to_dict`), so a resumed batch goes on from it.
    """

    zero_step: list[int | None]
    final_loss: list[float | None]

    @classmethod
    def empty(cls, num_real: int) -> RunResults:
        return cls([None] * num_real, [None] * num_real)

    @classmethod
    def from_dict(cls, saved: dict) -> RunResults:
        return cls(list(saved["zero_step"]), list(saved["final_loss"]))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def update(self, step: np.ndarray, loss: np.ndarray, error: np.ndarray,
               steps: int) -> None:
        """step, loss, error: (networks, K) of one chunk's records; steps: the last step."""
        for i in range(len(self.zero_step)):
            valid = step[i] <= steps
            zero = step[i][valid & (error[i] == 0)]
            if self.zero_step[i] is None and zero.size:
                self.zero_step[i] = int(zero.min())
            last = loss[i][step[i] == steps]
            if last.size and math.isfinite(last[0]):
                self.final_loss[i] = float(last[0])


def write_chunk(out: Path, batch: plan_lib.Batch, chunk: int, records: chunks.Records,
                steps: int, dtype: str, results: RunResults) -> tuple[dict[str, dict], int]:
    """Moves one chunk's records to the host, writes its steps/ and layers/ parts and
    updates `results`; returns the parts' manifest entries ({relative path: {rows,
    sha256}}) and the network-steps the chunk trained."""
    cols = chunks.columns(jax.device_get(records), batch.static)
    real = batch.num_real
    step = cols["step"][:real]                          # (real, K)
    valid = step <= steps
    run_ids = np.array([r.run_id for r in batch.runs[:real]])
    ids = np.broadcast_to(run_ids[:, None], step.shape)[valid]
    steps_cols = {"run_id": ids, "step": step[valid].astype(np.int64)}
    for name in train.step_fields(batch.static):  # in the sweep's dtype: 4 bytes in float32
        steps_cols[name] = cols[name][:real][valid]
    L = batch.static.depth
    layer_cols = {"run_id": np.repeat(ids, L), "step": np.repeat(steps_cols["step"], L),
                  "layer": np.tile(np.arange(1, L + 1, dtype=np.int64), len(ids))}
    for name in train.layer_fields(batch.static):
        layer_cols[name] = cols[name][:real][valid].reshape(-1)
    results.update(step, cols["loss"][:real], cols["train_error"][:real], steps)
    entries = {}
    for table, columns in ((store.STEPS, steps_cols), (store.LAYERS, layer_cols)):
        rel = f"{table}/{store.part_name(batch.index, chunk)}"
        extra = schema.optional(table, batch.static)
        entries[rel] = store.write_parquet(schema.table(table, columns, dtype, extra=extra),
                                           out / rel).to_dict()
    network_steps = real * int((step[0] < steps).sum()) * batch.static.record_every
    return entries, network_steps


def write_datasets(out: Path, datasets: dict[str, data_lib.Dataset],
                   dtype: str) -> dict[str, dict]:
    """datasets/<id>.parquet of every training set; returns their manifest entries. A file
    already there is rewritten unless it is exactly what this sweep writes."""
    files = {}
    for did, ds in datasets.items():
        rel = f"{store.DATASETS}/{did}.parquet"
        table = dataset_table(did, ds.X, ds.y, dtype, X_test=ds.X_test, y_test=ds.y_test)
        files[rel] = store.write_parquet_if_changed(table, out / rel).to_dict()
    return files


def dataset_table(dataset_id: str, X: np.ndarray, y: np.ndarray, dtype: str, *,
                  X_test: np.ndarray | None = None, y_test: np.ndarray | None = None):
    """X: (n, d), y: (n,) and the test points X_test: (n_test, d), y_test: (n_test,) -> one
    row per point (the training points first), x as a fixed-size list of d."""
    d = X.shape[1]
    X_test = np.zeros((0, d), X.dtype) if X_test is None else X_test
    y_test = np.zeros((0,), y.dtype) if y_test is None else y_test
    n, n_test = len(X), len(X_test)
    return schema.table(store.DATASETS, {
        "dataset_id": [dataset_id] * (n + n_test),
        "split": ["train"] * n + ["test"] * n_test,
        "index": np.concatenate([np.arange(n), np.arange(n_test)]).astype(np.int64),
        "x": list(X) + list(X_test), "y": np.concatenate([y, y_test])}, dtype, d=d)


def runs_table(sweep: config_lib.Sweep, runs: list[config_lib.Run], lambda0: dict[str, float],
               separation: dict[str, float], diverged: dict[str, int],
               results: dict[str, tuple[int | None, float | None]],
               arora: dict[str, float] | None = None):
    """runs.parquet: one row per run, from its Run, the sweep's settings and its results.

    lambda0: {run_id: lambda_min(H^inf)}; arora: {run_id: theory.arora_bound} (NaN where
    absent); separation: {dataset_id: phi};
    diverged: {run_id: first non-finite step} of the diverged runs;
    results: {run_id: (steps_to_zero_error, final_loss)} from `RunResults`, of the runs
    whose batch is finished; the others are 'running', with null results.
    """
    rows = []
    for r in runs:
        div = diverged.get(r.run_id, -1)
        zero, final = results.get(r.run_id, (None, None))
        status = ("diverged" if div >= 0 else "ok") if r.run_id in results else "running"
        rows.append({
            **dataclasses.asdict(r),
            "status": status,
            "diverged_step": div if div >= 0 else None,
            "steps_to_zero_error": zero,
            "final_loss": math.nan if final is None else final,
            "steps": sweep.steps, "dataset": sweep.dataset, "labels": sweep.labels,
            "reduction": sweep.reduction, "momentum": sweep.momentum,
            "lr_scaling": sweep.lr_scaling, "train_output": sweep.train_output,
            "center_output": sweep.center_output,
            "precision": sweep.precision, "dtype": sweep.dtype,
            "separation": separation[r.dataset_id], "lambda0": lambda0[r.run_id],
            "arora_bound": (arora or {}).get(r.run_id, math.nan)})
    frame = pd.DataFrame(rows, columns=schema.RUNS.names)
    for col in ("diverged_step", "steps_to_zero_error"):
        frame[col] = frame[col].astype("Int64")
    return schema.table(store.RUNS, frame, sweep.dtype)


def runs_of(sweep: config_lib.Sweep, prepared, batches, finished: dict):
    """runs.parquet of a sweep whose finished batches have the final checkpoint metas
    `finished` ({batch index: checkpoint.CheckpointMeta}; the others' runs are
    'running'). prepared: its `prepare.Prepared`."""
    diverged, results = {}, {}
    for b in batches:
        meta = finished.get(b.index)
        if meta is None:
            continue
        real = b.runs[: b.num_real]
        saved = RunResults.from_dict(meta.results)
        results.update({r.run_id: (z, f) for r, z, f in
                        zip(real, saved.zero_step, saved.final_loss)})
        diverged.update({r.run_id: s for r, s in zip(real, meta.diverged_step) if s >= 0})
    runs = prepared.runs
    return runs_table(sweep, runs, {r.run_id: prepared.lambda0(sweep, r) for r in runs},
                      {did: ds.separation for did, ds in prepared.datasets.items()},
                      diverged, results,
                      {r.run_id: prepared.arora_bound(sweep, r) for r in runs})
