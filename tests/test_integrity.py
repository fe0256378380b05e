"""Results that cannot silently go wrong: one writer per directory, and a load (and an
'already complete') that verify every file against the manifest."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tables import assert_same_tables

import overparam
from overparam import resultsdir, store

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--config=sweeps/default.py", "--config.widths=(8,16)", "--config.num_seeds=2",
        "--config.steps=20", "--config.chunk_steps=5", "--progress=false"]
LONG = [*ARGS[:-3], "--config.steps=5000", "--config.chunk_steps=5", "--progress=false"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _cmd(out, args):
    return [sys.executable, "-m", "overparam.sweep", *args, f"--out={out}"]


def _cli(out, *extra, args=ARGS):
    return subprocess.run(_cmd(out, [*args, *extra]), cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "r"
    assert _cli(out).returncode == 0
    return out


def _error_line(proc):
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[-1].startswith("error:"), lines[-1]
    return lines[-1]


# ------------------------------------------------------------------ one writer


@pytest.mark.slow
def test_a_second_sweep_on_a_running_directory_stops_at_once_and_writes_nothing(tmp_path):
    out = tmp_path / "r"
    first = subprocess.Popen(_cmd(out, LONG), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((out / "steps").glob("part-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    manifest = (out / "manifest.json").read_bytes()
    for extra in ([], ["--config.lr=(0.05,)"], ["--overwrite"]):   # same sweep, another, both
        second = _cli(out, *extra, args=LONG)
        line = _error_line(second)
        assert f"is in use by another sweep (pid {first.pid} on " in line, line
        assert second.stdout == ""                                     # not even a plan
        assert first.poll() is None                                    # still running
        assert (out / "manifest.json").read_bytes() == manifest
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM, stderr[-2000:]


@pytest.mark.slow
def test_two_sweeps_started_together_on_a_new_directory_leave_one_sweep(reference, tmp_path):
    out = tmp_path / "r"
    procs = [subprocess.Popen(_cmd(out, args), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for args in (ARGS, [*ARGS, "--config.lr=(0.05,)"])]
    codes = []
    for p in procs:
        p.communicate(timeout=300)
        codes.append(p.returncode)
    assert sorted(codes) == [0, 2], codes
    if codes[0] == 0:
        assert_same_tables(reference, out)
    else:
        assert overparam.load(out).manifest["config"]["lr"] == [0.05]


def test_a_lock_is_exclusive_and_released(tmp_path):
    out = tmp_path / "new"
    first, second = resultsdir.Lock(out), resultsdir.Lock(out)
    first.acquire()
    assert out.is_dir() and f"pid {os.getpid()}" in (out / resultsdir.LOCK).read_text()
    with pytest.raises(resultsdir.OutError, match=f"in use by another sweep .pid {os.getpid()}"):
        second.acquire()
    first.release()
    assert not out.exists()          # it created the directory and nothing else was written
    second.acquire()
    (out / "kept").write_text("x")
    second.release()
    assert [p.name for p in out.iterdir()] == ["kept"]


# ------------------------------------------------------------------ verified results


def _damaged(reference, tmp_path, damage):
    bad = tmp_path / "bad"
    shutil.copytree(reference, bad)
    damage(bad)
    return bad


def _flip_two_bits(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    data[len(data) // 3 + 1] ^= 0x10
    path.write_bytes(bytes(data))


def _part(bad, table="steps", k=0):
    return sorted((bad / table).glob("part-*.parquet"))[k]


DAMAGE = {
    "missing part": (lambda bad: _part(bad).unlink(), "is missing"),
    "extra part": (lambda bad: shutil.copy(_part(bad), bad / "steps" /
                                           store.part_name(99, 0)),
                   "was not written by this sweep"),
    "altered part": (lambda bad: _flip_two_bits(_part(bad, "layers", 1)), "altered"),
    "truncated part": (lambda bad: _part(bad).write_bytes(_part(bad).read_bytes()[:-200]),
                       "altered or truncated"),
    "no steps parts": (lambda bad: shutil.rmtree(bad / "steps"), "steps/part-"),
    "truncated dataset": (lambda bad: (lambda p: p.write_bytes(p.read_bytes()[:50]))(
        sorted((bad / "datasets").iterdir())[0]), "datasets/"),
    "altered runs table": (lambda bad: _flip_two_bits(bad / "runs.parquet"), "runs.parquet"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DAMAGE))
def test_load_refuses_a_damaged_directory_in_one_line_naming_the_file(reference, tmp_path,
                                                                      case):
    damage, words = DAMAGE[case]
    bad = _damaged(reference, tmp_path, damage)
    with pytest.raises(overparam.ResultsError) as info:
        overparam.load(bad)
    message = str(info.value)
    assert words in message and str(bad) in message and "\n" not in message, message


@pytest.mark.slow
def test_the_already_complete_check_refuses_a_damaged_directory(reference, tmp_path):
    bad = _damaged(reference, tmp_path, DAMAGE["altered part"][0])
    before = {p: p.read_bytes() for p in bad.rglob("*") if p.is_file()}
    line = _error_line(_cli(bad))
    assert "damaged" in line and "layers/part-" in line and "--overwrite" in line
    assert {p: p.read_bytes() for p in bad.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_the_manifest_lists_every_file_with_rows_and_hash(reference):
    manifest = json.loads((reference / "manifest.json").read_text())
    files = manifest["files"]
    assert sorted(files) == store.visible_files(reference)
    for rel, entry in files.items():
        assert entry["sha256"] == store.sha256(reference / rel)
    r = overparam.load(reference)
    # A sweep of seconds takes no state checkpoint at the default cadence (60 s).
    assert manifest["checkpoints"] == {"count": 0, "seconds": 0.0, "bytes": 0,
                                       "every_seconds": 60.0}
    assert sum(e["rows"] for k, e in files.items() if k.startswith("steps/")) == len(r.steps)
    assert sum(e["rows"] for k, e in files.items() if k.startswith("layers/")) == len(r.layers)
