"""What selects a compiled program: `Static`, and the facts the planner reads of one.

A program trains K recorded steps of many networks of one shape (overparam.chunks
holds its body; overparam.trainstate its arguments and state, overparam.optimize
its step, overparam.measurements what a record measures, overparam.initial its
init). This module owns only what is known without tracing it: `Static`, the
hashable settings that select a program (a shape compiles once, not once per
run), `init_static` (the settings the init program reads), what a record holds
(`STEP_FIELDS`, `LAYER_FIELDS`, in the results schema's order) and the period of
its Gram and sharpness records (`record_period`).
"""

from __future__ import annotations

import dataclasses
import math

from overparam import schema


@dataclasses.dataclass(frozen=True)
class Static:
    """Everything that selects a compiled program (hashable)."""

    width: int
    depth: int
    n: int
    d: int
    batch_size: int
    loss: str
    optimizer: str
    param: str
    arch: str = "mlp"            # the network (overparam.networks.network_of)
    reduction: str = "sum"
    momentum: float = 0.0
    train_output: bool = False
    sign_labels: bool = False
    record_every: int = 1
    chunk_records: int = 50
    precision: str = "highest"
    dtype: str = "float32"
    power_tol: float = 1e-6
    power_max_iters: int = 100
    regression_tol: float = 1e-2
    gram_every: int = 0   # record NTK Gram statistics every this many steps (0: never)
    cache_group: int = 0  # networks trained together through a chunk (0: the whole batch)
    center_output: bool = False  # the model is alpha (f - f(0)) rather than alpha f
    n_test: int = 0              # held-out test points measured at every record (0: none)
    sharpness_every: int = 0     # record the loss Hessian's top eigenvalue every k steps
    sharpness_iters: int = 20    # Lanczos iterations of each sharpness
    measure_precision: str = "highest"  # matmuls of the measurements (`precision`: training's)
    fixed_loops: bool = False    # no data-dependent control flow in the chunk (accelerators)
    power_iters: int = 16        # with fixed_loops: power iterations per record, warm-started


# What a record holds, in the order of the results schema's columns (overparam.schema).
STEP_FIELDS = schema.measured("steps")
LAYER_FIELDS = schema.measured("layers")


def record_period(record_every: int, gram_every: int, sharpness_every: int) -> int:
    """Records from one record that is both a Gram and a sharpness record to the next: the
    least common multiple of gram_every and sharpness_every (those that are on, 0 is off)
    over record_every; 1 when neither is on. With fixed_loops a chunk holds whole periods
    and starts at a multiple of one (plan.chunking makes every chunk so)."""
    everies = [every // record_every for every in (gram_every, sharpness_every) if every]
    return math.lcm(*everies) if everies else 1


def init_static(static: Static) -> Static:
    """`static` with every field that the init program does not read set to one value:
    shapes that differ only in those (GD and SGD, losses, schedules) share one init
    program. tests/test_train.py checks that init does not read them."""
    return dataclasses.replace(static, batch_size=static.n, loss="squared", optimizer="gd",
                               reduction="sum", sign_labels=False, record_every=1,
                               chunk_records=1, power_tol=1.0, power_max_iters=1,
                               regression_tol=1.0, momentum=float(bool(static.momentum)),
                               gram_every=int(bool(static.gram_every)), cache_group=0,
                               sharpness_every=int(bool(static.sharpness_every)),
                               sharpness_iters=1, fixed_loops=False, power_iters=1)

