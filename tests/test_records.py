"""Records to tables (overparam.records): the per-run results kept chunk by chunk, the runs
table built from them, and the datasets' exact round trip.

RunResults is checked against a plain loop over all records at once; runs.parquet of one
tiny sweep (in-process on the CPU, a module fixture, a few seconds) against what pandas
computes from the steps table read back.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import overparam
from overparam import config as config_lib
from overparam import engine, records, schema, store
from overparam import writes as writes_lib

# ---------------------------------------------------------------- RunResults


def _reference(step: np.ndarray, loss: np.ndarray, error: np.ndarray, steps: int):
    """(zero_step, final_loss) of every network, by a plain loop over all its records."""
    zero, final = [], []
    for i in range(step.shape[0]):
        z = f = None
        for t, value, e in zip(step[i].tolist(), loss[i].tolist(), error[i].tolist()):
            if t > steps:
                continue
            if z is None and e == 0:
                z = int(t)
            if t == steps:
                f = float(value) if math.isfinite(value) else None
        zero.append(z)
        final.append(f)
    return zero, final


def _records(seed: int, networks: int, steps: int, record_every: int, per_chunk: int,
             dtype):
    """Random (networks, K) step/loss/error arrays, K = chunks * per_chunk: records from
    step 0 on, the last chunk running past the last step; errors often 0, losses sometimes
    NaN or +-inf (one network at the last step)."""
    rng = np.random.default_rng(seed)
    num_records = steps // record_every + 1
    chunks = -(-num_records // per_chunk) + 1  # at least one chunk wholly past the end
    K = chunks * per_chunk
    step = np.broadcast_to(np.arange(K, dtype=np.int32) * record_every, (networks, K)).copy()
    error = rng.choice(np.array([0.0, 0.25, 0.5, 1.0], dtype), size=(networks, K),
                       p=[0.15, 0.35, 0.3, 0.2])
    loss = rng.standard_normal((networks, K)).astype(dtype) ** 2
    loss[rng.random((networks, K)) < 0.1] = np.nan
    loss[rng.random((networks, K)) < 0.05] = np.inf
    error[:, 0] = 1.0         # no network is perfect at initialization ...
    last = steps // record_every
    error[0] = 0.5            # never zero within the sweep ...
    error[0, last + 1:] = 0   # ... only past its last step, which must be ignored
    loss[0, last] = 0.75
    loss[0, last + 1:] = 123.0
    loss[1, last] = np.nan    # a non-finite final loss: None
    loss[2, last] = -np.inf
    error[3, :] = 0           # ... but this one, zero from step 0
    loss[3, last] = 0.0
    return chunks, step, loss, error


@pytest.mark.parametrize("seed, networks, steps, record_every, per_chunk, dtype", [
    (0, 6, 20, 1, 4, np.float32),
    (1, 9, 30, 3, 5, np.float64),
    (2, 5, 12, 2, 7, np.float32),   # one chunk holds all recorded steps
    (3, 40, 99, 1, 10, np.float32),
])
def test_run_results_match_a_plain_loop_over_all_records(seed, networks, steps, record_every,
                                                         per_chunk, dtype):
    chunks, step, loss, error = _records(seed, networks, steps, record_every, per_chunk, dtype)
    zero, final = _reference(step, loss, error, steps)
    assert zero[0] is None and final[0] == 0.75
    assert final[1] is None and final[2] is None and zero[3] == 0
    assert any(z not in (None, 0) for z in zero)  # the random part exercises first zeros
    results = records.RunResults.empty(networks)
    assert results.zero_step == [None] * networks and results.final_loss == [None] * networks
    for c in range(chunks):
        part = slice(c * per_chunk, (c + 1) * per_chunk)
        results.update(step[:, part], loss[:, part], error[:, part], steps)
        # after each chunk: what the loop gives over the records so far
        k = (c + 1) * per_chunk
        assert (results.zero_step, results.final_loss) == _reference(
            step[:, :k], loss[:, :k], error[:, :k], steps)
    assert results.zero_step == zero and results.final_loss == final
    assert all(type(z) is int for z in results.zero_step if z is not None)
    assert all(type(f) is float for f in results.final_loss if f is not None)


def test_run_results_resumed_from_json_match_uninterrupted():
    steps, per_chunk = 20, 4
    chunks, step, loss, error = _records(7, 8, steps, 1, per_chunk, np.float32)
    straight, saved = records.RunResults.empty(8), records.RunResults.empty(8).to_dict()
    for c in range(chunks):
        part = slice(c * per_chunk, (c + 1) * per_chunk)
        straight.update(step[:, part], loss[:, part], error[:, part], steps)
        resumed = records.RunResults.from_dict(json.loads(json.dumps(saved)))
        resumed.update(step[:, part], loss[:, part], error[:, part], steps)
        saved = resumed.to_dict()
        assert resumed == straight
    assert saved == {"zero_step": straight.zero_step, "final_loss": straight.final_loss}
    assert (straight.zero_step, straight.final_loss) == _reference(step, loss, error, steps)


def test_run_results_to_dict_round_trips_through_json():
    r = records.RunResults([None, 0, 17], [None, 0.1 + 0.2, float(np.float32(1 / 3))])
    text = json.dumps(r.to_dict())
    assert json.loads(text) == {"zero_step": [None, 0, 17],
                                "final_loss": [None, 0.1 + 0.2, float(np.float32(1 / 3))]}
    back = records.RunResults.from_dict(json.loads(text))
    assert back == r and back.final_loss[1] == 0.30000000000000004
    assert back.zero_step is not r.zero_step  # from_dict copies
    back.zero_step[0] = 5
    assert r.zero_step[0] is None


# ---------------------------------------------------------------- runs_table


def test_runs_table_turns_missing_results_into_nulls_and_nan(tmp_path):
    sweep = config_lib.validate(dict(name="rt", widths=(8,), num_seeds=3, n=(4,), d=3,
                                     steps=5))
    runs = config_lib.expand(sweep)
    assert len(runs) == 3
    ids = [r.run_id for r in runs]
    table = records.runs_table(
        sweep, runs, lambda0={i: 0.5 + k for k, i in enumerate(ids)},
        separation={r.dataset_id: 0.25 for r in runs}, diverged={ids[2]: 3},
        results={ids[0]: (4, 0.125), ids[1]: (None, None), ids[2]: (None, None)})
    assert table.schema.names == schema.RUNS.names
    assert [(f.name, f.type) for f in table.schema] == [
        (f.name, f.type) for f in schema.schema_of("runs.parquet")]
    store.write_parquet(table, tmp_path / store.RUNS)
    df = pd.read_parquet(tmp_path / store.RUNS)
    assert df["status"].tolist() == ["ok", "ok", "diverged"]
    assert df["diverged_step"].dtype == pd.Int64Dtype()
    assert df["diverged_step"].isna().tolist() == [True, True, False]
    assert df["diverged_step"][2] == 3
    assert df["steps_to_zero_error"].dtype == pd.Int64Dtype()
    assert df["steps_to_zero_error"].isna().tolist() == [False, True, True]
    assert df["steps_to_zero_error"][0] == 4
    assert df["final_loss"][0] == 0.125 and df["final_loss"][1:].isna().all()
    assert df["lambda0"].tolist() == [0.5, 1.5, 2.5]
    assert (df["separation"] == 0.25).all() and (df["steps"] == 5).all()
    for r, (_, row) in zip(runs, df.iterrows()):
        for k, v in dataclasses.asdict(r).items():
            assert row[k] == v or (isinstance(v, float) and math.isnan(v) and
                                   math.isnan(row[k])), k


# ---------------------------------------------------------------- a sweep on disk


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A tiny float32 sweep: 4 networks over 3 chunks (the last one past step 7); some
    reach zero error, one never does, one diverges at once (lr 1e4)."""
    sweep = config_lib.validate(dict(
        name="records", widths=(8,), num_seeds=2, n=(4,), d=3, steps=7, chunk_steps=3,
        loss=("exponential",), labels="random_sign", lr=(2.0, 1e4)))
    out = tmp_path_factory.mktemp("records") / "r"
    engine.run_sweep(sweep, out, show_progress=False, log_fn=lambda *a: None)
    return sweep, overparam.load(out)


@pytest.mark.slow
def test_runs_results_are_what_the_steps_table_says(swept):
    sweep, r = swept
    steps = r.steps
    assert len(r.runs) == 4 and set(steps["run_id"]) == set(r.runs["run_id"])
    # every recorded step once, none past the sweep's last step
    for _, g in steps.groupby("run_id"):
        assert g["step"].tolist() == list(range(sweep.steps + 1))
    zero = steps[steps["train_error"] == 0].groupby("run_id")["step"].min()
    last = steps[steps["step"] == sweep.steps].set_index("run_id")["loss"]
    runs = r.runs.set_index("run_id")
    assert runs["steps_to_zero_error"].dtype == pd.Int64Dtype()
    for run_id, row in runs.iterrows():
        if run_id in zero.index:
            assert row["steps_to_zero_error"] == zero[run_id], run_id
        else:
            assert pd.isna(row["steps_to_zero_error"]), run_id
        want = float(last[run_id])
        if math.isfinite(want):
            assert row["final_loss"] == want, run_id  # exact: the float32 value, widened
        else:
            assert math.isnan(row["final_loss"]) and row["status"] == "diverged", run_id
        bad = steps[(steps["run_id"] == run_id) & ~np.isfinite(steps["loss"])]["step"]
        if row["status"] == "diverged":
            assert row["diverged_step"] == bad.min(), run_id
        else:
            assert bad.empty and pd.isna(row["diverged_step"]), run_id
    # the sweep covers every case: a first zero after step 0, never zero, diverged
    assert runs["steps_to_zero_error"].notna().sum() >= 2
    assert runs["steps_to_zero_error"].isna().sum() >= 1
    assert (runs["status"] == "diverged").sum() == 1


@pytest.mark.slow
def test_runs_keys_and_tags_are_config_expand_s(swept):
    sweep, r = swept
    expected = {run.run_id: run for run in config_lib.expand(sweep)}
    assert sorted(expected) == sorted(r.runs["run_id"])
    for _, row in r.runs.iterrows():
        run = expected[row["run_id"]]
        assert row["init_tag"] == run.init_tag and row["batch_tag"] == run.batch_tag
        assert 0 <= row["init_tag"] < 2**32 and 0 <= row["batch_tag"] < 2**32
        for k in ("seed", "width", "depth", "n", "d", "loss", "optimizer", "lr_base",
                  "lr_spec", "batch_size", "param", "dataset_id"):
            assert row[k] == getattr(run, k), k
    assert r.runs["init_tag"].dtype == np.int64 and r.runs["batch_tag"].dtype == np.int64
    assert set(r.runs["dtype"]) == {"float32"} and set(r.runs["steps"]) == {sweep.steps}


# ---------------------------------------------------------------- datasets


def _tricky(n: int, d: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n + d)
    X = rng.standard_normal((n, d)).astype(dtype)
    info = np.finfo(dtype)
    special = [np.nextafter(dtype(1), dtype(2)), info.tiny, info.smallest_subnormal,
               -0.0, info.max, -info.eps]
    X.flat[: len(special)] = np.array(special, dtype)[: X.size]
    y = (rng.choice([-1.0, 1.0], size=n) * rng.random(n)).astype(dtype)
    y[0] = np.nextafter(dtype(-1), dtype(0))
    return X, y


def _read_back(table: pa.Table) -> pa.Table:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return pq.read_table(io.BytesIO(sink.getvalue()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, d", [(1, 1), (4, 3), (33, 8)])
def test_dataset_table_round_trips_x_and_y_exactly(dtype, n, d):
    X, y = _tricky(n, d, dtype)
    name = np.dtype(dtype).name
    table = records.dataset_table("ds0", X, y, name)
    want = schema.schema_of("datasets", name, d=d)
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in want]
    back = _read_back(table)
    assert back.schema.field("x").type == pa.list_(pa.from_numpy_dtype(dtype), d)
    df = back.to_pandas()
    X2, y2 = np.stack(df["x"].to_numpy()), df["y"].to_numpy()
    assert X2.dtype == dtype and y2.dtype == dtype and X2.shape == (n, d)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    # bit for bit (-0.0, subnormals)
    uint = np.dtype(f"u{np.dtype(dtype).itemsize}")
    np.testing.assert_array_equal(X2.view(uint), X.view(uint))
    np.testing.assert_array_equal(y2.view(uint), y.view(uint))
    assert df["index"].tolist() == list(range(n)) and set(df["dataset_id"]) == {"ds0"}


def test_write_datasets_writes_each_once_and_keeps_identical_files(tmp_path, monkeypatch):
    Ds = dataclasses.make_dataclass("Ds", ["X", "y", "X_test", "y_test"])
    sets = {f"id{k}": Ds(*_tricky(5, 2, np.float64), *_tricky(3, 2, np.float64))
            for k in range(2)}
    sets["id1"].X = sets["id1"].X[::-1].copy()
    files = records.write_datasets(tmp_path, sets, "float64")
    assert sorted(files) == ["datasets/id0.parquet", "datasets/id1.parquet"]
    for rel, entry in files.items():
        assert entry == {"rows": 8, "sha256": store.sha256(tmp_path / rel)}
        got = pd.read_parquet(tmp_path / rel)
        ds = sets[rel[9:12]]
        train, test = got[got.split == "train"], got[got.split == "test"]
        assert got.split.tolist() == ["train"] * 5 + ["test"] * 3
        assert train["index"].tolist() == [0, 1, 2, 3, 4] and test["index"].tolist() == [0, 1, 2]
        np.testing.assert_array_equal(np.stack(train["x"].to_numpy()), ds.X)
        np.testing.assert_array_equal(np.stack(test["x"].to_numpy()), ds.X_test)
        np.testing.assert_array_equal(test["y"].to_numpy(), ds.y_test)
    writes = []
    real = writes_lib.write_parquet  # where write_parquet_if_changed finds it
    monkeypatch.setattr(writes_lib, "write_parquet", lambda t, p: writes.append(p) or real(t, p))
    assert records.write_datasets(tmp_path, sets, "float64") == files
    assert writes == []  # already exactly there: not rewritten
    (tmp_path / "datasets/id0.parquet").write_bytes(b"damaged")
    assert records.write_datasets(tmp_path, sets, "float64") == files
    assert writes == [tmp_path / "datasets/id0.parquet"]
