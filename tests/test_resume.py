"""Sweeps that survive: a real SIGKILL at every write point and at random moments, signals
at start-up, during compiling and while training, a damaged checkpoint, a full disk.

Each interrupted sweep is resumed by running the same command again; its tables
must equal, bit for bit, those of an uninterrupted run.
"""

import json
import os
import random
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tables import assert_same_tables

import overparam
from overparam import config as config_lib
from overparam import engine, programs, store

ROOT = Path(__file__).resolve().parents[1]
# A checkpoint after every chunk (checkpoint_seconds=0), so that crashes land between
# all kinds of writes and a count of writes does not depend on timing.
ARGS = ["--config=sweeps/default.py", "--config.widths=(8,16)", "--config.num_seeds=2",
        "--config.steps=20", "--config.chunk_steps=5", "--config.checkpoint_seconds=0",
        "--progress=false"]
# One batch of two chunks: every kind of write (a checkpoint with a state and the
# finished batch's), few of them.
TINY = {"widths": (8,), "num_seeds": 1, "steps": 6, "chunk_steps": 4, "checkpoint_seconds": 0}
TINY_ARGS = ["--config=sweeps/default.py", "--progress=false",
             *(f"--config.{k}={v}".replace(" ", "") for k, v in TINY.items())]


def _cli(out, *extra, env=None, args=ARGS):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.run([sys.executable, "-m", "overparam.sweep", *args, f"--out={out}",
                           *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _resume_in_process(out, fields):
    """The same sweep as `_cli` with these overrides, run in this process (no import or
    start-up cost), to resume a directory."""
    c = runpy.run_path(str(ROOT / "sweeps" / "default.py"))["get_config"]()
    for k, v in fields.items():
        setattr(c, k, v)
    programs.enable_compilation_cache(os.environ["OVERPARAM_COMPILATION_CACHE"])
    engine.run_sweep(config_lib.validate(c), out, show_progress=False, log_fn=lambda *a: None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "r"
    assert _cli(out).returncode == 0
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(reference directory, the crash points of a clean run in order)."""
    out = tmp_path_factory.mktemp("tiny") / "r"
    log = out.parent / "points"
    proc = _cli(out, args=TINY_ARGS, env={"OVERPARAM_CRASH_LOG": str(log)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, log.read_text().split()


@pytest.mark.slow
def test_same_config_twice_gives_bit_identical_tables(reference, tmp_path):
    assert _cli(tmp_path / "again").returncode == 0
    assert_same_tables(reference, tmp_path / "again")


@pytest.mark.slow
def test_kill_at_every_write_point_resumes_to_identical_tables(tiny, tmp_path):
    reference, points = tiny
    # manifest, dataset, runs.parquet (all 'running'), 2 chunks x (steps part, layers
    # part, checkpoint), runs.parquet (the batch finished; at the end it is as it was),
    # manifest; a 'chunk' point between each chunk's parts and its checkpoint.
    counts = {name: points.count(name) for name in ("write", "chunk")}
    assert counts == {"write": 11, "chunk": 2}, points
    for name, count in counts.items():
        for k in range(1, count + 1):
            out = tmp_path / f"{name}{k}"
            killed = _cli(out, args=TINY_ARGS, env={"OVERPARAM_CRASH_AT": f"{name}:{k}"})
            assert killed.returncode == -signal.SIGKILL, (name, k, killed.stderr[-2000:])
            _resume_in_process(out, TINY)
            assert_same_tables(reference, out)


@pytest.mark.slow
def test_several_crashes_in_a_row(reference, tmp_path):
    out = tmp_path / "r"
    for crash in ("chunk:3", "write:7", "chunk:2", "write:5"):
        assert _cli(out, env={"OVERPARAM_CRASH_AT": crash}).returncode == -signal.SIGKILL
    assert _cli(out).returncode == 0
    assert_same_tables(reference, out)


def _start(out, args, env=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "overparam.sweep", *args, f"--out={out}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_parts(out, count=2, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list((out / "steps").glob("part-*.parquet"))) >= count:
            return
        time.sleep(0.02)
    raise AssertionError("the sweep wrote no parts")


LONG = [*ARGS[:-4], "--config.steps=600", "--config.chunk_steps=5",
        "--config.checkpoint_seconds=0", "--progress=false"]


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("long") / "r"
    assert _cli(out, args=LONG).returncode == 0
    return out


@pytest.mark.slow
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
    # The printed command resumes the sweep as it is, pasted into a shell.
    command = stderr.strip().splitlines()[-1].strip()
    resumed = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stderr[-2000:]
    assert_same_tables(long_reference, out)


@pytest.mark.slow
def test_twenty_external_sigkills_at_random_moments_then_one_resume(long_reference, tmp_path):
    out, rng = tmp_path / "r", random.Random(0)
    for i in range(20):
        proc = _start(out, LONG)
        if i % 2:  # anywhere: start-up, compiling, planning, the first writes
            time.sleep(rng.uniform(0.0, 4.0))
        else:      # while training and writing
            _wait_for_parts(out, count=1)
            time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc.communicate(timeout=60)
    assert _cli(out, args=LONG).returncode == 0
    assert_same_tables(long_reference, out)


@pytest.mark.slow
def test_a_kill_right_after_the_complete_manifest_is_cleaned_up_by_the_next_run(reference,
                                                                                tmp_path):
    """A kill between the complete manifest and the removal of .state leaves both; the next
    run finds the sweep complete, does nothing to its tables and removes them."""
    out = tmp_path / "r"
    shutil.copytree(reference, out)
    (out / ".state").mkdir()
    (out / ".state" / "b00000.npz").write_bytes(b"half removed")
    leftover = out / f".manifest.json.0123abcd{store.TEMP_SUFFIX}"
    leftover.write_text("{")
    proc = _cli(out)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout, proc.stderr[-2000:]
    assert_same_tables(reference, out)


@pytest.mark.slow
def test_a_signal_during_start_up_is_a_clean_stop_that_writes_nothing(tmp_path):
    for point, sig in (("import:1", "SIGINT"), ("compile:1", "SIGTERM")):
        out = tmp_path / point.split(":")[0]
        proc = _cli(out, env={"OVERPARAM_CRASH_AT": point, "OVERPARAM_CRASH_SIGNAL": sig})
        assert proc.returncode == 128 + signal.Signals[sig], proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "resume with the same command" in proc.stderr
        assert not out.exists()


@pytest.mark.slow
def test_a_signal_while_a_resume_starts_leaves_it_interrupted(reference, tmp_path):
    out = tmp_path / "r"
    assert _cli(out, env={"OVERPARAM_CRASH_AT": "chunk:2"}).returncode == -signal.SIGKILL
    # The resume compiles its programs lazily, after it marked the manifest running.
    for point in ("write:1", "compile:1"):
        proc = _cli(out, env={"OVERPARAM_CRASH_AT": point, "OVERPARAM_CRASH_SIGNAL": "SIGTERM"})
        assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    assert _cli(out).returncode == 0
    assert_same_tables(reference, out)


def _checkpoint(out):
    (path,) = sorted((out / ".state").glob("b*.npz"))[:1]
    return path


@pytest.mark.slow
def test_an_unreadable_checkpoint_is_reported_and_its_batch_recomputed(reference, tmp_path):
    out = tmp_path / "r"
    assert _cli(out, env={"OVERPARAM_CRASH_AT": "chunk:3"}).returncode == -signal.SIGKILL
    path = _checkpoint(out)
    path.write_bytes(path.read_bytes()[:100])   # truncated
    resumed = _cli(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{path} is unreadable" in resumed.stdout and "recomputing batch 0" in resumed.stdout
    assert_same_tables(reference, out)


@pytest.mark.slow
def test_a_checkpoint_whose_count_does_not_match_its_state_is_recomputed(reference, tmp_path):
    out = tmp_path / "r"
    assert _cli(out, env={"OVERPARAM_CRASH_AT": "chunk:3"}).returncode == -signal.SIGKILL
    path = _checkpoint(out)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["chunks_done"] += 1                        # a raised count, as if edited
    arrays["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    resumed = _cli(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "do not match" in resumed.stdout and "recomputing batch 0" in resumed.stdout
    assert_same_tables(reference, out)


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_path_and_the_sweep_resumes(reference, tmp_path):
    out = tmp_path / "r"
    proc = _cli(out, env={"OVERPARAM_FAIL_AT": "write:6"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "No space left on device" in line and f"cannot write {out}/" in line
    assert "overparam.sweep" in line   # how to resume
    assert _cli(out).returncode == 0
    assert_same_tables(reference, out)


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_different_sweep_in_the_same_directory_is_refused(reference, tmp_path):
    out = tmp_path / "r"
    assert _cli(out).returncode == 0
    before = sorted(p.name for p in out.rglob("*"))
    other = _cli(out, "--config.lr=(0.05,)")
    assert other.returncode == 2
    last = other.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --out:") and "lr: [0.1] -> [0.05]" in last
    assert sorted(p.name for p in out.rglob("*")) == before


@pytest.mark.slow
def test_a_foreign_directory_is_refused_and_left_alone(tmp_path):
    for name in ("notes.txt", ".notes.tmp"):   # only overparam's own temporaries are its own
        out = tmp_path / name.strip(".")
        out.mkdir()
        (out / name).write_text("keep me")
        proc = _cli(out)
        assert proc.returncode == 2 and "holds no overparam sweep" in proc.stderr
        assert [p.name for p in out.iterdir()] == [name]


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    proc = _cli(tmp_path / "r", "--dry_run")
    assert proc.returncode == 0
    assert "2 programs" in proc.stdout and "MiB" in proc.stdout
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
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
