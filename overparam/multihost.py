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

from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Joins the other processes; arguments left out are detected (Slurm, TPU pods, ...)."""
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


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
