"""Sweeps that survive: crashes (real SIGKILL) at many points, SIGTERM, re-runs, overwrite.

Each interrupted sweep is resumed by re-running the same command; its tables
must equal, bit for bit, those of an uninterrupted run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tables import assert_same_tables

import overparam

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--config=sweeps/default.py", "--config.widths=(8,16)", "--config.num_seeds=2",
        "--config.steps=20", "--config.chunk_steps=5", "--progress=false"]


def _cli(out, *extra, env=None, args=ARGS):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.run([sys.executable, "-m", "overparam.sweep", *args, f"--out={out}",
                           *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "r"
    assert _cli(out).returncode == 0
    return out


def test_same_config_twice_gives_bit_identical_tables(reference, tmp_path):
    assert _cli(tmp_path / "again").returncode == 0
    assert_same_tables(reference, tmp_path / "again")


# Writes, in order: manifest (1), two datasets (2, 3), then per chunk the steps
# part, layers part, checkpoint, batch state (4 writes; 3 for a batch's last
# chunk), runs.parquet (42) and the final manifest (43).
@pytest.mark.parametrize("crash", ["write:1", "write:3", "write:6", "chunk:2", "write:22",
                                   "chunk:7", "write:42", "write:43"])
def test_killed_sweep_resumes_to_identical_tables(reference, tmp_path, crash):
    out = tmp_path / "r"
    killed = _cli(out, env={"OVERPARAM_CRASH_AT": crash})
    assert killed.returncode == -signal.SIGKILL
    resumed = _cli(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_tables(reference, out)


def test_several_crashes_in_a_row(reference, tmp_path):
    out = tmp_path / "r"
    for crash in ("chunk:3", "write:7", "chunk:2", "write:5"):
        assert _cli(out, env={"OVERPARAM_CRASH_AT": crash}).returncode == -signal.SIGKILL
    assert _cli(out).returncode == 0
    assert_same_tables(reference, out)


def _start(out, args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "overparam.sweep", *args, f"--out={out}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_parts(out, count=2, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list((out / "steps").glob("part-*.parquet"))) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("the sweep wrote no parts")


LONG = [*ARGS[:-3], "--config.steps=600", "--config.chunk_steps=5", "--progress=false"]


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("long") / "r"
    assert _cli(out, args=LONG).returncode == 0
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_at_a_chunk_boundary_and_says_how_to_resume(long_reference, tmp_path,
                                                                   sig):
    out = tmp_path / "r"
    proc = _start(out, LONG)
    _wait_for_parts(out)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr[-2000:]
    assert "resume with the same command" in stderr and "Traceback" not in stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    assert not list(out.rglob(".*.tmp"))
    resumed = _cli(out, args=LONG)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout
    assert_same_tables(long_reference, out)


def test_external_sigkill_at_any_moment(long_reference, tmp_path):
    out = tmp_path / "r"
    proc = _start(out, LONG)
    _wait_for_parts(out, count=5)
    proc.kill()
    proc.communicate(timeout=60)
    assert _cli(out, args=LONG).returncode == 0
    assert_same_tables(long_reference, out)


def test_finished_sweep_is_left_alone_and_overwrite_recomputes(reference, tmp_path):
    out = tmp_path / "r"
    assert _cli(out).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    again = _cli(out)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before
    redo = _cli(out, "--overwrite")
    assert redo.returncode == 0 and "network-steps/s" in redo.stdout
    assert (out / "runs.parquet").stat().st_mtime_ns > before[out / "runs.parquet"]
    assert_same_tables(reference, out)


def test_a_different_sweep_in_the_same_directory_is_refused(reference, tmp_path):
    out = tmp_path / "r"
    assert _cli(out).returncode == 0
    before = sorted(p.name for p in out.rglob("*"))
    other = _cli(out, "--config.lr=(0.05,)")
    assert other.returncode == 2
    last = other.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --out:") and "lr: [0.1] -> [0.05]" in last
    assert sorted(p.name for p in out.rglob("*")) == before


def test_a_foreign_directory_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    proc = _cli(out)
    assert proc.returncode == 2 and "holds no overparam sweep" in proc.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    proc = _cli(tmp_path / "r", "--dry_run")
    assert proc.returncode == 0
    assert "2 programs" in proc.stdout and "MiB" in proc.stdout
    assert not (tmp_path / "r").exists()


def test_load_refuses_corrupted_and_unfinished_directories(reference, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(reference, bad)
    part = sorted((bad / "layers").glob("part-*.parquet"))[0]
    part.write_bytes(b"not parquet at all")
    with pytest.raises(overparam.ResultsError, match="layers"):
        overparam.load(bad)
    (bad / "manifest.json").write_text("{ truncated")
    with pytest.raises(overparam.ResultsError, match="corrupted"):
        overparam.load(bad)
    with pytest.raises(overparam.ResultsError, match="no manifest.json"):
        overparam.load(tmp_path)
