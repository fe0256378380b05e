"""Batch planning: grid -> shape groups -> batches of networks -> chunks of records.

Runs that share a `train.Static` (`static_for`: each of its fields from the
run's grid point, else from the sweep) share one compiled program. A group
larger than the memory budget allows is split into batches of equal size (the
last one padded with copies of a real run, whose output is dropped), so each
shape still compiles once. Small widths are never padded up to large ones.

How much memory a batch needs comes from `measure(static, size)`: the engine
compiles the batch's programs and reads XLA's memory analysis. Without it
(tests, quick looks) the analytic estimate, `sizes.bytes_per_network`, stands
in. On a GPU compiling takes memory too (XLA autotunes each GEMM on real
buffers), so there measuring starts from the batch that the estimate fits. The
budget (`memory.device_memory_budget_mb`) is a share of the memory that each
device can still give. A resumed or multi-process sweep rebuilds the plan from
the batch sizes in its manifest (`groups`), so it never depends on re-measuring.
Chunks are equal (`chunking`), of whole Gram-and-sharpness periods for the
accelerators' programs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax

from overparam import config as config_lib
from overparam import train
from overparam.plan.memory import device_memory_budget_mb
from overparam.plan.sizes import bytes_per_network, cache_group_size

Measure = Callable[[train.Static, int], int]  # (shape, batch size) -> peak bytes per device


@dataclasses.dataclass(frozen=True)
class Batch:
    """Networks trained together by one program. runs[:num_real] are real."""

    index: int
    static: train.Static
    runs: tuple[config_lib.Run, ...]
    num_real: int
    memory_bytes: int = 0   # peak device memory of its programs (per device), measured or estimated
    measured: bool = False  # memory_bytes is XLA's memory analysis, not the analytic estimate

    @property
    def size(self) -> int:
        return len(self.runs)


@dataclasses.dataclass(frozen=True)
class Plan:
    batches: tuple[Batch, ...]
    num_records: int    # steps / record_every + 1 (step 0 included)
    chunk_records: int  # records per compiled chunk
    num_chunks: int
    budget_mb: float    # device memory allowed per program
    multiple_of: int = 1  # batch sizes are multiples of it (the number of devices)
    record_every: int = 1

    @property
    def steps_per_chunk(self) -> int:
        """Training steps of one chunk (its records x record_every): after chunk c,
        every network of a batch is at step (c + 1) x steps_per_chunk."""
        return self.chunk_records * self.record_every

    @property
    def num_runs(self) -> int:
        return sum(b.num_real for b in self.batches)

    @property
    def num_programs(self) -> int:
        return len({b.static for b in self.batches})

    @property
    def groups(self) -> list[dict]:
        """Each shape group's batch size and memory, in group order: what `make_plan`
        takes back (`groups=`) to rebuild this plan without measuring."""
        first = {}
        for b in self.batches:
            first.setdefault(b.static, b)
        return [{"size": b.size, "memory_bytes": b.memory_bytes, "measured": b.measured}
                for b in first.values()]


def static_for(sweep: config_lib.Sweep, run: config_lib.Run, chunk_records: int,
               fixed_loops: bool = False) -> train.Static:
    """The program of `run`: each field of `train.Static` from the run's grid point
    where the run has it (width, n, loss, ...), else from the sweep field of that name;
    fixed_loops: the accelerators' variant (`train.Static`)."""
    names = {f.name for f in dataclasses.fields(train.Static)} - {"chunk_records", "cache_group",
                                                                  "fixed_loops"}
    return train.Static(chunk_records=chunk_records, fixed_loops=fixed_loops,
                        **{k: getattr(run if hasattr(run, k) else sweep, k) for k in names})


def chunking(steps: int, record_every: int, chunk_steps: int,
             period: int = 1) -> tuple[int, int, int]:
    """(num_records, chunk_records, num_chunks) with equal chunks and fewer than
    num_chunks x period spare records.

    period: chunk_records is a multiple of it (`record_period`: the records from one
    record that is both a Gram and a sharpness record to the next), so that every chunk
    starts where a period does and its Gram and sharpness records are at the same
    positions (what the accelerators' programs need: train.Static.fixed_loops). A chunk
    is at most chunk_steps long, or one period where that is longer.
    """
    num_records = steps // record_every + 1
    target = max(1, chunk_steps // record_every)
    target = max(period, target // period * period)
    num_chunks = -(-num_records // target)  # integer ceilings: exact for any size
    return num_records, -(-num_records // (num_chunks * period)) * period, num_chunks


def record_period(sweep: config_lib.Sweep) -> int:
    """`train.record_period` of the sweep: records from one Gram-and-sharpness record to
    the next (1 without either)."""
    return train.record_period(sweep.record_every, sweep.gram_every, sweep.sharpness_every)


def sweep_chunking(sweep: config_lib.Sweep, fixed_loops: bool) -> tuple[int, int, int]:
    """`chunking` of the sweep: (num_records, chunk_records, num_chunks); chunks of whole
    `record_period`s for the accelerators' programs (fixed_loops), else of any length (a
    Gram period longer than the run costs the CPU nothing)."""
    period = record_period(sweep) if fixed_loops else 1
    return chunking(sweep.steps, sweep.record_every, sweep.chunk_steps, period)


def _round_up(x: int, multiple_of: int) -> int:
    return math.ceil(x / multiple_of) * multiple_of


def _equal_batches(count: int, fit: int, multiple_of: int) -> int:
    """The size of equal batches (multiples of `multiple_of`) of at most `fit` for `count`."""
    fit = max(multiple_of, fit // multiple_of * multiple_of)
    return _round_up(math.ceil(count / math.ceil(count / fit)), multiple_of)


def _fit_measured(static: train.Static, count: int, budget: int, multiple_of: int,
                  measure: Measure, cap: int, first: int | None = None) -> tuple[int, int]:
    """(batch size, its measured bytes) for `count` networks of one shape.

    Starts from `first` (default: one batch of all of them) and shrinks it, by
    the measured bytes per network, until it fits. Memory is close to linear in
    the batch size (everything but the step counter has a networks axis), so
    this takes one measurement when the group fits and usually two when it is
    split. Started below the whole group, it grows once to the size that the
    measured bytes per network fit (kept if it fits). Each size is measured
    with the program it runs (`with_cache_group`).
    """
    whole = _round_up(count, multiple_of)
    size, may_grow, fitted = first or whole, bool(first) and first < whole, None
    while True:
        need = measure(with_cache_group(static, size, cap), size)
        if need <= budget:
            grown = min(_equal_batches(count, int(budget / (need / size)), multiple_of), whole)
            if not may_grow or grown <= size:
                return size, need
            fitted, may_grow, size = (size, need), False, grown
            continue
        if fitted is not None:  # the grown size did not fit after all
            return fitted
        if size == multiple_of:
            return size, need
        new = _equal_batches(count, int(budget / (need / size)), multiple_of)
        size = min(new, size - multiple_of)


def with_cache_group(static: train.Static, size: int, cap: int) -> train.Static:
    """The program of a batch of `size`: in groups of `cap` where it has several."""
    return dataclasses.replace(static, cache_group=cap) if cap and size > cap and size % cap == 0 \
        else static


def make_plan(sweep: config_lib.Sweep, runs: list[config_lib.Run] | None = None,
              *, multiple_of: int = 1, budget_mb: float | None = None,
              measure: Measure | None = None, groups: Sequence[dict] | None = None,
              cache_bytes: int = 0, compiling_allocates: bool | None = None,
              fixed_loops: bool = False) -> Plan:
    """Groups `runs` (default: all of the sweep) into batches that fit the memory budget.

    budget_mb: device memory per program and device; default
    sweep.memory_budget_mb, or `device_memory_budget_mb()` where that is 0.
    multiple_of: batch sizes are rounded up to it (the number of devices).
    measure: the peak bytes of a batch's programs (default: the analytic
    estimate). groups: each shape group's batch size and memory, as
    `Plan.groups` gives them; set, they are used as they are (a resumed sweep).
    A batch of `multiple_of` networks is the smallest there is, even if it
    needs more than the budget (`describe` says so). cache_bytes: where a shape
    has more networks than `cache_group_size` gives, its batches are multiples of
    that group (padded) and run group by group; 0 (the default): no groups.
    compiling_allocates: compiling a program takes device memory, as on a GPU
    (default: JAX runs on one), where XLA autotunes each GEMM on real buffers of
    its operands: then `measure` starts from the batch that the analytic
    estimate fits in the budget, not from the whole group.
    fixed_loops: the programs are the accelerators' (`train.Static.fixed_loops`).
    """
    runs = config_lib.expand(sweep) if runs is None else runs
    num_records, chunk_records, num_chunks = sweep_chunking(sweep, fixed_loops)
    by_shape: dict[train.Static, list[config_lib.Run]] = {}
    for run in runs:
        by_shape.setdefault(static_for(sweep, run, chunk_records, fixed_loops), []).append(run)
    if groups is not None and len(groups) != len(by_shape):
        raise ValueError(f"{len(groups)} groups given for {len(by_shape)} shapes")
    budget_mb = budget_mb or sweep.memory_budget_mb or device_memory_budget_mb()
    budget = int(budget_mb * 2**20)
    batches = []
    for g, (static, group) in enumerate(by_shape.items()):
        cap = cache_group_size(static, cache_bytes)
        step = math.lcm(multiple_of, cap) if cap and len(group) > cap else multiple_of
        if groups is not None:
            size, need, measured = (groups[g][k] for k in ("size", "memory_bytes", "measured"))
        elif measure is not None:
            if compiling_allocates is None:
                compiling_allocates = jax.default_backend() == "gpu"
            first = (min(_equal_batches(len(group), budget // bytes_per_network(static), step),
                         _round_up(len(group), step)) if compiling_allocates else None)
            size, need = _fit_measured(static, len(group), budget, step, measure, cap, first)
            measured = True
        else:
            size = _equal_batches(len(group), budget // bytes_per_network(static), step)
            need, measured = size * bytes_per_network(static), False
        static = with_cache_group(static, size, cap)
        for start in range(0, len(group), size):
            real = tuple(group[start:start + size])
            padded = real + (real[-1],) * (size - len(real))
            batches.append(Batch(index=len(batches), static=static, runs=padded,
                                 num_real=len(real), memory_bytes=need, measured=measured))
    return Plan(batches=tuple(batches), num_records=num_records, chunk_records=chunk_records,
                num_chunks=num_chunks, budget_mb=budget_mb, multiple_of=multiple_of,
                record_every=sweep.record_every)


def describe(plan: Plan) -> str:
    """A short table of the plan: one line per batch."""
    lines = [f"{plan.num_runs} networks, {plan.num_programs} programs, {len(plan.batches)} "
             f"batches, {plan.num_chunks} chunks of {plan.chunk_records} records, "
             f"memory budget {plan.budget_mb:,.0f} MiB per program"]
    for b in plan.batches:
        s = b.static
        mb = b.memory_bytes / 2**20
        how = "measured" if b.measured else "estimated"
        over = " OVER THE BUDGET" if mb > plan.budget_mb else ""
        lines.append(f"  batch {b.index}: {b.num_real} networks (+{b.size - b.num_real} pad) "
                     f"width={s.width} depth={s.depth} n={s.n} batch_size={s.batch_size} "
                     f"loss={s.loss} optimizer={s.optimizer} param={s.param} "
                     f"{mb:,.1f} MiB ({how}){over}"
                     + (f", in groups of {s.cache_group}" if s.cache_group else ""))
    return "\n".join(lines)
