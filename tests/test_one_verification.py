"""One verification: `load` and a rerun of a complete sweep ("complete and verified") run
the very same checks (store.verify_complete), so they cannot disagree. Every field of the
manifest that overparam reads is damaged in turn (a wrong type, a wrong value, missing):
both refuse, in one line naming the file and the field, and nothing is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import overparam
from overparam import config as config_lib
from overparam import engine, resultsdir, store

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
ARGS = ["--config=sweeps/default.py", "--config.widths=(4,)", "--config.num_seeds=1",
        "--config.n=(4,)", "--config.steps=2", "--config.chunk_steps=1", "--progress=false"]
PART = "steps/part-b00000-c00000.parquet"
DELETE = object()  # a case that removes the field


def _cli(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "overparam.sweep", *ARGS, f"--out={out}"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "r"
    proc = _cli(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _manifest(path: Path) -> dict:
    return json.loads((path / store.MANIFEST).read_text())


def _set(obj: dict, keys: tuple, value) -> None:
    """obj[k1][k2]... = value, or deleted if value is DELETE; a callable value gets the
    old one."""
    for k in keys[:-1]:
        obj = obj[k]
    if value is DELETE:
        del obj[keys[-1]]
    else:
        obj[keys[-1]] = value(obj[keys[-1]]) if callable(value) else value


def _damaged(reference: Path, tmp_path: Path, keys: tuple, value, **fields) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(reference, bad)
    manifest = {**_manifest(bad), **fields}
    _set(manifest, keys, value)
    (bad / store.MANIFEST).write_text(json.dumps(manifest))
    return bad


def _files(path: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _sweep(reference: Path) -> config_lib.Sweep:
    """The sweep of the reference's command line (its manifest's config, validated)."""
    return config_lib.validate(_manifest(reference)["config"])


def _rerun_refuses(bad: Path, reference: Path, words: list[str]) -> str:
    before = _files(bad)
    with pytest.raises(resultsdir.OutError) as info:
        engine.run_sweep(_sweep(reference), bad, show_progress=False, log_fn=lambda *a: None)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), (words, message)
    assert _files(bad) == before  # nothing written
    return message


def _load_refuses(bad: Path, words: list[str], *, partial: bool = False) -> str:
    with pytest.raises(overparam.ResultsError) as info:
        overparam.load(bad, partial=partial)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), (words, message)
    return message


# ------------------------------------------------------------------ the cases


def _config_cases() -> list[tuple]:
    """For every field of a sweep: (keys, value, field) with a wrong type, a wrong value
    (none for a bool) and missing."""
    cases = []
    for f in config_lib.FIELDS:
        element = f.default[0] if f.metadata["swept"] else f.default
        wrong_type = "yes" if isinstance(element, bool) else 3 if isinstance(element, str) \
            else "x"
        wrong_value = (None if isinstance(element, bool) else "../x" if f.name == "name"
                       else "no such" if isinstance(element, str) else -5)
        if f.metadata["swept"]:
            wrong_type, wrong_value = element, [wrong_value]  # a value, not a list
        values = [wrong_type, DELETE] + ([] if wrong_value in (None, [None]) else [wrong_value])
        cases += [(("config", f.name), v, f"config.{f.name}") for v in values]
    return cases


ENTRY = ("files", PART)
CASES = [
    (("status",), DELETE, "status: missing"),
    (("status",), 3, "status"),
    (("status",), "done", "status"),
    (("schema_version",), DELETE, "schema_version"),
    (("schema_version",), "5", "schema_version"),
    (("schema_version",), 4, "schema_version"),
    (("config",), DELETE, "config: missing"),
    (("config",), [], "config"),
    (("config",), {}, "config.name: missing"),
    (("config", "no_such_field"), 1, "config.no_such_field"),
    *_config_cases(),
    (("num_runs",), DELETE, "num_runs: missing"),
    (("num_runs",), "1", "num_runs"),
    (("num_runs",), -1, "num_runs"),
    (("num_runs",), 2, "files['runs.parquet'].rows"),
    (("files",), DELETE, "files: missing"),
    (("files",), [], "files"),
    (("files",), {}, "files: lists no runs.parquet"),
    (("files", "steps/x.parquet"), {"rows": 1, "sha256": "0" * 64}, "files['steps/x.parquet']"),
    (ENTRY, "x", f"files[{PART!r}]"),
    (ENTRY, DELETE, f"{PART} was not written by this sweep", PART),
    (ENTRY + ("rows",), DELETE, f"files[{PART!r}].rows: missing"),
    (ENTRY + ("rows",), "many", f"files[{PART!r}].rows"),
    (ENTRY + ("rows",), None, f"files[{PART!r}].rows"),
    (ENTRY + ("rows",), True, f"files[{PART!r}].rows"),
    (ENTRY + ("rows",), 1.0, f"files[{PART!r}].rows"),
    (ENTRY + ("rows",), -1, f"files[{PART!r}].rows"),
    (ENTRY + ("rows",), lambda rows: rows + 5, "rows where manifest.json lists", PART),
    (ENTRY + ("rows",), lambda rows: rows + 5, f"(files[{PART!r}].rows)", PART),
    (("files", "runs.parquet", "rows"), lambda rows: rows + 5, "files['runs.parquet'].rows"),
    (ENTRY + ("sha256",), DELETE, f"files[{PART!r}].sha256: missing"),
    (ENTRY + ("sha256",), 5, f"files[{PART!r}].sha256"),
    (ENTRY + ("sha256",), "abc", f"files[{PART!r}].sha256"),
    (ENTRY + ("sha256",), "0" * 64, f"{PART} is altered", PART),
    (ENTRY + ("size",), 1, f"files[{PART!r}].'size': not a field"),
]


def _id(case) -> str:
    keys, value = case[:2]
    what = "missing" if value is DELETE else "changed" if callable(value) else repr(value)
    return f"{'.'.join(map(str, keys))}={what}"


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_load_and_a_rerun_refuse_each_damaged_field_in_one_line(reference, tmp_path, case):
    keys, value, field, *file = case  # the file named: the manifest, or `file`
    bad = _damaged(reference, tmp_path, keys, value)
    where = str(bad / (file[0] if file else store.MANIFEST))
    _load_refuses(bad, [where, field])
    _rerun_refuses(bad, reference, [where, field])


@pytest.mark.slow
@pytest.mark.parametrize("text", ["{ truncated", "[" * 100_000, "null", "[]", '"x"', ""])
def test_a_manifest_that_is_not_a_json_object_is_refused(reference, tmp_path, text):
    bad = tmp_path / "bad"
    shutil.copytree(reference, bad)
    (bad / store.MANIFEST).write_text(text)
    words = [str(bad / store.MANIFEST), "is corrupted"]
    _load_refuses(bad, words)
    _rerun_refuses(bad, reference, words)


@pytest.mark.slow
def test_the_reference_is_loaded_and_found_complete(reference):
    """The control: undamaged, both accept it."""
    r = overparam.load(reference)
    assert len(r.runs) == 1 and len(r.steps) == 3 and r.manifest["status"] == "complete"
    logged = []
    assert engine.run_sweep(_sweep(reference), reference, show_progress=False,
                            log_fn=logged.append) is None
    assert "complete and verified" in logged[0]


@pytest.mark.slow
@pytest.mark.parametrize("keys, value", [
    (ENTRY + ("rows",), lambda rows: rows + 5), (ENTRY + ("rows",), "many"),
    (ENTRY + ("rows",), None), (("schema_version",), DELETE)],
    ids=["rows+5", "rows=many", "rows=null", "no schema_version"])
def test_the_issues_cases_are_refused_by_the_command_line(reference, tmp_path, keys, value):
    """The issue's cases: the rerun said 'complete and verified' and exited 0."""
    bad = _damaged(reference, tmp_path, keys, value)
    before = _files(bad)
    proc = _cli(bad)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: --out:"), lines
    field = "schema_version" if keys[0] == "schema_version" else f"files[{PART!r}].rows"
    assert field in lines[0] and "complete and verified" not in proc.stdout
    assert _files(bad) == before


# ------------------------------------------------------------------ the plan a resume reuses


GROUP = ("groups", 0)
PLAN_CASES = [
    (("memory_budget_mb",), DELETE, "memory_budget_mb: missing"),
    (("memory_budget_mb",), "x", "memory_budget_mb"),
    (("memory_budget_mb",), 0, "memory_budget_mb"),
    (("memory_budget_mb",), float("nan"), "memory_budget_mb"),
    (("batch_multiple_of",), DELETE, "batch_multiple_of: missing"),
    (("batch_multiple_of",), "1", "batch_multiple_of"),
    (("batch_multiple_of",), 0, "batch_multiple_of"),
    (("groups",), DELETE, "groups: missing"),
    (("groups",), {}, "groups"),
    (("groups",), ["x"], "groups[0]"),
    (GROUP + ("size",), DELETE, "groups[0].size: missing"),
    (GROUP + ("size",), "x", "groups[0].size"),
    (GROUP + ("size",), 0, "groups[0].size"),
    (GROUP + ("memory_bytes",), -1, "groups[0].memory_bytes"),
    (GROUP + ("measured",), "yes", "groups[0].measured"),
    (("resumed",), "x", "resumed"),
    (("resumed",), -1, "resumed"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", PLAN_CASES, ids=[_id(c) for c in PLAN_CASES])
def test_a_resume_and_a_live_load_refuse_a_damaged_plan(reference, tmp_path, case):
    keys, value, field = case
    bad = _damaged(reference, tmp_path, keys, value, status="interrupted")
    words = [str(bad / store.MANIFEST), field]
    _load_refuses(bad, words, partial=True)
    _rerun_refuses(bad, reference, words)


@pytest.mark.parametrize("keys, value, field", [
    (GROUP + ("size",), 10**12, "groups[0].size: 1000000000000 is not a batch size"),
    (("groups",), lambda g: g * 2, "groups: 2 groups for the sweep's 1 shapes"),
    (("batch_multiple_of",), 2, "groups[0].size: 1 is not a batch size"),
    (("batch_multiple_of",), 10**6, "batch_multiple_of: 1000000 is more local devices"),
], ids=["size 10^12", "two groups", "size not a multiple", "a million devices"])
@pytest.mark.slow
def test_a_resume_refuses_a_plan_the_planner_would_not_make(reference, tmp_path, keys, value,
                                                            field):
    """Well-typed, but not this sweep's plan: refused before any batch is built."""
    bad = _damaged(reference, tmp_path, keys, value, status="interrupted")
    overparam.load(bad, partial=True)  # a live load does not read the plan
    _rerun_refuses(bad, reference, [field])
