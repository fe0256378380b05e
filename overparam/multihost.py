"""Many processes, one sweep: JAX's multi-controller runtime (`jax.distributed`).

Every process runs the same command. After `initialize`, each one plans the
same sweep, takes its share of the batches (`share`) and trains them on its
own local devices; networks never interact, so no data crosses processes
during training. The results directory must be on a file system that all
processes see. Process 0 (the leader) alone writes what is shared: the
manifest, the datasets, and at the end runs.parquet; each process writes the
steps/ and layers/ parts and checkpoints of its own batches, whose file names
never collide. `barrier` and `gather` coordinate the few moments in between.

With one process (no `initialize`), every function here is trivial.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Joins the other processes; arguments left out are detected (Slurm, TPU pods, ...).

    Under Slurm each process drives its share of the GPUs it sees
    (`slurm_local_device_ids`), not JAX's default of one GPU per process.
    """
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=slurm_local_device_ids(os.environ))


def _count(text: str) -> int | None:
    """The number at the end of a Slurm count ('4', 'a100:4'), None if there is none."""
    digits = text.rsplit(":", 1)[-1].strip()
    return int(digits) if digits.isdigit() else None


def tasks_on_node(tasks_per_node: str, node: int) -> int | None:
    """Tasks on node `node` from Slurm's compact list ('8(x4)', '2(x3),1'), None if unreadable."""
    counts = []
    for part in tasks_per_node.split(","):
        tasks, sep, repeat = part.strip().partition("(x")
        if not tasks.isdigit() or (sep and not (repeat.endswith(")")
                                                and repeat[:-1].isdigit())):
            return None
        counts += [int(tasks)] * (int(repeat[:-1]) if sep else 1)
    return counts[node] if 0 <= node < len(counts) else None


def slurm_local_device_ids(environ: Mapping[str, str]) -> list[int] | None:
    """The GPUs (CUDA ordinals, as this process sees them) that this Slurm task drives.

    JAX gives each process under Slurm the one GPU numbered SLURM_LOCALID: that
    wastes the others where a node runs fewer tasks than it has GPUs (one task
    per node with 8 GPUs drives 1), and fails where Slurm binds each task to its
    own GPUs (--gpus-per-task: each sees only its own, numbered from 0). Here
    the k GPUs that a task sees (CUDA_VISIBLE_DEVICES, which Slurm sets) are
    shared among the t tasks of its node: task r drives the k // t GPUs from
    r (k // t); a task that sees its own GPUs only (k = SLURM_GPUS_PER_TASK)
    drives them all; where k < t, task r drives GPU r mod k. None (JAX's
    default) outside Slurm, where JAX_LOCAL_DEVICE_IDS is set (JAX reads it), or
    where Slurm lists no GPUs or its variables cannot be read.
    """
    names = ("SLURM_JOB_ID", "SLURM_LOCALID", "SLURM_NODEID", "CUDA_VISIBLE_DEVICES")
    if not all(environ.get(k) for k in names) or environ.get("JAX_LOCAL_DEVICE_IDS"):
        return None
    seen = len([g for g in environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()])
    rank, node = environ["SLURM_LOCALID"], environ["SLURM_NODEID"]
    if not (seen and rank.isdigit() and node.isdigit()):
        return None
    if _count(environ.get("SLURM_GPUS_PER_TASK", "")) == seen:
        return list(range(seen))
    tasks = tasks_on_node(environ.get("SLURM_STEP_TASKS_PER_NODE")
                          or environ.get("SLURM_TASKS_PER_NODE", ""), int(node))
    rank = int(rank)
    if not tasks or rank >= tasks:
        return None
    if seen < tasks:
        return [rank % seen]
    share = seen // tasks
    return list(range(rank * share, (rank + 1) * share))


def index() -> int:
    return jax.process_index()


def count() -> int:
    return jax.process_count()


def is_leader() -> bool:
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process gets here (`name` must be the same in all of them)."""
    if count() > 1:
        multihost_utils.sync_global_devices(f"overparam:{name}")


def gather(value: int) -> list[int]:
    """`value` of every process, in process order."""
    if count() == 1:
        return [value]
    return [int(v) for v in np.asarray(multihost_utils.process_allgather(np.int64(value)))]


def share(costs: Sequence[float], processes: int, process: int) -> list[int]:
    """Indices of the batches (with these costs) that `process` trains.

    Longest batch first, each to the least loaded process: the slowest process
    gets at most the average load plus one batch. Deterministic, so every
    process computes the same split without talking to the others.
    """
    load = [0.0] * processes
    mine = []
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        p = min(range(processes), key=lambda p: (load[p], p))
        load[p] += costs[i]
        if p == process:
            mine.append(i)
    return sorted(mine)
