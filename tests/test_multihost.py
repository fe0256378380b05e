"""Several processes, one sweep (jax.distributed on loopback): the tables of one process.

Slurm is faked by its environment variables: JAX then finds the coordinator,
process count and index itself, and overparam picks each task's GPUs.
"""

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


@pytest.mark.slow
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


@pytest.mark.slow
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
@pytest.mark.slow
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


# ------------------------------------------------------------------ Slurm

def _slurm_env(task, tasks, port, **more):
    """What srun gives task `task` of `tasks` on one node (and JAX's coordinator port)."""
    return {**ENV, "SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost",
            "SLURM_NTASKS": str(tasks), "SLURM_PROCID": str(task), "SLURM_LOCALID": str(task),
            "SLURM_NODEID": "0", "SLURM_STEP_TASKS_PER_NODE": str(tasks),
            "JAX_COORDINATOR_PORT": str(port), **more}


@pytest.mark.parametrize("gpus, tasks_per_node, node, local, per_task, want", [
    ("0,1,2,3,4,5,6,7", "1(x4)", 2, 0, "", [0, 1, 2, 3, 4, 5, 6, 7]),  # a task per node
    ("0,1,2,3,4,5,6,7", "8(x4)", 1, 3, "", [3]),                         # a task per GPU
    ("0,1,2,3,4,5,6,7", "2,2", 1, 1, "", [4, 5, 6, 7]),
    ("3", "8(x2)", 0, 5, "1", [0]),          # --gpus-per-task=1: each sees its own, as 0
    ("4,5", "2(x2)", 1, 1, "a100:2", [0, 1]),
    ("0", "8", 0, 5, "", [0]),               # bound without SLURM_GPUS_PER_TASK
    ("0,1,2,3", "8", 0, 5, "", [1]),         # more tasks than GPUs: shared
    ("0,1,2,3,4,5,6,7", "3", 0, 2, "", [4, 5]),  # an uneven split leaves GPUs 6, 7 idle
    ("", "8", 0, 5, "", None),               # no GPUs listed: JAX's default
    ("0,1", "2(x", 0, 1, "", None),          # unreadable
])
def test_a_slurm_task_drives_its_share_of_the_gpus_it_sees(gpus, tasks_per_node, node, local,
                                                          per_task, want):
    env = {"SLURM_JOB_ID": "1", "SLURM_LOCALID": str(local), "SLURM_NODEID": str(node),
           "SLURM_STEP_TASKS_PER_NODE": tasks_per_node, "CUDA_VISIBLE_DEVICES": gpus,
           "SLURM_GPUS_PER_TASK": per_task}
    assert multihost.slurm_local_device_ids(env) == want
    assert multihost.slurm_local_device_ids({**env, "JAX_LOCAL_DEVICE_IDS": "0"}) is None
    assert multihost.slurm_local_device_ids({k: v for k, v in env.items()
                                             if k != "SLURM_JOB_ID"}) is None


@pytest.mark.slow
def test_under_slurm_each_process_joins_and_gets_its_share_of_the_gpus():
    """Two tasks on a node with 4 GPUs: JAX alone would give them GPU 0 and GPU 1."""
    code = ("from overparam import multihost; multihost.initialize(); import jax; "
            "print(jax.process_index(), jax.process_count(), "
            "jax.config.read('jax_cuda_visible_devices'))")
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                              env=_slurm_env(i, 2, port, CUDA_VISIBLE_DEVICES="0,1,2,3"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = _wait(procs, timeout=120)
    assert [rc for rc, _, _ in results] == [0, 0], results[0][2][-2000:]
    assert [out.split() for _, out, _ in results] == [["0", "2", "0,1"], ["1", "2", "2,3"]]


@pytest.mark.slow
def test_a_slurm_job_with_two_devices_per_task_writes_the_tables_of_one_process(tmp_path):
    """srun of `--multihost` alone, 2 tasks each driving 2 (CPU) devices: the tables of one
    process on 2 devices, bit for bit, and each task trained on both of its devices."""
    args = [*ARGS[:2], "--config.num_seeds=2", "--config.steps=4", "--config.chunk_steps=4",
            "--config.gram_every=0", "--progress=false"]
    two_devices = {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "  # conftest's, and:
                                "--xla_force_host_platform_device_count=2".strip()}
    one = subprocess.run([sys.executable, "-m", "overparam.sweep", *args,
                          f"--out={tmp_path / 'one'}"], cwd=ROOT, env={**ENV, **two_devices},
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "overparam.sweep", *args,
                               f"--out={tmp_path / 'slurm'}", "--multihost"], cwd=ROOT,
                              env=_slurm_env(i, 2, port, CUDA_VISIBLE_DEVICES="0,1,2,3",
                                             **two_devices),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = _wait(procs)
    for rc, _, stderr in results:
        assert rc == 0, stderr[-2000:]
    assert "4 networks x 4 steps" in results[0][1]
    assert_same_tables(tmp_path / "one", tmp_path / "slurm")
    manifest = overparam.load(tmp_path / "slurm").manifest
    assert manifest["processes"] == 2 and manifest["device"]["process_count"] == 2
    assert manifest["device"]["device_count"] == 4 and manifest["batch_multiple_of"] == 2
