"""The results schema (overparam.schema): every column documented, its type resolved by the
sweep's dtype, tables built in exactly those types, `check`'s one-line reasons, and `load`
refusing a file or a manifest that is not the schema's.

One tiny float64 sweep runs in-process on the CPU (a module fixture, a few seconds); the
tests that damage it work on copies.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import overparam
from overparam import config as config_lib
from overparam import engine, schema, store, train

NAMES = ("runs.parquet", "steps", "layers", "datasets")
SCHEMAS = {"runs.parquet": schema.RUNS, "steps": schema.STEPS, "layers": schema.LAYERS,
           "datasets": schema.DATASETS}
FLOATS = {"float32": pa.float32(), "float64": pa.float64()}
STEP_COLUMNS = ("loss", "train_error", "min_margin", "grad_norm", "radius_output",
                "gram_lambda_min", "gram_lambda_max", "gram_change", "gram_init_error",
                "sharpness", "test_loss", "test_error")
LAYER_COLUMNS = ("radius_spectral", "radius_frobenius", "radius_rowmax", "radius_operator",
                 "flip_frac",
                 "init_spectral")


def _types(sch: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in sch]


def _values(field: pa.Field, rows: int, d: int, dtype: str):
    """`rows` values of a column of type field.type (already resolved for `dtype`)."""
    kind, np_float = field.type, np.dtype(dtype)
    if kind in (pa.large_string(), pa.string()):
        return [f"{field.name}{i}" for i in range(rows)]
    if kind == pa.int64():
        return np.arange(rows, dtype=np.int64) + 3
    if kind == pa.bool_():
        return np.arange(rows) % 2 == 0
    if kind == pa.float64() and field.name not in schema.measured("steps"):
        return np.linspace(0.5, 1.5, rows)
    if pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind):
        return list(np.arange(rows * d, dtype=np_float).reshape(rows, d) / 7)
    return (np.arange(rows) / 3).astype(np_float)


def _columns(name: str, dtype: str = "float32", rows: int = 3, d: int = 2) -> dict:
    """{column: values} of a valid table `name` in the sweep's dtype."""
    return {f.name: _values(f, rows, d, dtype) for f in schema.schema_of(name, dtype, d=d)}


def _write_read(table: pa.Table, tmp_path: Path, name: str = "t.parquet"):
    pq.write_table(table, tmp_path / name)
    return pq.read_schema(tmp_path / name), pd.read_parquet(tmp_path / name)


# ---------------------------------------------------------------- the columns


@pytest.mark.parametrize("name", NAMES)
def test_every_column_has_a_doc_and_a_unique_name(name):
    sch = SCHEMAS[name]
    assert schema.TABLES[name] is sch
    assert len(sch) >= 4 and len(set(sch.names)) == len(sch.names)
    for f in sch:
        doc = f.metadata[b"doc"].decode()
        assert doc.strip() == doc and len(doc) >= 5, (name, f.name, doc)
        assert "\n" not in doc
    # The docs travel with every schema_of (and so inside every file).
    for dtype in FLOATS:
        for f, base in zip(schema.schema_of(name, dtype, d=3), sch):
            assert f.metadata == base.metadata


def test_tables_are_the_four_of_the_results_directory():
    assert tuple(schema.TABLES) == NAMES
    assert (store.RUNS, store.STEPS, store.LAYERS, store.DATASETS) == NAMES
    assert schema.STEPS.names[:2] == ["run_id", "step"]
    assert schema.LAYERS.names[:3] == ["run_id", "step", "layer"]
    assert schema.DATASETS.names == ["dataset_id", "split", "index", "x", "y"]
    assert isinstance(schema.VERSION, int) and schema.VERSION >= 2


@pytest.mark.parametrize("dtype", list(FLOATS))
@pytest.mark.parametrize("name", NAMES)
def test_schema_of_resolves_float_by_dtype_and_keeps_every_other_type(name, dtype):
    base, got = SCHEMAS[name], schema.schema_of(name, dtype, d=5)
    assert got.names == base.names
    assert got.metadata == {b"overparam_schema": str(schema.VERSION).encode()}
    for f, b in zip(got, base):
        if f.name in schema.measured(name):
            assert f.type == FLOATS[dtype], f.name
        elif f.name == "x":
            assert f.type == pa.list_(FLOATS[dtype], 5)
            assert pa.types.is_fixed_size_list(f.type) and f.type.list_size == 5
        else:
            assert f.type == b.type, f.name
            assert f.type != pa.float32(), f.name  # only measurements follow the dtype
        assert f.nullable


def test_schema_of_x_without_d_is_a_list_of_any_length():
    for dtype, kind in FLOATS.items():
        x = schema.schema_of("datasets", dtype).field("x").type
        assert x == pa.list_(kind) and not pa.types.is_fixed_size_list(x)


def test_runs_do_not_depend_on_the_dtype():
    assert _types(schema.schema_of("runs.parquet", "float32")) == _types(
        schema.schema_of("runs.parquet", "float64"))
    assert schema.RUNS.field("final_loss").type == pa.float64()
    for col in ("diverged_step", "steps_to_zero_error", "init_tag", "batch_tag"):
        assert schema.RUNS.field(col).type == pa.int64()


def test_measured_columns_are_what_train_records():
    assert schema.measured("steps") == train.STEP_FIELDS == STEP_COLUMNS
    assert schema.measured("layers") == train.LAYER_FIELDS == LAYER_COLUMNS
    assert schema.measured("runs.parquet") == ()
    assert schema.measured("datasets") == ("y",)
    assert list(schema.STEPS.names) == ["run_id", "step", *STEP_COLUMNS]
    assert list(schema.LAYERS.names) == ["run_id", "step", "layer", *LAYER_COLUMNS]


# ---------------------------------------------------------------- table()


@pytest.mark.parametrize("drop", ["run_id", "loss", "gram_init_error"])
def test_table_rejects_a_missing_column(drop):
    cols = _columns("steps")
    del cols[drop]
    with pytest.raises(ValueError, match="steps: columns"):
        schema.table("steps", cols)


def test_table_rejects_an_extra_column_or_another_order():
    with pytest.raises(ValueError, match="steps: columns"):
        schema.table("steps", {**_columns("steps"), "extra": np.zeros(3)})
    cols = _columns("layers")
    with pytest.raises(ValueError, match="layers: columns"):
        schema.table("layers", dict(reversed(list(cols.items()))))


def test_table_rejects_a_value_that_cannot_take_its_type():
    cols = _columns("steps")
    with pytest.raises(ValueError):
        schema.table("steps", {**cols, "step": np.array([0.5, 1.0, 2.0])})
    with pytest.raises(ValueError):
        schema.table("steps", {**cols, "loss": ["a", "b", "c"]})


@pytest.mark.parametrize("dtype", list(FLOATS))
@pytest.mark.parametrize("name", NAMES)
def test_table_writes_exactly_schema_of_types(tmp_path, name, dtype):
    d = 3
    want = schema.schema_of(name, dtype, d=d)
    t = schema.table(name, _columns(name, dtype, d=d), dtype, d=d)
    assert _types(t.schema) == _types(want)
    assert [f.metadata for f in t.schema] == [f.metadata for f in want]
    found, back = _write_read(t, tmp_path)
    assert _types(found) == _types(want)
    assert found.metadata[b"overparam_schema"] == str(schema.VERSION).encode()
    assert found.field(want.names[-1]).metadata[b"doc"] == want.field(want.names[-1]).metadata[
        b"doc"]
    assert schema.check(name, found, dtype) is None
    assert list(back.columns) == want.names and len(back) == 3
    for col in schema.measured(name):
        assert back[col].dtype == np.dtype(dtype), col


def test_table_accepts_a_dataframe_like_a_dict():
    cols = _columns("layers", "float64")
    a = schema.table("layers", cols, "float64")
    b = schema.table("layers", pd.DataFrame(cols), "float64")
    assert a.equals(b) and a.schema.equals(b.schema, check_metadata=True)


@pytest.mark.parametrize("dtype", list(FLOATS))
def test_nan_in_a_float_column_is_stored_as_null(tmp_path, dtype):
    cols = _columns("steps", dtype)
    cols["loss"] = np.array([1.5, np.nan, np.inf], dtype)
    cols["min_margin"] = np.array([np.nan] * 3, dtype)
    t = schema.table("steps", cols, dtype)
    assert t.column("loss").null_count == 1 and t.column("loss").to_pylist() == [
        1.5, None, math.inf]
    assert t.column("min_margin").null_count == 3
    assert t.column("grad_norm").null_count == 0
    _, back = _write_read(t, tmp_path)
    assert back["loss"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back["loss"].to_numpy(), cols["loss"])  # NaN back as NaN
    runs = _columns("runs.parquet")
    runs["final_loss"] = np.array([0.25, np.nan, 1.0])
    assert schema.table("runs.parquet", runs).column("final_loss").to_pylist() == [
        0.25, None, 1.0]


def test_a_nullable_integer_column_round_trips_as_int64(tmp_path):
    frame = pd.DataFrame(_columns("runs.parquet"))
    frame["steps_to_zero_error"] = pd.array([4, pd.NA, 0], dtype="Int64")
    frame["diverged_step"] = pd.array([pd.NA, pd.NA, pd.NA], dtype="Int64")
    t = schema.table("runs.parquet", frame)
    assert t.schema.field("steps_to_zero_error").type == pa.int64()
    assert t.column("steps_to_zero_error").to_pylist() == [4, None, 0]
    assert t.column("diverged_step").null_count == 3
    found, back = _write_read(t, tmp_path)
    assert found.field("steps_to_zero_error").type == pa.int64()
    for col in ("steps_to_zero_error", "diverged_step"):
        assert back[col].dtype == pd.Int64Dtype(), col
    assert back["steps_to_zero_error"].tolist()[0::2] == [4, 0]
    assert back["steps_to_zero_error"].isna().tolist() == [False, True, False]
    assert back["diverged_step"].isna().all()
    assert back["seed"].dtype == np.int64  # an integer column without nulls stays int64


# ---------------------------------------------------------------- check()


def _assert_reason(why, *words):
    assert isinstance(why, str) and "\n" not in why and why.strip() == why, why
    for w in words:
        assert w in why, (w, why)


@pytest.mark.parametrize("dtype", list(FLOATS))
@pytest.mark.parametrize("name", NAMES)
def test_check_accepts_the_schema(name, dtype):
    assert schema.check(name, schema.schema_of(name, dtype), dtype) is None
    assert schema.check(name, schema.schema_of(name, dtype, d=4), dtype) is None
    # field metadata (docs) and schema metadata (pandas) are not part of the check
    bare = pa.schema([pa.field(f.name, f.type) for f in schema.schema_of(name, dtype, d=4)])
    assert schema.check(name, bare, dtype) is None


@pytest.mark.parametrize("name", NAMES)
def test_check_names_a_missing_column(name):
    want = schema.schema_of(name, "float32")
    for i in (0, len(want) - 1):
        col = want.names[i]
        _assert_reason(schema.check(name, want.remove(i), "float32"), "lacks", repr(col))


@pytest.mark.parametrize("name", NAMES)
def test_check_names_an_extra_column(name):
    want = schema.schema_of(name, "float64")
    found = want.append(pa.field("surplus", pa.int64()))
    _assert_reason(schema.check(name, found, "float64"), "'surplus'", "not in the schema")
    found = want.insert(1, pa.field("early", pa.float64()))
    _assert_reason(schema.check(name, found, "float64"), "'early'")


def test_check_reports_columns_in_another_order():
    want = schema.schema_of("steps", "float32")
    swapped = pa.schema([want.field(1), want.field(0), *list(want)[2:]])
    _assert_reason(schema.check("steps", swapped, "float32"), "order")


@pytest.mark.parametrize("name, column, kind, dtype", [
    ("steps", "loss", pa.float64(), "float32"),      # a float64 loss in a float32 sweep
    ("steps", "loss", pa.float32(), "float64"),
    ("steps", "step", pa.int32(), "float32"),
    ("steps", "run_id", pa.string(), "float32"),
    ("layers", "flip_frac", pa.float64(), "float32"),
    ("layers", "layer", pa.float64(), "float64"),
    ("runs.parquet", "final_loss", pa.float32(), "float32"),
    ("runs.parquet", "steps_to_zero_error", pa.float64(), "float32"),
    ("runs.parquet", "train_output", pa.int64(), "float64"),
    ("datasets", "y", pa.float64(), "float32"),
    ("datasets", "x", pa.list_(pa.float64(), 3), "float32"),
    ("datasets", "x", pa.float32(), "float32"),
])
def test_check_names_a_column_of_a_wrong_type(name, column, kind, dtype):
    want = schema.schema_of(name, dtype, d=3)
    i = want.get_field_index(column)
    found = want.set(i, want.field(i).with_type(kind))
    # check knows no d: x is any list of the dtype's floats
    _assert_reason(schema.check(name, found, dtype), f"column {column!r}", str(kind),
                   str(schema.schema_of(name, dtype).field(i).type))


# ---------------------------------------------------------------- markdown()


def test_markdown_lists_every_column_of_every_table_once():
    text = schema.markdown()
    assert text.endswith("\n") and not text.endswith("\n\n")
    sections = text.split("\n\n`")
    assert len(sections) == len(NAMES)
    for name, section in zip(NAMES, sections):
        lines = section.lstrip("`").splitlines()
        assert lines[0] == f"{name}`:"
        rows = [x for x in lines if x.startswith("| `")]
        optional = [c for c, *_ in schema.OPTIONAL.get(name, ())]
        assert [x.split("`")[1] for x in rows[len(SCHEMAS[name]):]] == optional
        rows = rows[:len(SCHEMAS[name])]
        assert len(rows) == len(SCHEMAS[name])
        for f in SCHEMAS[name]:
            mine = [x for x in rows if x.startswith(f"| `{f.name}` |")]
            assert len(mine) == 1, (name, f.name)
            assert mine[0].endswith(f"| {f.metadata[b'doc'].decode()} |")
            if f.name in schema.measured(name):
                assert "the sweep's dtype" in mine[0]
        assert [x.split("`")[1] for x in rows] == SCHEMAS[name].names


# ---------------------------------------------------------------- a sweep on disk

D = 3


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A tiny float64 sweep: 4 networks, 3 chunks (the last one past the last step), one
    of them diverged (null losses)."""
    sweep = config_lib.validate(dict(
        name="schema", widths=(8,), num_seeds=2, n=(4,), d=D, steps=7, chunk_steps=3,
        loss=("exponential",), labels="random_sign", lr=(2.0, 1e4), dtype="float64"))
    out = tmp_path_factory.mktemp("schema") / "r"
    engine.run_sweep(sweep, out, show_progress=False, log_fn=lambda *a: None)
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def _manifest(path: Path) -> dict:
    return json.loads((path / store.MANIFEST).read_text())


def _load_error(path: Path) -> str:
    with pytest.raises(store.ResultsError) as info:
        overparam.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    return message


@pytest.mark.slow
def test_every_file_of_a_sweep_has_exactly_the_schema(sweep_dir):
    manifest = _manifest(sweep_dir)
    assert manifest["status"] == "complete"
    assert manifest["schema_version"] == schema.VERSION
    files = sorted(manifest["files"])
    assert files == store.visible_files(sweep_dir)
    kinds = {rel.split("/")[0] for rel in files}
    assert kinds == set(NAMES)
    assert sum(rel.startswith("steps/") for rel in files) == 3  # one part per chunk
    assert sum(rel.startswith("layers/") for rel in files) == 3
    for rel in files:
        name = rel.split("/")[0]
        found = pq.read_schema(sweep_dir / rel)
        want = schema.schema_of(name, "float64", d=D)
        assert _types(found) == _types(want), rel
        assert [f.metadata for f in found] == [f.metadata for f in want], rel
        assert found.metadata[b"overparam_schema"] == str(schema.VERSION).encode()
        assert schema.check(name, found, "float64") is None
        # read as a float32 sweep's, the first float64 measurement is named
        first = {"runs.parquet": None, "steps": "loss", "layers": "radius_spectral",
                 "datasets": "x"}[name]
        why = schema.check(name, found, "float32")
        if first is None:
            assert why is None
        else:
            _assert_reason(why, f"column {first!r}", "double")
    r = overparam.load(sweep_dir)
    assert len(r.runs) == 4 and len(r.steps) == 4 * 8 and len(r.layers) == 4 * 8
    assert r.steps["loss"].dtype == np.float64 and r.steps["loss"].isna().any()
    assert r.runs["diverged_step"].dtype == pd.Int64Dtype()
    assert r.runs["steps_to_zero_error"].dtype == pd.Int64Dtype()


@pytest.mark.slow
@pytest.mark.parametrize("version", [1, None, schema.VERSION + 1])
def test_load_rejects_another_schema_version(sweep_dir, tmp_path, version):
    path = _copy(sweep_dir, tmp_path)
    manifest = _manifest(path)
    if version is None:
        del manifest["schema_version"]  # written before the schema was versioned
    else:
        manifest["schema_version"] = version
    store.write_json(manifest, path / store.MANIFEST)
    message = _load_error(path)
    assert f"schema version {version or 1}" in message
    assert f"reads version {schema.VERSION}" in message
    assert ("an older" if version != schema.VERSION + 1 else "a newer") in message
    overparam.load(sweep_dir)  # the fixture is intact


def _rewrite(path: Path, rel: str, change) -> None:
    """Rewrites file `rel` with change(table) and records its new hash in the manifest,
    so that the schema check (not the hash check) is what sees it."""
    table = pq.read_table(path / rel)
    new = change(table)
    assert new.num_rows == table.num_rows
    pq.write_table(new, path / rel)
    manifest = _manifest(path)
    manifest["files"][rel]["sha256"] = store.sha256(path / rel)
    store.write_json(manifest, path / store.MANIFEST)


def _retype(column: str, kind: pa.DataType):
    def change(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index(column)
        return t.set_column(i, t.schema.field(i).with_type(kind), t.column(i).cast(kind))
    return change


def _drop(column: str):
    return lambda t: t.drop_columns([column])


@pytest.mark.parametrize("table, change, words", [
    ("steps", _retype("loss", pa.float32()), ["column 'loss' is float, not double"]),
    ("steps", _retype("step", pa.int32()), ["column 'step' is int32, not int64"]),
    ("steps", _drop("grad_norm"), ["lacks column 'grad_norm'"]),
    ("layers", _drop("run_id"), ["lacks column 'run_id'"]),
    ("runs.parquet", _retype("init_tag", pa.float64()), ["column 'init_tag'"]),
    ("datasets", _retype("y", pa.float32()), ["column 'y'"]),
])
@pytest.mark.slow
def test_load_rejects_a_file_not_of_the_schema(sweep_dir, tmp_path, table, change, words):
    path = _copy(sweep_dir, tmp_path)
    rel = sorted(f for f in _manifest(path)["files"] if f.split("/")[0] == table)[-1]
    _rewrite(path, rel, change)
    store.verify(path, _manifest(path)["files"])  # the hashes match: only the schema is wrong
    message = _load_error(path)
    assert str(path / rel) in message and "overparam.schema" in message
    for w in words:
        assert w in message, (w, message)
    overparam.load(sweep_dir)


@pytest.mark.slow
def test_a_rewritten_file_with_its_old_hash_fails_the_hash_check_first(sweep_dir, tmp_path):
    path = _copy(sweep_dir, tmp_path)
    rel = sorted(f for f in _manifest(path)["files"] if f.startswith("steps/"))[0]
    pq.write_table(_drop("loss")(pq.read_table(path / rel)), path / rel)
    message = _load_error(path)
    assert str(path / rel) in message and "SHA-256" in message


def test_optional_columns_come_only_with_their_fields_after_the_tables_own():
    assert schema.optional("steps", {}) == () and schema.optional("runs.parquet", {}) == ()
    on = {"linear_twin": True, "track_alignment": True, "track_features": True}
    extra = schema.optional("steps", on)
    assert extra == ("lin_distance", "lin_distance_rel", "lin_distance_test",
                     "lin_distance_test_rel", "lin_loss", "kernel_alignment")
    assert schema.optional("layers", on) == ("feature_rms", "feature_change_rms")
    got = schema.schema_of("steps", "float64", extra=extra)
    assert got.names == schema.STEPS.names + list(extra)
    assert all(got.field(c).type == pa.float64() for c in extra)
    assert schema.check("steps", got, "float64") is not None  # the extra columns refused
    assert schema.check("steps", got, "float64", extra=extra) is None
    with pytest.raises(ValueError, match="not an optional column"):
        schema.schema_of("steps", extra=("loss",))
