"""Several processes, one sweep (jax.distributed on loopback): the tables of one process."""

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tables import assert_same_tables

import overparam
from overparam import multihost

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--config=sweeps/default.py", "--config.widths=(8,16)", "--config.num_seeds=3",
        "--config.steps=12", "--config.chunk_steps=5", "--config.gram_every=4",
        "--config.optimizer=(gd,sgd)", "--config.batch_size=(16,)", "--progress=false"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(out, processes, args=ARGS):
    """The same command in `processes` processes joined over loopback."""
    port = _free_port()
    return [subprocess.Popen(
        [sys.executable, "-m", "overparam.sweep", *args, f"--out={out}", "--multihost",
         f"--coordinator_address=localhost:{port}", f"--num_processes={processes}",
         f"--process_id={i}"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(processes)]


def _wait(procs, timeout=300):
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        results.append((p.returncode, stdout, stderr))
    return results


def _one_process(out, args=ARGS):
    proc = subprocess.run([sys.executable, "-m", "overparam.sweep", *args, f"--out={out}"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_two_processes_write_the_tables_of_one(tmp_path):
    _one_process(tmp_path / "one")
    results = _wait(_start(tmp_path / "two", 2))
    for rc, _, stderr in results:
        assert rc == 0, stderr[-2000:]
    (_, leader_out, _), (_, other_out, _) = results
    assert "12 networks x 12 steps" in leader_out and "results:" in leader_out
    assert "results:" not in other_out   # only the leader reports
    assert_same_tables(tmp_path / "one", tmp_path / "two")
    manifest = overparam.load(tmp_path / "two").manifest
    assert manifest["processes"] == 2 and manifest["device"]["process_count"] == 2
    assert not (tmp_path / "two" / ".state").exists()


def test_interrupted_multiprocess_sweep_resumes_in_one_process(tmp_path):
    args = [*ARGS[:3], "--config.steps=400", "--config.chunk_steps=4", "--config.gram_every=0",
            *ARGS[6:]]
    _one_process(tmp_path / "one", args)
    out = tmp_path / "two"
    procs = _start(out, 2, args)
    deadline = time.monotonic() + 240
    while not list((out / "steps").glob("part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    results = _wait(procs)
    assert [rc for rc, _, _ in results] == [128 + signal.SIGTERM] * 2, results[0][2][-2000:]
    assert all("interrupted by SIGTERM" in stderr for _, _, stderr in results)
    assert '"status": "interrupted"' in (out / "manifest.json").read_text()
    with pytest.raises(overparam.ResultsError):
        overparam.load(out)
    _one_process(out, args)   # the same command, one process: resumes
    assert_same_tables(tmp_path / "one", out)


@pytest.mark.parametrize("flags, field", [
    (["--process_id=1"], "--process_id"),
    (["--num_processes=2"], "--num_processes"),
    (["--coordinator_address=localhost:1"], "--coordinator_address"),
    (["--multihost", "--num_processes=2", "--process_id=2",
      "--coordinator_address=localhost:1"], "--process_id"),
])
def test_bad_multihost_flags_fail_in_one_line(tmp_path, flags, field):
    proc = subprocess.run([sys.executable, "-m", "overparam.sweep", *ARGS,
                           f"--out={tmp_path / 'r'}", *flags], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}"), proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("processes", [1, 2, 3, 7])
def test_share_gives_every_batch_to_one_process_and_balances(processes):
    costs = [5.0, 1.0, 1.0, 3.0, 8.0, 2.0, 2.0, 1.0, 4.0, 4.0]
    shares = [multihost.share(costs, processes, p) for p in range(processes)]
    flat = sorted(itertools.chain.from_iterable(shares))
    assert flat == list(range(len(costs)))
    loads = [sum(costs[i] for i in s) for s in shares]
    assert max(loads) <= sum(costs) / processes + max(costs)
    assert shares == [multihost.share(costs, processes, p) for p in range(processes)]


def test_share_on_one_process_is_everything():
    assert multihost.share([3.0, 1.0, 2.0], 1, 0) == [0, 1, 2]
