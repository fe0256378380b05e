"""The planner's memory figures are XLA's analysis of the programs that then train."""

import jax
import pytest

import overparam
from overparam import config as config_lib
from overparam import engine
from overparam import plan as plan_lib
from overparam import programs as programs_lib


def _sweep(**overrides):
    base = dict(name="m", widths=(64,), depths=(1,), num_seeds=8, n=(32,), d=8, steps=4,
                chunk_steps=4, lr=(0.1,), gram_every=2)
    return config_lib.validate({**base, **overrides})


def _static(sweep):
    return plan_lib.static_for(sweep, config_lib.expand(sweep)[0],
                               plan_lib.sweep_chunking(sweep, fixed_loops=False)[1])


@pytest.mark.slow
def test_measured_memory_is_nearly_linear_in_the_batch_and_above_the_arrays():
    static = _static(_sweep())
    programs = programs_lib.Executables()
    b8, b16, b32 = (programs.memory(static, s) for s in (8, 16, 32))
    per_net = (b16 - b8) / 8
    assert (b32 - b16) / 16 == pytest.approx(per_net, rel=0.05)
    # At least the weights at init and now, and the data, per network.
    floor = 4 * (2 * (static.d * static.width + static.width) + static.n * (static.d + 1))
    assert per_net > floor
    assert programs.num_compiled == 3 and programs.compile_seconds > 0


@pytest.mark.slow
def test_engine_plan_fits_the_budget_by_measurement_and_trains_what_it_measured(tmp_path):
    static = _static(_sweep())
    per_net = programs_lib.Executables().memory(static, 1)
    sweep = _sweep(memory_budget_mb=3.5 * per_net / 2**20)   # room for a few, not 8
    programs = programs_lib.Executables()
    plan = plan_lib.make_plan(sweep, measure=programs.memory)
    assert len(plan.batches) > 1 and len({b.size for b in plan.batches}) == 1
    for b in plan.batches:
        assert b.measured and b.memory_bytes == programs.memory(static, b.size)
        assert b.memory_bytes <= sweep.memory_budget_mb * 2**20
    lines = []
    summary = engine.run_sweep(sweep, tmp_path / "r", show_progress=False, log_fn=lines.append)
    assert lines[0] == plan_lib.describe(plan)
    assert summary.num_compiles <= 2   # the whole group, then the size that fits
    manifest = overparam.load(tmp_path / "r").manifest
    assert manifest["groups"] == plan.groups


def test_budget_on_cpu_is_split_among_devices(monkeypatch):
    one = plan_lib.device_memory_budget_mb()
    assert one > 0
    devices = jax.local_devices()
    monkeypatch.setattr(jax, "local_devices", lambda: devices * 4)
    assert plan_lib.device_memory_budget_mb() == pytest.approx(one / 4)
