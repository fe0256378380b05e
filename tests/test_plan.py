"""Tests for overparam.plan: chunking of recorded steps and grouping runs into batches.

A plan must compile one program per shape (lr and seed never split a group),
train every run exactly once, pad only with copies of runs of the same shape,
split a group that exceeds the memory budget into equal batches, round batch
sizes to a multiple of the device count, and never pad small widths up to
large ones.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overparam import config as config_lib
from overparam import initial, trainstate
from overparam import plan as plan_lib
from overparam.plan import memory as plan_memory

SHAPE = ("width", "depth", "n", "batch_size", "loss", "optimizer", "param")


def _sweep(**overrides):
    base = dict(widths=(8, 16), depths=(1,), num_seeds=3, n=(8,), d=4, lr=(0.1, 0.5),
                steps=6, chunk_steps=4)
    return config_lib.validate({**base, **overrides})


def _check_chunking(steps, record_every, chunk_steps, period=1):
    num_records, chunk_records, num_chunks = plan_lib.chunking(steps, record_every,
                                                               chunk_steps, period)
    assert num_records == steps // record_every + 1
    assert chunk_records >= 1 and num_chunks >= 1
    assert chunk_records * num_chunks >= num_records
    assert chunk_records * num_chunks - num_records < num_chunks * period
    assert chunk_records % period == 0  # every chunk starts a period (fixed_loops)
    # A chunk is never longer than asked for (at least one record, or one period).
    assert chunk_records <= max(period, chunk_steps // record_every)


@pytest.mark.parametrize("steps, record_every, chunk_steps, expected", [
    (6, 1, 4, (7, 4, 2)),
    (200, 1, 100, (201, 67, 3)),
    (10, 5, 100, (3, 3, 1)),      # chunk_steps > steps: one chunk
    (10, 1, 1000, (11, 11, 1)),
    (10, 2, 3, (6, 1, 6)),        # chunk shorter than record_every: one record a chunk
    (1, 1, 1, (2, 1, 2)),
    (12, 3, 6, (5, 2, 3)),
])
def test_chunking_table(steps, record_every, chunk_steps, expected):
    assert plan_lib.chunking(steps, record_every, chunk_steps) == expected
    _check_chunking(steps, record_every, chunk_steps)


@pytest.mark.parametrize("steps,record_every,chunk_steps,period,expected", [
    (200, 1, 100, 10, (201, 70, 3)),   # the default sweep: Gram every 10 steps
    (500, 2, 100, 25, (251, 50, 6)),   # cnn_digits: Gram every 50 steps, records every 2
    (100, 1, 20, 50, (101, 50, 3)),    # a period longer than chunk_steps: one period
    (12, 1, 5, 1, (13, 5, 3)),
])
def test_chunks_hold_whole_periods(steps, record_every, chunk_steps, period, expected):
    """period: the records of one Gram and sharpness period (plan.record_period); each
    chunk starts one, so that the accelerators' programs find those records at static
    positions (train.Static.fixed_loops)."""
    assert plan_lib.chunking(steps, record_every, chunk_steps, period) == expected
    _check_chunking(steps, record_every, chunk_steps, period)


def test_only_the_accelerators_chunks_are_whole_periods():
    """The CPU's chunks are what they were (67 records for the default sweep); an
    accelerator's (fixed_loops) are whole periods of its Gram records (70)."""
    sweep = _sweep(steps=200, chunk_steps=100, gram_every=10, widths=(8,), lr=(0.1,))
    cpu = plan_lib.make_plan(sweep, budget_mb=64)
    accelerator = plan_lib.make_plan(sweep, budget_mb=64, fixed_loops=True)
    assert (cpu.chunk_records, cpu.num_chunks) == (67, 3)
    assert (accelerator.chunk_records, accelerator.num_chunks) == (70, 3)
    assert {b.static.fixed_loops for b in cpu.batches} == {False}
    assert {b.static.fixed_loops for b in accelerator.batches} == {True}
    _check_plan(sweep, cpu)


@settings(max_examples=50, deadline=None)
@given(steps=st.integers(1, 500), record_every=st.integers(1, 20),
       chunk_steps=st.integers(1, 600), period=st.sampled_from([1, 1, 2, 3, 10, 60]))
def test_chunking_properties(steps, record_every, chunk_steps, period):
    steps = steps * record_every  # record_every divides steps (as validate requires)
    _check_chunking(steps, record_every, chunk_steps, period)


def _check_plan(sweep, plan, runs=None):
    """Invariants every plan must satisfy."""
    runs = config_lib.expand(sweep) if runs is None else runs
    real = [r for b in plan.batches for r in b.runs[:b.num_real]]
    assert sorted(r.run_id for r in real) == sorted(r.run_id for r in runs)
    assert len(real) == len(runs) == plan.num_runs
    for i, b in enumerate(plan.batches):
        assert b.index == i
        assert 1 <= b.num_real <= b.size
        # Every network in a batch, padding included, has the batch's shape.
        for r in b.runs:
            assert plan_lib.static_for(sweep, r, plan.chunk_records) == dataclasses.replace(
                b.static, cache_group=0)
        group = b.static.cache_group
        assert group == 0 or (group < b.size and b.size % group == 0)
        # Padding copies a real run of this batch.
        real_ids = {r.run_id for r in b.runs[:b.num_real]}
        assert all(r.run_id in real_ids for r in b.runs[b.num_real:])
    assert (plan.num_records, plan.chunk_records, plan.num_chunks) == plan_lib.sweep_chunking(
        sweep, plan.batches[0].static.fixed_loops)


def test_one_program_per_shape_lr_and_seed_do_not_split():
    sweep = _sweep(widths=(8, 16), depths=(1, 2), lr=(0.1, 0.2, 0.3), num_seeds=4)
    runs = config_lib.expand(sweep)
    plan = plan_lib.make_plan(sweep)
    _check_plan(sweep, plan, runs)
    shapes = {tuple(getattr(r, k) for k in SHAPE) for r in runs}
    assert len(shapes) == 4
    assert plan.num_programs == len(shapes)
    assert len(plan.batches) == len(shapes)  # large budget: one batch per shape
    for b in plan.batches:
        assert b.num_real == b.size == 4 * 3
        assert len({r.lr for r in b.runs}) == 3 and len({r.seed for r in b.runs}) == 4


def test_every_swept_shape_field_splits_groups():
    sweep = _sweep(widths=(8,), n=(8, 12), loss=("hinge", "logistic"), labels="random_sign",
                   optimizer=("gd", "sgd"), batch_size=(2, 4), param=("du", "ntk"),
                   num_seeds=2, lr=(0.1, 0.2))
    runs = config_lib.expand(sweep)
    plan = plan_lib.make_plan(sweep)
    _check_plan(sweep, plan, runs)
    shapes = collections.Counter(tuple(getattr(r, k) for k in SHAPE) for r in runs)
    # n (2) x loss (2) x param (2) x (gd + sgd with 2 batch sizes = 3)
    assert len(shapes) == 2 * 2 * 2 * 3
    assert plan.num_programs == len(shapes)
    for b in plan.batches:
        s = b.static
        assert shapes[(s.width, s.depth, s.n, s.batch_size, s.loss, s.optimizer,
                       s.param)] == b.num_real


def test_plan_of_given_runs():
    sweep = _sweep()
    runs = config_lib.expand(sweep)[::3]
    plan = plan_lib.make_plan(sweep, runs)
    _check_plan(sweep, plan, runs)


def _split_sweep(**overrides):
    """A sweep where one width-256 network takes about a third of a 1 MiB budget."""
    return _sweep(**{**dict(widths=(256,), n=(64,), d=16, num_seeds=7, lr=(0.1,),
                            memory_budget_mb=1), **overrides})


def test_tiny_budget_splits_group_into_equal_batches():
    sweep = _split_sweep()
    plan = plan_lib.make_plan(sweep)
    _check_plan(sweep, plan)
    per_net = plan_lib.bytes_per_network(plan.batches[0].static)
    fit = 2**20 // per_net
    assert 2 <= fit < 7, "test setup: the budget must fit a few networks, not all"
    assert plan.num_programs == 1
    sizes = {b.size for b in plan.batches}
    assert len(sizes) == 1
    size = sizes.pop()
    assert len(plan.batches) == math.ceil(7 / size) > 1
    assert size <= fit
    assert size * per_net <= 2**20
    assert sum(b.size - b.num_real for b in plan.batches) < size


def test_budget_smaller_than_one_network_gives_batches_of_one():
    sweep = _sweep(widths=(2048,), n=(64,), d=16, num_seeds=3, lr=(0.1,),
                   memory_budget_mb=1)
    plan = plan_lib.make_plan(sweep)
    _check_plan(sweep, plan)
    assert plan_lib.bytes_per_network(plan.batches[0].static) > 2**20
    assert [b.size for b in plan.batches] == [1, 1, 1]


@pytest.mark.parametrize("multiple_of", [1, 2, 4, 8])
@pytest.mark.parametrize("budget_mb", [1, 2048])
def test_multiple_of_rounds_batch_sizes(multiple_of, budget_mb):
    sweep = _split_sweep(memory_budget_mb=budget_mb)
    plan = plan_lib.make_plan(sweep, multiple_of=multiple_of)
    _check_plan(sweep, plan)
    sizes = {b.size for b in plan.batches}
    assert len(sizes) == 1
    size = sizes.pop()
    assert size % multiple_of == 0
    assert sum(b.size - b.num_real for b in plan.batches) < size
    if budget_mb == 2048:
        assert len(plan.batches) == 1
        assert plan.batches[0].size == math.ceil(7 / multiple_of) * multiple_of


def test_small_widths_never_padded_to_large():
    sweep = _sweep(widths=(8, 256, 2048), n=(64,), d=16, num_seeds=5, lr=(0.1,),
                   memory_budget_mb=1)
    plan = plan_lib.make_plan(sweep, multiple_of=2)
    _check_plan(sweep, plan)
    by_width = collections.defaultdict(list)
    for b in plan.batches:
        assert len({r.width for r in b.runs}) == 1
        assert b.static.width == b.runs[0].width
        by_width[b.static.width].append(b)
    assert set(by_width) == {8, 256, 2048}
    assert len(by_width[8]) == 1          # small networks all fit in one batch
    assert len(by_width[2048]) >= 3       # large ones are split
    for batches in by_width.values():
        assert len({b.size for b in batches}) == 1


def test_bytes_per_network_grows_with_shape():
    sweep = _sweep()
    run = config_lib.expand(sweep)[0]
    s = plan_lib.static_for(sweep, run, 4)
    base = plan_lib.bytes_per_network(s)
    for field, value in [("width", 2 * s.width), ("depth", 2), ("n", 2 * s.n),
                         ("dtype", "float64"), ("momentum", 0.9), ("chunk_records", 400)]:
        assert plan_lib.bytes_per_network(dataclasses.replace(s, **{field: value})) > base


def test_describe_mentions_every_batch():
    sweep = _sweep(widths=(8, 256, 2048), n=(64,), d=16, num_seeds=5, lr=(0.1,),
                   memory_budget_mb=1)
    plan = plan_lib.make_plan(sweep)
    text = plan_lib.describe(plan)
    lines = text.splitlines()
    assert len(lines) == 1 + len(plan.batches)
    assert f"{plan.num_runs} networks" in lines[0]
    assert f"{plan.num_programs} programs" in lines[0]
    for b, line in zip(plan.batches, lines[1:], strict=True):
        assert f"batch {b.index}:" in line
        assert f"{b.num_real} networks" in line
        assert f"width={b.static.width}" in line


class _Linear:
    """A fake measurement: fixed + per_net * size bytes; records the sizes asked for."""

    def __init__(self, fixed, per_net):
        self.fixed, self.per_net, self.asked = fixed, per_net, []

    def __call__(self, static, size):
        self.asked.append(size)
        return self.fixed + self.per_net * size


def test_measured_group_that_fits_is_one_batch_measured_once():
    sweep = _sweep(widths=(8,), num_seeds=10, lr=(0.1,), memory_budget_mb=1)
    measure = _Linear(1000, 2000)
    plan = plan_lib.make_plan(sweep, measure=measure)
    _check_plan(sweep, plan)
    assert measure.asked == [10]
    (b,) = plan.batches
    assert b.size == 10 and b.measured and b.memory_bytes == 1000 + 2000 * 10


@pytest.mark.parametrize("multiple_of", [1, 2, 4])
@pytest.mark.parametrize("fixed", [0, 50_000])
def test_measured_group_is_split_into_equal_batches_under_the_budget(multiple_of, fixed):
    sweep = _sweep(widths=(8,), num_seeds=37, lr=(0.1,), memory_budget_mb=1)
    measure = _Linear(fixed, 100_000)   # 10 networks per MiB at most
    plan = plan_lib.make_plan(sweep, measure=measure, multiple_of=multiple_of)
    _check_plan(sweep, plan)
    sizes = {b.size for b in plan.batches}
    assert len(sizes) == 1
    size = sizes.pop()
    assert size % multiple_of == 0
    assert fixed + 100_000 * size <= 2**20
    assert all(b.memory_bytes == fixed + 100_000 * size for b in plan.batches)
    assert sum(b.size - b.num_real for b in plan.batches) < size
    assert len(measure.asked) <= 3
    # No fewer batches were possible at this size limit.
    fit = (2**20 - fixed) // 100_000 // multiple_of * multiple_of
    assert len(plan.batches) == math.ceil(37 / fit)


def test_measured_network_over_the_budget_runs_alone_and_says_so():
    sweep = _sweep(widths=(8,), num_seeds=3, lr=(0.1,), memory_budget_mb=1)
    plan = plan_lib.make_plan(sweep, measure=_Linear(0, 2**21))
    assert [b.size for b in plan.batches] == [1, 1, 1]
    assert all("OVER THE BUDGET" in line for line in plan_lib.describe(plan).splitlines()[1:])


def test_plan_rebuilt_from_its_groups_is_the_same_plan():
    sweep = _sweep(widths=(8, 16, 32), num_seeds=9, lr=(0.1,), memory_budget_mb=1)
    plan = plan_lib.make_plan(sweep, measure=_Linear(0, 300_000), multiple_of=2)
    rebuilt = plan_lib.make_plan(sweep, groups=plan.groups, budget_mb=plan.budget_mb,
                                 multiple_of=2)
    assert rebuilt == plan
    with pytest.raises(ValueError, match="groups"):
        plan_lib.make_plan(sweep, groups=plan.groups[:1])


# ---------------------------------------------------------------- cache groups

def test_cache_group_size_fills_the_bytes_with_one_activation_per_network():
    sweep = _sweep(widths=(1024,), n=(128,), d=32, num_seeds=1, lr=(0.1,))
    static = plan_lib.static_for(sweep, config_lib.expand(sweep)[0], 4)
    assert plan_lib.cache_group_size(static, 0) == 0
    assert plan_lib.cache_group_size(static, 4 * 2**20) == 8      # 128 x 1024 x 4 B = 512 KiB
    assert plan_lib.cache_group_size(static, 2**10) == 1           # at least one network
    wide = dataclasses.replace(static, dtype="float64")
    assert plan_lib.cache_group_size(wide, 4 * 2**20) == 4


@pytest.mark.parametrize("measured", [False, True])
def test_batches_larger_than_a_cache_group_run_in_groups_padded_to_a_multiple(measured):
    # widths 64 and 1024 at n = 128 with 4 MiB: groups of 128 and of 8 networks.
    sweep = _sweep(widths=(64, 1024), n=(128,), d=32, num_seeds=20, lr=(0.1,),
                   memory_budget_mb=1e4)
    measure = _Linear(0, 1000) if measured else None
    plan = plan_lib.make_plan(sweep, measure=measure, cache_bytes=4 * 2**20)
    _check_plan(sweep, plan)
    narrow, wide = plan.batches
    assert (narrow.size, narrow.static.cache_group) == (20, 0)     # one group: none
    assert (wide.size, wide.num_real, wide.static.cache_group) == (24, 20, 8)
    if measured:  # the program measured is the one that runs: 24 networks in groups of 8
        assert measure.asked == [20, 24]
    assert "in groups of 8" in plan_lib.describe(plan).splitlines()[2]
    assert plan_lib.make_plan(sweep).batches[1].static.cache_group == 0  # no cache_bytes


def test_cache_groups_with_a_split_batch_and_devices_and_rebuilt_from_groups():
    sweep = _sweep(widths=(1024,), n=(128,), d=32, num_seeds=37, lr=(0.1,), memory_budget_mb=1)
    plan = plan_lib.make_plan(sweep, measure=_Linear(0, 2**20 // 14), multiple_of=2,
                              cache_bytes=4 * 2**20)
    _check_plan(sweep, plan)
    # 14 fit the budget: batches of 8 (multiples of lcm(2, 8)), each one group.
    assert {b.size for b in plan.batches} == {8} and len(plan.batches) == 5
    assert all(b.static.cache_group == 0 for b in plan.batches)
    plan = plan_lib.make_plan(sweep, measure=_Linear(0, 2**20 // 40), cache_bytes=4 * 2**20)
    assert [b.size for b in plan.batches] == [40] and plan.batches[0].static.cache_group == 8
    rebuilt = plan_lib.make_plan(sweep, groups=plan.groups, budget_mb=plan.budget_mb,
                                 cache_bytes=4 * 2**20)
    assert rebuilt == plan
    # A manifest whose batch is not a multiple of the group (an older plan): no groups.
    old = [{**plan.groups[0], "size": 37}]
    assert plan_lib.make_plan(sweep, groups=old, budget_mb=1,
                              cache_bytes=4 * 2**20).batches[0].static.cache_group == 0


# ------------------------------------------------------------------ the budget on an accelerator

GIB = 2**30


class _Device:
    """A device as the budget sees it: its platform and `memory_stats()`."""

    def __init__(self, platform, stats, free=None, hardware_id=0):
        self.platform, self.stats, self.free = platform, stats, free
        self.local_hardware_id = hardware_id

    def memory_stats(self):
        return self.stats


def _on(monkeypatch, *devices):
    """The budget's view of the machine: these local devices, each GPU's driver telling
    its `free` memory."""
    monkeypatch.setattr(plan_memory.jax, "local_devices", lambda: list(devices))
    monkeypatch.setattr(plan_memory, "gpu_free_bytes", lambda d: d.free)


def _fewest_equal_batches(count, fit):
    """The batch sizes of the fewest equal batches of at most `fit` for `count` (slowly)."""
    k = next(k for k in range(1, count + 1) if math.ceil(count / k) <= fit)
    size = math.ceil(count / k)
    return [size] * k


# An H100 (80 GiB) with JAX's allocator capped at 75% of it (XLA_CLIENT_MEM_FRACTION's default).
LIMIT = 60 * GIB
BUDGETS = {
    # overparam's default: memory taken as needed (XLA_PYTHON_CLIENT_PREALLOCATE=false)
    "on demand": (_Device("gpu", {"bytes_limit": LIMIT, "bytes_in_use": 0, "pool_bytes": 0},
                          free=79 * GIB), 0.6 * LIMIT),
    "on demand, 50 GiB held by another process": (
        _Device("gpu", {"bytes_limit": LIMIT, "bytes_in_use": 0, "pool_bytes": 0},
                free=29 * GIB), 0.6 * (28 * GIB)),
    "preallocated, another process holds the rest": (
        _Device("gpu", {"bytes_limit": LIMIT, "bytes_in_use": 0, "pool_bytes": LIMIT},
                free=1 * GIB), 0.6 * LIMIT),
    "this process holds 10 GiB of its 20": (
        _Device("gpu", {"bytes_limit": LIMIT, "bytes_in_use": 10 * GIB, "pool_bytes": 20 * GIB},
                free=59 * GIB), 0.6 * (50 * GIB)),
    "XLA_CLIENT_MEM_FRACTION=0.5": (
        _Device("gpu", {"bytes_limit": 40 * GIB, "bytes_in_use": 0, "pool_bytes": 0},
                free=79 * GIB), 0.6 * (40 * GIB)),
    "no bytes_limit (XLA_PYTHON_CLIENT_ALLOCATOR=platform)": (
        _Device("gpu", None, free=79 * GIB), 0.6 * (78 * GIB)),
    "a TPU": (_Device("tpu", {"bytes_limit": 16 * GIB, "bytes_in_use": GIB}), 0.6 * 15 * GIB),
    "a TPU with bytes_reservable_limit only": (
        _Device("tpu", {"bytes_reservable_limit": 31 * GIB, "bytes_in_use": 0}), 0.6 * 31 * GIB),
}


@pytest.mark.parametrize("case", list(BUDGETS))
def test_the_device_capacity_is_the_allocators_cap_never_the_ram(monkeypatch, case):
    """check_resources's bound on one network: the cap where the device tells one, what it
    can still give where it tells none; above the budget, and never the host's RAM."""
    device, budget = BUDGETS[case]
    _on(monkeypatch, device)
    stats = device.stats or {}
    cap = stats.get("bytes_limit") or stats.get("bytes_reservable_limit") or 78 * GIB
    assert plan_lib.device_capacity() == cap >= budget


def test_an_accelerator_that_tells_no_capacity_is_an_error_naming_the_budget(monkeypatch):
    _on(monkeypatch, _Device("tpu", {}))
    with pytest.raises(config_lib.ConfigError, match="memory_budget_mb"):
        plan_lib.device_capacity()


@pytest.mark.parametrize("case", list(BUDGETS))
def test_the_budget_is_a_share_of_what_the_device_can_still_give(monkeypatch, case):
    """And the plan fits it: the fewest equal batches of the networks it holds."""
    device, budget = BUDGETS[case]
    _on(monkeypatch, device)
    assert plan_lib.device_memory_budget_mb() == pytest.approx(budget / 2**20)
    sweep = _sweep(widths=(4096,), n=(1000,), d=1000, num_seeds=400, lr=(0.1,), steps=100,
                   chunk_steps=100)
    plan = plan_lib.make_plan(sweep)
    _check_plan(sweep, plan)
    per_network = plan_lib.bytes_per_network(plan.batches[0].static)
    assert [b.size for b in plan.batches] == _fewest_equal_batches(
        400, int(budget // per_network))


def test_the_budget_is_the_least_of_the_local_gpus(monkeypatch):
    stats = {"bytes_limit": LIMIT, "bytes_in_use": 0, "pool_bytes": 0}
    _on(monkeypatch, _Device("gpu", stats, 79 * GIB), _Device("gpu", stats, 11 * GIB, 1))
    assert plan_lib.device_memory_budget_mb() == pytest.approx(0.6 * 10 * 1024)


@pytest.mark.parametrize("device", [_Device("gpu", None), _Device("gpu", {"bytes_in_use": 0}),
                                    _Device("tpu", {})])
def test_an_accelerator_that_tells_no_memory_is_an_error_naming_the_budget(monkeypatch, device):
    """Not the host's RAM in its place, which may be larger than the device."""
    _on(monkeypatch, device)
    with pytest.raises(config_lib.ConfigError, match="^config.memory_budget_mb: the (gpu|tpu) "):
        plan_lib.device_memory_budget_mb()


class _Driver:
    """libcuda as gpu_free_bytes calls it: every call recorded, `fail` returning an error."""

    def __init__(self, free, fail=None):
        self.free, self.fail, self.calls = free, fail, []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append(name)
            if name == "cuMemGetInfo_v2":
                args[0]._obj.value = self.free
            return 999 if name == self.fail else 0
        return call


def test_gpu_free_memory_comes_from_the_driver_in_the_primary_context_left_as_found():
    device = _Device("gpu", {}, hardware_id=3)
    driver = _Driver(7 * GIB)
    assert plan_lib.gpu_free_bytes(device, driver) == 7 * GIB
    assert driver.calls == ["cuInit", "cuDeviceGet", "cuDevicePrimaryCtxRetain",
                            "cuCtxPushCurrent_v2", "cuMemGetInfo_v2", "cuCtxPopCurrent_v2",
                            "cuDevicePrimaryCtxRelease_v2"]
    failing = _Driver(7 * GIB, fail="cuMemGetInfo_v2")
    assert plan_lib.gpu_free_bytes(device, failing) is None
    assert failing.calls[-2:] == ["cuCtxPopCurrent_v2", "cuDevicePrimaryCtxRelease_v2"]
    assert plan_lib.gpu_free_bytes(_Device("gpu", {}, hardware_id=None), driver) is None



def test_without_a_cuda_driver_the_gpu_free_memory_is_unknown(monkeypatch):
    def no_driver(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(plan_memory.ctypes, "CDLL", no_driver)
    assert plan_lib.gpu_free_bytes(_Device("gpu", {})) is None


@pytest.mark.parametrize("truth", [0.5, 2.0])   # the estimate: generous, or too small
def test_on_a_gpu_no_batch_is_compiled_before_an_estimate_or_measurement_says_it_fits(truth):
    """XLA:GPU autotunes on real buffers while it compiles: measuring starts from the batch
    that the estimate fits (not the whole group) and grows once, by the measurement."""
    sweep = _sweep(widths=(64,), num_seeds=200, lr=(0.1,), memory_budget_mb=1)
    static = plan_lib.static_for(sweep, config_lib.expand(sweep)[0], 7)
    per_net = int(truth * plan_lib.bytes_per_network(static))
    measure = _Linear(0, per_net)
    plan = plan_lib.make_plan(sweep, measure=measure, compiling_allocates=True)
    _check_plan(sweep, plan)
    first = 2**20 // plan_lib.bytes_per_network(static)
    assert 1 < first < 200, "test setup: the estimate must split the group"
    assert measure.asked[0] == _fewest_equal_batches(200, first)[0]
    assert 200 not in measure.asked and len(measure.asked) <= 3
    size = plan.batches[0].size
    assert size * per_net <= 2**20 and size == _fewest_equal_batches(200, 2**20 // per_net)[0]
    cpu = _Linear(0, per_net)
    plan_lib.make_plan(sweep, measure=cpu, compiling_allocates=False)
    assert cpu.asked[0] == 200


# ------------------------------------------------------------------ resources

# A machine, injected: check_resources then reads nothing of this one.
MACHINE = dict(device_bytes=8 * 2**30, host_bytes=16 * 2**30, disk_bytes=2**30, workers=4,
               devices=1, processes=1, cache_bytes=0)
AT = {k: v for k, v in MACHINE.items() if k not in ("host_bytes", "disk_bytes")}


def test_the_numeric_fields_are_every_field_of_numbers():
    assert set(plan_lib.numeric_fields()) == {
        "widths", "depths", "num_seeds", "seed", "n", "d", "n_test", "phi", "mu",
        "teacher_width", "lr", "batch_size", "output_scale", "momentum", "steps",
        "record_every", "chunk_steps", "power_tol", "power_max_iters", "regression_tol",
        "memory_budget_mb", "checkpoint_seconds", "gram_every", "sharpness_every",
        "sharpness_iters", "power_iters", "coord_steps"}


_ints = st.one_of(st.integers(-2, 70), st.integers(1, 130).map(lambda e: 3**e // 2**e),
                  st.integers(1, 400).map(lambda k: 10**k))
_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0.0, 1e-300, 0.5, 2.0, 1e300]))
_scalars = st.one_of(_ints, _floats)


@st.composite
def _numeric_overrides(draw):
    """A sweep in which every numeric field is used (zou's points, a teacher's labels, GD and
    SGD, sharpness on or off), with one to three numeric fields set to any number."""
    base = dict(widths=(8,), depths=(1,), num_seeds=2, n=(8,), d=4, steps=4, chunk_steps=4,
                dataset="zou", labels=draw(st.sampled_from(["teacher", "teacher_regression"])),
                optimizer=("gd", "sgd"), batch_size=(4,), param=("ntk",),
                loss=("squared",), sharpness_every=draw(st.sampled_from([0, 1])))
    fields = draw(st.lists(st.sampled_from(plan_lib.numeric_fields()), min_size=1, max_size=3,
                           unique=True))
    for field in fields:
        one = draw(_scalars)
        if field in config_lib.SWEPT:
            one = draw(st.one_of(st.just(one), st.lists(_scalars, min_size=1, max_size=2,
                                                        unique=True).map(tuple)))
        base[field] = one
    return base


_machines = st.fixed_dictionaries(dict(
    device_bytes=st.integers(20, 42).map(lambda e: 2**e),
    host_bytes=st.integers(28, 42).map(lambda e: 2**e),
    disk_bytes=st.integers(20, 46).map(lambda e: 2**e),
    workers=st.integers(1, 64), devices=st.sampled_from([1, 2, 8]),
    processes=st.sampled_from([1, 4]), cache_bytes=st.sampled_from([0, 4 * 2**20])))


@settings(max_examples=300, deadline=None)
@given(cfg=_numeric_overrides(), machine=_machines)
def test_any_number_is_refused_in_one_line_or_the_sweep_fits_the_stated_bound(cfg, machine):
    """validate and check_resources (arithmetic: no training, nothing allocated) on any
    value of the numeric fields, on any machine: either a one-line ConfigError naming a
    field (never another exception), or the sweep's footprint fits the machine as
    check_resources' docstring states."""
    try:
        sweep = config_lib.validate(cfg)
        plan_lib.check_resources(sweep, **machine)
    except config_lib.ConfigError as e:
        message = str(e)
        assert "\n" not in message and e.field in config_lib.DEFAULTS, message
        assert message.startswith(f"config.{e.field}: "), message
        return
    fp = plan_lib.footprint(sweep, **{k: v for k, v in machine.items()
                                      if k not in ("host_bytes", "disk_bytes")})
    assert fp.networks <= plan_lib.MAX_NETWORKS
    assert fp.last_step <= plan_lib.STEP_LIMIT
    assert sweep.memory_budget_mb * 2**20 <= machine["device_bytes"]
    assert fp.device <= machine["device_bytes"]
    assert sum(fp.host.values()) <= plan_lib.HOST_SHARE * machine["host_bytes"]
    assert sum(fp.disk.values()) <= machine["disk_bytes"]


@st.composite
def _small_sweeps(draw):
    n = draw(st.lists(st.integers(2, 12), min_size=1, max_size=2, unique=True).map(tuple))
    steps = draw(st.integers(1, 30))
    labels = draw(st.sampled_from(["gaussian", "random_sign", "teacher"]))
    return dict(widths=draw(st.lists(st.integers(1, 16), min_size=1, max_size=2,
                                     unique=True).map(tuple)),
                depths=draw(st.lists(st.integers(1, 3), min_size=1, max_size=2,
                                     unique=True).map(tuple)),
                num_seeds=draw(st.integers(1, 3)), n=n, d=draw(st.integers(2, 6)),
                n_test=draw(st.integers(-1, 9)), labels=labels,
                loss=("squared", "hinge") if labels != "gaussian" else ("squared",),
                optimizer=("gd", "sgd"), batch_size=(min(n),), steps=steps,
                record_every=draw(st.sampled_from([r for r in (1, 2, 3) if steps % r == 0])),
                chunk_steps=draw(st.integers(1, 12)),
                dtype=draw(st.sampled_from(["float32", "float64"])))


@settings(max_examples=25, deadline=None)
@given(cfg=_small_sweeps())
def test_the_footprint_counts_the_grid_its_rows_and_its_data_as_the_engine_builds_them(cfg):
    """Against the slow references: the runs `expand` gives, the records of each, the
    chunks of a real plan, and the training and test sets `prepare` draws."""
    from overparam import prepare

    sweep = config_lib.validate(cfg)
    fp = plan_lib.footprint(sweep, **AT)
    runs = config_lib.expand(sweep)
    records = sweep.steps // sweep.record_every + 1
    assert fp.networks == len(runs)
    assert fp.rows == {"steps": len(runs) * records,
                       "layers": sum(r.depth for r in runs) * records}
    plan = plan_lib.make_plan(sweep, runs, budget_mb=1)
    assert fp.last_step == plan.num_chunks * plan.steps_per_chunk >= sweep.steps
    datasets, _ = prepare.make_datasets(sweep)
    kept = sum(a.nbytes for ds in datasets.values() for a in (ds.X, ds.y, ds.X_test, ds.y_test))
    assert kept <= fp.host["training and test sets"]
    assert plan.num_chunks * len(plan.batches) * 2 + len(datasets) + 1 <= (
        fp.host["the manifest"] // plan_lib.HOST_FILE_ENTRY)


@pytest.mark.parametrize("overrides", [
    dict(arch="mlp", param="du", depth=1),
    dict(arch="mlp", param="ntk", depth=3, momentum=0.9, sharpness_every=1, train_output=True),
    dict(arch="cnn", depth=2, dtype="float64"),
    dict(arch="resnet", depth=3, momentum=0.5, sharpness_every=1, train_output=True),
])
def test_state_bytes_bound_the_checkpointed_state(overrides):
    """The arrays `checkpoint.save` writes for one network (their shapes from
    jax.eval_shape of the init: nothing computed) fit `state_bytes`."""
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    from overparam import checkpoint, train

    static = train.Static(**{**dict(width=8, n=6, d=16, batch_size=6, loss="squared",
                                    optimizer="gd", param="ntk"), **overrides})
    dtype = jnp.float64 if static.dtype == "float64" else jnp.float32
    hyper = trainstate.RunScalars(
        *(jnp.asarray(v) for v in (np.uint32(1), np.uint32(2), np.uint32(3))),
        lr=jnp.float32(0.1), output_scale=jnp.float32(1))
    with jax.enable_x64(static.dtype == "float64"):
        state = jax.eval_shape(functools.partial(initial.init_single, static), hyper,
                               trainstate.Data(jax.ShapeDtypeStruct((static.n, static.d), dtype),
                                               None))
    leaves = jax.tree_util.tree_leaves(checkpoint.trained_part(state))
    real = sum(math.prod(a.shape) * a.dtype.itemsize for a in leaves)
    assert real <= plan_lib.state_bytes(static) <= 1.1 * real + 64


@pytest.mark.parametrize("overrides, field, kind", [
    (dict(n_test=10**9), "n_test", "device memory"),
    (dict(widths=(10**8,)), "widths", "device memory"),
    (dict(d=10**7), "d", "device memory"),
    (dict(sharpness_every=1, sharpness_iters=10**6), "sharpness_iters", "device memory"),
    (dict(chunk_steps=10**7, steps=10**7), "steps", "host memory"),
    (dict(teacher_width=10**9, labels="teacher_regression"), "teacher_width", "host memory"),
    (dict(n=(20_000,), n_test=0, widths=(8,)), "n", "host memory"),  # its kernels
    (dict(steps=5 * 10**6), "steps", "writes"),
    (dict(num_seeds=10**4, steps=2_000), "num_seeds", "writes"),
])
def test_a_size_beyond_the_machine_is_refused_naming_the_field_that_grows_it(overrides, field,
                                                                              kind):
    sweep = config_lib.validate({**dict(widths=(64,), num_seeds=2), **overrides})
    with pytest.raises(config_lib.ConfigError) as info:
        plan_lib.check_resources(sweep, **MACHINE)
    assert info.value.field == field and kind in str(info.value), str(info.value)


def test_the_step_counter_bounds_steps_and_a_budget_beyond_the_device_is_refused():
    with pytest.raises(config_lib.ConfigError, match="^config.steps: .*int32"):
        plan_lib.check_resources(config_lib.validate(dict(steps=2**31 - 2, record_every=1,
                                                          chunk_steps=100, widths=(8,))),
                                 **{**MACHINE, "disk_bytes": 2**80, "host_bytes": 2**80})
    with pytest.raises(config_lib.ConfigError, match="^config.memory_budget_mb: "):
        plan_lib.check_resources(config_lib.validate(dict(memory_budget_mb=2**14)),
                                 **{**MACHINE, "device_bytes": 2**30})


def test_every_shipped_sweep_fits_a_small_gpu_machine():
    """An H100 (80 GiB) with 128 GiB of RAM and 100 GiB of disk holds each of sweeps/*.py."""
    import importlib.util
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"sweep_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for arg in (None, "quick"):
            plan_lib.check_resources(config_lib.validate(module.get_config(arg)),
                                     device_bytes=80 * 2**30, host_bytes=128 * 2**30,
                                     disk_bytes=100 * 2**30, workers=16, devices=1,
                                     processes=1, cache_bytes=0)


def test_disk_room_is_the_free_space_and_what_out_holds(tmp_path):
    import shutil

    free = shutil.disk_usage(tmp_path).free
    assert abs(plan_lib.disk_room(tmp_path / "a" / "b") - free) < 2**24  # nearest ancestor
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "part").write_bytes(b"x" * 2**20)
    assert plan_lib.disk_room(tmp_path / "r") - shutil.disk_usage(tmp_path).free == 2**20
