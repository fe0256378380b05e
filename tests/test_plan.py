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
from overparam import plan as plan_lib

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
    assert (plan.num_records, plan.chunk_records, plan.num_chunks) == plan_lib.chunking(
        sweep.steps, sweep.record_every, sweep.chunk_steps, plan_lib.record_period(sweep))


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
