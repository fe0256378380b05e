"""Tests for overparam.store: atomic Parquet/JSON writes, dataset tables and `load`.

A reader must never see a half-written file: writes go to a hidden temporary
name and are renamed into place, failed writes leave nothing behind, and
Parquet dataset readers skip the hidden names.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import overparam
from overparam import config as config_lib
from overparam import records, schema, store


def _frame(k: int = 5, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"run_id": [f"r{i}" for i in range(offset, offset + k)],
                         "step": np.arange(k, dtype=np.int64),
                         "loss": np.linspace(1.0, 0.0, k)})


def test_write_parquet_round_trips_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "t.parquet"
    df = _frame()
    store.write_parquet(df, path)
    pd.testing.assert_frame_equal(pd.read_parquet(path), df)
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.parquet"]


def test_write_parquet_accepts_arrow_table(tmp_path):
    table = pa.table({"a": [1, 2, 3]})
    store.write_parquet(table, tmp_path / "a.parquet")
    assert pq.read_table(tmp_path / "a.parquet").equals(table)
    assert [p.name for p in tmp_path.iterdir()] == ["a.parquet"]


def test_write_json_round_trips_and_leaves_no_temp(tmp_path):
    obj = {"status": "complete", "timings": {"total": 1.5}, "config": {"widths": [8, 16]},
           "path": tmp_path}
    store.write_json(obj, tmp_path / "manifest.json")
    back = json.loads((tmp_path / "manifest.json").read_text())
    assert back == {**obj, "path": str(tmp_path)}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_write_json_overwrites(tmp_path):
    store.write_json({"status": "running"}, tmp_path / "m.json")
    store.write_json({"status": "complete"}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"status": "complete"}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def _failing_write_table(seen):
    def write_table(table, where, *args, **kwargs):
        seen.append(where)
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError("disk full")
    return write_table


def test_failed_parquet_write_leaves_nothing(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(pq, "write_table", _failing_write_table(seen))
    path = tmp_path / "steps" / "part-b00000-c00000.parquet"
    with pytest.raises(OSError, match="disk full"):
        store.write_parquet(_frame(), path)
    assert len(seen) == 1
    written = type(path)(seen[0])
    assert written != path and written.parent == path.parent
    assert written.name.startswith(".")  # hidden while being written
    assert not path.exists()
    assert list(path.parent.iterdir()) == []


def test_failed_parquet_overwrite_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "runs.parquet"
    old = _frame(3)
    store.write_parquet(old, path)
    monkeypatch.setattr(pq, "write_table", _failing_write_table([]))
    with pytest.raises(OSError):
        store.write_parquet(_frame(7), path)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(pd.read_parquet(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["runs.parquet"]


def test_dataset_reader_skips_hidden_temp_files(tmp_path):
    parts = tmp_path / "steps"
    a, b = _frame(3), _frame(4, offset=3)
    store.write_parquet(a, parts / store.part_name(0, 0))
    store.write_parquet(b, parts / store.part_name(0, 1))
    # What a writer caught mid-write would leave: junk under hidden names.
    (parts / ".x.tmp").write_bytes(b"not parquet at all")
    (parts / f".{store.part_name(0, 2)}.deadbeef.tmp").write_bytes(b"PAR1 half")
    df = pd.read_parquet(parts).sort_values("run_id", ignore_index=True)
    expected = pd.concat([a, b]).sort_values("run_id", ignore_index=True)
    pd.testing.assert_frame_equal(df, expected)


def test_part_names_sort_by_batch_then_chunk():
    names = [store.part_name(b, c) for b in (0, 2, 10) for c in (0, 1, 11)]
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    assert all(not n.startswith((".", "_")) and n.endswith(".parquet") for n in names)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, d", [(1, 2), (7, 3), (64, 16)])
def test_dataset_round_trips_exactly(tmp_path, dtype, n, d):
    rng = np.random.default_rng(n * d)
    X = rng.standard_normal((n, d)).astype(dtype)
    X[0, 0] = np.nextafter(dtype(1), dtype(2))  # a value that would not survive rounding
    y = rng.choice([-1.0, 1.0], size=n).astype(dtype) * rng.random(n).astype(dtype)
    did = "abc123def456"
    store.write_parquet(records.dataset_table(did, X, y, np.dtype(dtype).name),
                        tmp_path / store.DATASETS / f"{did}.parquet")
    results = overparam.Results(path=tmp_path, runs=pd.DataFrame(), steps=pd.DataFrame(),
                                layers=pd.DataFrame(), manifest={})
    X2, y2 = results.dataset(did)
    assert X2.shape == (n, d) and y2.shape == (n,)
    assert X2.dtype == dtype and y2.dtype == dtype
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    table = pd.read_parquet(tmp_path / store.DATASETS / f"{did}.parquet")
    assert list(table["index"]) == list(range(n))
    assert set(table["dataset_id"]) == {did}


def _typed(name: str, frame: pd.DataFrame) -> pa.Table:
    """`frame` as table `name` of the schema, its other columns null."""
    full = {c: frame[c] if c in frame else [None] * len(frame)
            for c in schema.schema_of(name).names}
    return schema.table(name, pd.DataFrame(full, index=frame.index).reset_index(drop=True))


def test_load_sorts_tables_and_reads_manifest(tmp_path):
    steps = pd.DataFrame({"run_id": ["b", "a", "b", "a"], "step": [1, 1, 0, 0],
                          "loss": [0.1, 0.2, 0.3, 0.4]})
    layers = pd.DataFrame({"run_id": ["b", "a"], "step": [0, 0], "layer": [1, 1]})
    files = {}
    for rel, table in ((f"{store.STEPS}/{store.part_name(0, 1)}", steps.iloc[:2]),
                       (f"{store.STEPS}/{store.part_name(0, 0)}", steps.iloc[2:]),
                       (store.RUNS, pd.DataFrame({"run_id": ["a", "b"],
                                                  "dataset_id": ["abc123def456"] * 2})),
                       (f"{store.LAYERS}/{store.part_name(0, 0)}", layers)):
        name = rel.split("/")[0]
        files[rel] = store.write_parquet(_typed(name, table), tmp_path / rel).to_dict()
    config = {**config_lib.validate({}).to_dict(), "name": "x"}
    dataset = records.dataset_table("abc123def456", np.zeros((2, config["d"]), np.float32),
                                    np.zeros(2, np.float32), "float32")
    rel = f"{store.DATASETS}/abc123def456.parquet"
    files[rel] = store.write_parquet(dataset, tmp_path / rel).to_dict()
    store.write_json({"status": "complete", "config": config, "files": files, "num_runs": 2,
                      "schema_version": schema.VERSION}, tmp_path / store.MANIFEST)
    r = overparam.load(str(tmp_path))
    assert isinstance(r, overparam.Results)
    keys = list(zip(r.steps["run_id"], r.steps["step"], strict=True))
    assert keys == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert list(r.runs["run_id"]) == ["a", "b"]
    assert list(r.layers["run_id"]) == ["a", "b"]
    assert r.manifest["config"]["name"] == "x"


def test_load_without_manifest_is_a_clear_error(tmp_path):
    store.write_parquet(_frame(), tmp_path / store.RUNS)
    with pytest.raises(overparam.ResultsError) as info:
        overparam.load(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "manifest.json" in message
    assert "\n" not in message


def test_load_missing_directory(tmp_path):
    with pytest.raises(overparam.ResultsError, match="manifest.json"):
        overparam.load(tmp_path / "nope")
