"""`overparam.load(dir).initial_net(run_id)` rebuilds a run's initial weights bit for bit:
the engine's own init program, run again on the batches of the sweep's plan, holds
exactly those weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import overparam
from overparam import config as config_lib
from overparam import engine, prepare, programs

ROOT = Path(__file__).resolve().parents[1]
AS_SWEEPS = bool(os.environ.get("OVERPARAM_TEST_AS_SWEEPS"))


def _sweep(**fields):
    base = dict(widths=(8,), depths=(2,), num_seeds=2, n=(6,), d=4, steps=2, chunk_steps=2,
                lr=(0.05,))
    return config_lib.validate({**base, **fields})


@pytest.mark.parametrize("fields", [
    dict(param=("du", "zou", "ntk")),                                  # the three output laws
    dict(param=("standard",), depths=(1,), dtype="float64", train_output=True),
], ids=["float32", "float64"])
@pytest.mark.slow
@pytest.mark.skipif(not AS_SWEEPS, reason="bit for bit under a sweep's XLA backend only: "
                    "test_initial_net_under_a_sweeps_backend runs it")
def test_initial_net_is_the_engines_initial_weights(tmp_path, fields):
    sweep = _sweep(**fields)
    engine.run_sweep(sweep, tmp_path, show_progress=False, log_fn=lambda *a: None)
    results = overparam.load(tmp_path)
    with jax.enable_x64(sweep.dtype == "float64"):
        compiled = programs.Executables()
        prepared = prepare.prepare(sweep, "complete", results.manifest, compiled)
        checked = 0
        for batch in prepared.plan.batches:
            init, _ = compiled.get(batch.static, batch.size)
            keys, _, data = prepared.batch_arrays(batch, jnp.dtype(sweep.dtype))
            net0 = jax.device_get(init(keys, data).net0)
            for i, run in enumerate(batch.runs[:batch.num_real]):
                net = results.initial_net(run.run_id)
                assert len(net.hidden) == run.depth
                for W, W_engine in zip(net.hidden, net0.hidden):
                    assert W.dtype == np.dtype(sweep.dtype)
                    np.testing.assert_array_equal(W, W_engine[i])
                np.testing.assert_array_equal(net.out, net0.out[i])
                checked += 1
    assert checked == len(results.runs)
    # The layers table's ||W_l(0)||_2 is the spectral norm of the rebuilt weights.
    layers = results.layers[results.layers.step == 0]
    for row in layers.itertuples():
        W = results.initial_net(row.run_id).hidden[row.layer - 1].astype(np.float64)
        assert row.init_spectral == pytest.approx(np.linalg.norm(W, 2), rel=1e-4)


@pytest.mark.slow
def test_initial_net_of_an_unknown_run_is_a_results_error(tmp_path):
    engine.run_sweep(_sweep(num_seeds=1), tmp_path, show_progress=False, log_fn=lambda *a: None)
    with pytest.raises(overparam.ResultsError, match="'nope' is not in"):
        overparam.load(tmp_path).initial_net("nope")


@pytest.mark.slow
def test_initial_net_under_a_sweeps_backend():
    """The bit-for-bit test above, in a process whose XLA backend is a sweep's (the tests'
    -O0, tests/conftest.py, rounds two programs' normal draws differently by an ulp)."""
    env = {**os.environ, "OVERPARAM_TEST_AS_SWEEPS": "1",
           "XLA_FLAGS": os.environ["OVERPARAM_SWEEP_XLA_FLAGS"]}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:xdist", f"{Path(__file__)}::"
                           "test_initial_net_is_the_engines_initial_weights"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "2 passed" in proc.stdout, proc.stdout[-3000:]
