"""Grid -> shape groups -> batches of networks -> chunks of recorded steps.

Runs that share a `train.Static` (width, depth, n, batch size, loss,
optimizer, parameterization and the sweep's numerics) share one compiled
program. A group larger than the memory budget allows is split into batches
of equal size (the last one padded with copies of a real run, whose output is
dropped), so each shape still compiles once. Small widths are never padded up
to large ones.

How much memory a batch needs comes from `measure(static, size)`: the engine
compiles the batch's programs and reads XLA's memory analysis. Without it
(tests, quick looks) an analytic estimate, `bytes_per_network`, stands in.
A resumed or multi-process sweep rebuilds the plan from the batch sizes in
its manifest (`groups`), so it never depends on re-measuring.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence

import jax

from overparam import config as config_lib
from overparam import train


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


def bytes_per_network(static: train.Static) -> int:
    """A generous estimate of one network's live device memory in a chunk."""
    itemsize = 8 if static.dtype == "float64" else 4
    m, L = static.width, static.depth
    params = m * static.d + (L - 1) * m * m + m
    copies = 6 if static.momentum else 5   # W(0), D, gradient, update, new D (+ momentum)
    activations = 4 * static.n * m * L     # z, relu(z), their cotangents
    patterns = static.n * m * L            # bool, 1 byte
    records = static.chunk_records * (5 + 4 * L) + static.n * (static.d + 2)
    test = static.n_test * (static.d + 2 + 2 * m * L)  # X_test, y_test, f0_test, forward
    gram = 3 * static.n * static.n if static.gram_every else 0  # H(0), H^inf, H(t)
    # Lanczos's vectors (three, and the Ritz vector), its warm start and the Hessian-vector
    # product's tangents.
    lanczos = 8 * params if static.sharpness_every else 0
    return ((copies * params + activations + records + test + gram + lanczos) * itemsize
            + patterns)


MAX_NETWORKS = 1_000_000  # per sweep: the host holds one Run and one runs.parquet row each


def cache_group_size(static: train.Static, cache_bytes: int) -> int:
    """Networks whose activations (one n x width array) fill `cache_bytes` (at least 1),
    0 for none: a batch runs its chunk as groups of that many networks, one after
    the other (train.chunk_batch), so that on a CPU a group's arrays stay in the
    caches from step to step. benchmarks/cache_groups.py measured 4 MiB best."""
    if not cache_bytes:
        return 0
    itemsize = 8 if static.dtype == "float64" else 4
    positions = static.d if static.arch in config_lib.CONV_ARCHS else 1  # an image's pixels
    return max(1, cache_bytes // (static.n * static.width * positions * itemsize))


def num_networks(sweep: config_lib.Sweep) -> int:
    """How many networks `config_lib.expand(sweep)` gives, without expanding it."""
    per_seed_n = (len(sweep.widths) * len(sweep.depths) * len(sweep.param) * len(sweep.loss)
                  * len(sweep.lr) * len(sweep.output_scale) * len(sweep.arch))
    optimizers = sum(len(sweep.batch_size) if o == "sgd" else 1 for o in sweep.optimizer)
    return (sweep.num_seeds * len(sweep.n) * len(config_lib.tasks(sweep)) * per_seed_n
            * optimizers)


def _gib(nbytes: float) -> str:
    """1.5 GiB, 12.0 TiB, 3.1 PiB..."""
    units = ("GiB", "TiB", "PiB", "EiB")
    k = min(max(int(math.log(max(nbytes, 1), 1024)) - 3, 0), len(units) - 1)
    return f"{nbytes / 1024 ** (k + 3):,.1f} {units[k]}"


def check_resources(sweep: config_lib.Sweep, *, device_bytes: int | None = None,
                    host_bytes: int | None = None) -> None:
    """Refuses, before anything is allocated, a sweep this machine cannot hold.

    ConfigError naming the field, with the size it would need: more networks
    than MAX_NETWORKS; one network (the widest, deepest, largest n) larger than
    a whole device (`device_bytes`, default the first local device's memory, or
    the RAM on the CPU); one training set with its kernel H^inf (computed on
    the host in float64 for lambda_0) larger than half the RAM (`host_bytes`).
    """
    count = num_networks(sweep)
    if count > MAX_NETWORKS:
        sizes = {"num_seeds": sweep.num_seeds, "widths": len(sweep.widths),
                 "depths": len(sweep.depths), "n": len(sweep.n), "lr": len(sweep.lr),
                 "loss": len(sweep.loss), "param": len(sweep.param),
                 "output_scale": len(sweep.output_scale), "arch": len(sweep.arch),
                 "digits_task": len(config_lib.tasks(sweep)),
                 "batch_size": len(sweep.batch_size), "optimizer": len(sweep.optimizer)}
        field = max(sizes, key=sizes.get)
        raise config_lib.ConfigError(field, f"the grid has {count:,} networks, more than the "
                                     f"{MAX_NETWORKS:,} a sweep may have (its runs table alone "
                                     f"would take ~{_gib(count * 1024)} of host memory); split "
                                     "it into several sweeps")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if device_bytes is None:
        device_bytes = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit", ram)
    host_bytes = ram if host_bytes is None else host_bytes
    n, itemsize = max(sweep.n), 8 if sweep.dtype == "float64" else 4
    data = n * (sweep.d + 1) * itemsize + 3 * n * n * 8  # X, y; H^inf and its eigensolver
    if data > host_bytes / 2:
        raise config_lib.ConfigError("n", f"n={n:,} with d={sweep.d:,} needs ~{_gib(data)} of "
                                     "host memory for one training set and its kernel H^inf; "
                                     f"this machine has {_gib(host_bytes)}")
    largest = train.Static(width=max(sweep.widths), depth=max(sweep.depths), n=n, d=sweep.d,
                           batch_size=n, loss="squared", optimizer="gd", param="du",
                           momentum=sweep.momentum, dtype=sweep.dtype,
                           gram_every=sweep.gram_every, chunk_records=1,
                           sharpness_every=sweep.sharpness_every,
                           sharpness_iters=sweep.sharpness_iters)
    need = bytes_per_network(largest)
    if need > device_bytes:
        field = "widths" if largest.width * largest.depth > n else "n"
        raise config_lib.ConfigError(field, f"one network of width {largest.width:,}, depth "
                                     f"{largest.depth} on n={n:,} points needs ~{_gib(need)} of "
                                     f"device memory; the device has {_gib(device_bytes)}")


def step_flops(static: train.Static) -> int:
    """FLOPs of one training step of one network (forward and backward over its batch): of
    the MLP's matrices, or of 3x3 convolutions at each of an image's d positions (cnn,
    resnet; a flax module counts as the MLP of its width and depth)."""
    m, L = static.width, static.depth
    if static.arch in config_lib.CONV_ARCHS:
        return 6 * static.batch_size * (static.d * 9 * (m + (L - 1) * m * m) + m)
    return 6 * static.batch_size * (static.d * m + (L - 1) * m * m + m)


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
    num_chunks = math.ceil(num_records / target)
    return num_records, -(-num_records // (num_chunks * period)) * period, num_chunks


def record_period(sweep: config_lib.Sweep) -> int:
    """`train.record_period` of the sweep: records from one Gram-and-sharpness record to
    the next (1 without either)."""
    return train.record_period(sweep.record_every, sweep.gram_every, sweep.sharpness_every)


DEVICE_MEMORY_SHARE = 0.6  # of the accelerator's free memory (of RAM on the CPU: half that)

Measure = Callable[[train.Static, int], int]  # (shape, batch size) -> peak bytes per device


def device_memory_budget_mb() -> float:
    """A memory budget for one program on each local device: a share of its free memory.

    On the CPU, where devices share the RAM, the share of RAM is split among them.
    """
    devices = jax.local_devices()
    stats = devices[0].memory_stats() or {}
    if "bytes_limit" in stats:
        free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
        return DEVICE_MEMORY_SHARE * free / 2**20
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return DEVICE_MEMORY_SHARE / 2 * ram / len(devices) / 2**20


def _round_up(x: int, multiple_of: int) -> int:
    return math.ceil(x / multiple_of) * multiple_of


def _equal_batches(count: int, fit: int, multiple_of: int) -> int:
    """The size of equal batches (multiples of `multiple_of`) of at most `fit` for `count`."""
    fit = max(multiple_of, fit // multiple_of * multiple_of)
    return _round_up(math.ceil(count / math.ceil(count / fit)), multiple_of)


def _fit_measured(static: train.Static, count: int, budget: int, multiple_of: int,
                  measure: Measure, cap: int) -> tuple[int, int]:
    """(batch size, its measured bytes) for `count` networks of one shape.

    Starts from one batch of all of them and shrinks it, by the measured bytes
    per network, until it fits. Memory is close to linear in the batch size
    (everything but the step counter has a networks axis), so this takes one
    measurement when the group fits and usually two when it is split. Each
    size is measured with the program it runs (`with_cache_group`).
    """
    size = _round_up(count, multiple_of)
    while True:
        need = measure(with_cache_group(static, size, cap), size)
        if need <= budget or size == multiple_of:
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
              cache_bytes: int = 0, fixed_loops: bool = False) -> Plan:
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
    fixed_loops: the programs are the accelerators' (`train.Static.fixed_loops`).
    """
    runs = config_lib.expand(sweep) if runs is None else runs
    num_records, chunk_records, num_chunks = chunking(sweep.steps, sweep.record_every,
                                                      sweep.chunk_steps, record_period(sweep))
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
            size, need = _fit_measured(static, len(group), budget, step, measure, cap)
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
