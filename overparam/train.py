"""What selects a compiled program: `Static`, and the facts the planner reads of one.

A program trains K recorded steps of many networks of one shape (overparam.chunks
holds its body; overparam.trainstate its arguments and state, overparam.optimize
its step, overparam.measurements what a record measures, overparam.initial its
init). This module owns only what is known without tracing it: `Static`, the
hashable settings that select a program (a shape compiles once, not once per
run), `init_static` (the settings the init program reads), what a record holds
(`STEP_FIELDS`, `LAYER_FIELDS`, in the results schema's order, with the optional columns
a program asks for: `step_fields`, `layer_fields`) and the period of
its Gram and sharpness records (`record_period`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from overparam import config, schema

# The fields of `Static` that are not a declared field's (config's `program` flag gives
# those): resolved per run or chosen by the plan. (name, type, default, what the init
# program reads of it: config.INIT or CHUNK; `init_static`.)
_OWN_FIELDS = (
    ("batch_size", int, dataclasses.MISSING, config.CHUNK),  # examples per step (GD: n)
    ("sign_labels", bool, False, config.CHUNK),  # +-1 labels (config.Sweep.sign_labels)
    ("n_test", int, 0, config.INIT),         # held-out test points measured at every record
    ("chunk_records", int, 50, config.CHUNK),  # records per chunk
    ("cache_group", int, 0, config.CHUNK),   # networks trained together through a chunk (0: all)
    ("fixed_loops", bool, False, config.CHUNK),  # no data-dependent control flow (accelerators)
)


def static_class(fields: tuple[dataclasses.Field, ...] = config.FIELDS) -> type:
    """The class of `Static` for the field declarations `fields`: a frozen (hashable,
    keyword-only) dataclass with a field for each declared field that a compiled program
    reads (`config.program_fields`: one run's value, by its run name, with the default
    sweep's default) and `_OWN_FIELDS`; each field's metadata["program"] says what the
    init program reads of it (`init_static`)."""
    specs = [(name, kind, dataclasses.field(default=default, metadata={"program": program}))
             for name, kind, default, program in (*config.program_fields(fields), *_OWN_FIELDS)]
    cls = dataclasses.make_dataclass("Static", specs, frozen=True, kw_only=True)
    cls.__module__ = __name__
    cls.__doc__ = ("Everything that selects a compiled program (hashable): the declared fields "
                   "a program reads (config's `program` flag) and " +
                   ", ".join(name for name, *_ in _OWN_FIELDS) + ".")
    return cls


Static = static_class()


# What a record holds, in the order of the results schema's columns (overparam.schema).
STEP_FIELDS = schema.measured("steps")
LAYER_FIELDS = schema.measured("layers")


def step_fields(static: Static) -> tuple[str, ...]:
    """What a record of `static`'s program holds of the steps table: STEP_FIELDS and the
    optional columns its fields ask for (schema.optional: the linearized twin's, ...)."""
    return STEP_FIELDS + schema.optional("steps", static)


def layer_fields(static: Static) -> tuple[str, ...]:
    """LAYER_FIELDS and the optional layers columns of `static` (`step_fields`)."""
    return LAYER_FIELDS + schema.optional("layers", static)


KERNEL_PARAMS = ("du", "zou", "ntk")  # the parameterizations with an analytic kernel (mlp)


def kernel_gd(static: Static) -> bool:
    """Whether `static`'s runs follow an infinite-width trajectory (infinite_width; THEORY.md
    section 10): kernel GD with the mlp's analytic kernel H^inf, which exists for the mlp
    under du, zou or ntk, squared loss, full-batch GD without momentum."""
    return bool(static.infinite_width and static.arch == "mlp"
                and static.param in KERNEL_PARAMS and static.loss == "squared"
                and static.optimizer == "gd" and not static.momentum)


def takes_h_inf(static: Static) -> bool:
    """Whether `static`'s programs take H^inf (trainstate.Data.H_inf): for the Gram matrix's
    distance to it (Gram tracking of the mlp) or for the infinite-width trajectory."""
    return bool(static.gram_every and static.arch == "mlp") or kernel_gd(static)


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
    program. What init reads of a field is its metadata["program"] (`static_class`):
    a CHUNK field is set to its default (batch_size, which has none, to n), a NONZERO
    one to 0 or 1. tests/test_train.py varies every such field and checks that init
    gives the same state."""
    def one_value(f: dataclasses.Field) -> Any:
        if f.metadata["program"] == config.NONZERO:
            return type(getattr(static, f.name))(bool(getattr(static, f.name)))
        return static.n if f.default is dataclasses.MISSING else f.default

    return dataclasses.replace(static, **{f.name: one_value(f) for f in dataclasses.fields(static)
                                          if f.metadata["program"] != config.INIT})

