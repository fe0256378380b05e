"""NTK Gram tracking and ||W(0)||_2: against the Jacobian, NumPy and the engine's records."""

import functools

import du2018
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import overparam
from overparam import config as config_lib
from overparam import data, engine, initial, metrics, model, theory, train, trainstate


@pytest.mark.parametrize("param", ["du", "zou", "ntk", "standard", "mup"])
@pytest.mark.parametrize("depth,train_output", [(1, False), (2, False), (3, True)])
def test_ntk_gram_equals_jacobian_gram(param, depth, train_output):
    """H = J M J^T, M the step-size multipliers of the trained layers (identity but for mup)."""
    with jax.enable_x64(True):
        X = jax.random.normal(jax.random.PRNGKey(0), (7, 5), jnp.float64)
        X = X / jnp.linalg.norm(X, axis=1, keepdims=True)
        net = model.init(jax.random.PRNGKey(1), d=5, width=12, depth=depth, param=param,
                         dtype=jnp.float64)

        def f(theta):
            full = model.Net(*theta) if train_output else model.Net(theta, net.out)
            return model.apply(full, X, param=param)[0]

        theta = (net.hidden, net.out) if train_output else net.hidden
        hidden_mu, out_mu = model.lr_multipliers(param, width=12, depth=depth)
        mus = (*hidden_mu, out_mu) if train_output else hidden_mu
        leaves = jax.tree_util.tree_leaves(jax.jacrev(f)(theta))
        J = jnp.concatenate([j.reshape(7, -1) for j in leaves], axis=1)
        M = jnp.concatenate([jnp.full(j[0].size, mu) for j, mu in zip(leaves, mus, strict=True)])
        H = metrics.ntk_gram(net, X, param=param, train_output=train_output)
        np.testing.assert_allclose(H, (J * M[None, :]) @ J.T, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_init_spectral_is_the_norm_of_the_initial_weights():
    static = train.Static(width=48, depth=3, n=8, d=6, batch_size=8, loss="squared",
                          optimizer="gd", param="ntk")
    ds = data.make_dataset(dict(dataset="sphere", labels="gaussian", n=8, d=6, seed=0,
                                dtype="float32"))
    hyper = trainstate.RunScalars(
        *(jnp.asarray(v) for v in (np.uint32(3), np.uint32(1), np.uint32(2),
                                   np.float32(0.1), np.float32(1))))
    arrays = trainstate.Data(jnp.asarray(ds.X), jnp.asarray(ds.y))
    state = jax.jit(functools.partial(initial.init_single, static))(hyper, arrays)
    for W, got in zip(state.net0.hidden, state.init_spectral):
        ref = np.linalg.norm(np.asarray(W, np.float64), 2)
        assert abs(got - ref) <= 1e-5 * ref


@pytest.mark.slow
def test_sweep_records_gram_statistics_every_gram_step(tmp_path):
    sweep = config_lib.validate(dict(name="g", widths=(32, 128), num_seeds=2, n=(10,), d=6,
                                     steps=12, chunk_steps=5, gram_every=4, lr=(0.1,)))
    engine.run_sweep(sweep, tmp_path / "r", show_progress=False)
    r = overparam.load(tmp_path / "r")
    s = r.steps
    on = s.step % 4 == 0
    for col in ("gram_lambda_min", "gram_lambda_max", "gram_change", "gram_init_error"):
        assert s.loc[on, col].notna().all() and s.loc[~on, col].isna().all(), col
    assert (s.loc[s.step == 0, "gram_change"] < 1e-6).all()  # H(0) again, up to rounding
    assert (s.loc[on & (s.step > 0), "gram_change"] > 0).all()
    assert (s.loc[on, "gram_lambda_min"] > 0).all()

    # Step 0 against a host computation from the initial weights and the analytic kernel.
    run = r.runs.iloc[0]
    X, _ = r.dataset(run.dataset_id)
    static = train.Static(width=int(run.width), depth=1, n=10, d=6, batch_size=10,
                          loss="squared", optimizer="gd", param="du")
    hyper = trainstate.RunScalars(*(jnp.asarray(v) for v in (
        np.uint32(run.seed), np.uint32(config_lib.expand(sweep)[0].init_tag),
        np.uint32(0), np.float32(0.1), np.float32(1))))
    assert config_lib.expand(sweep)[0].run_id == run.run_id
    arrays = trainstate.Data(jnp.asarray(X), None)
    net0 = jax.jit(functools.partial(initial.init_single, static))(hyper, arrays).net0
    with jax.enable_x64(True):
        net64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), net0)
        H0 = np.asarray(metrics.ntk_gram(net64, jnp.asarray(X, jnp.float64), param="du",
                                         train_output=False))
    row = s[(s.run_id == run.run_id) & (s.step == 0)].iloc[0]
    np.testing.assert_allclose(row.gram_lambda_min, np.linalg.eigvalsh(H0)[0], rtol=1e-4)
    np.testing.assert_allclose(row.gram_lambda_max, np.linalg.eigvalsh(H0)[-1], rtol=1e-5)
    H_inf = theory.gram_inf(X.astype(np.float64), param="du", depth=1)
    scale = theory.gram_scale("du", int(run.width), depth=1)
    err = np.abs(np.linalg.eigvalsh(H0 / scale - H_inf)).max()
    np.testing.assert_allclose(row.gram_init_error, err, rtol=1e-3)


def test_gram_every_must_be_a_multiple_of_record_every():
    with pytest.raises(config_lib.ConfigError, match="^config.gram_every:"):
        config_lib.validate(dict(steps=12, record_every=3, gram_every=4))


@pytest.mark.slow
def test_theory_lr_and_lambda0_come_from_the_analytic_kernel(tmp_path):
    sweep = config_lib.validate(dict(name="t", widths=(16,), num_seeds=2, n=(12,), d=5,
                                     steps=4, lr=("theory", 0.05)))
    engine.run_sweep(sweep, tmp_path / "r", show_progress=False)
    runs = overparam.load(tmp_path / "r").runs
    for _, run in runs.iterrows():
        X, _ = overparam.load(tmp_path / "r").dataset(run.dataset_id)
        H = theory.du_gram_inf(X.astype(np.float64))
        assert run.lambda0 == pytest.approx(np.linalg.eigvalsh(H)[0], rel=1e-12)
        if run.lr_spec == "theory":
            assert np.isnan(run.lr_base)
            assert run.lr == pytest.approx(du2018.du_theory_lr(X.astype(np.float64)), rel=1e-12)
        else:
            assert run.lr == run.lr_base == 0.05
    assert set(runs.status) == {"ok"}


def test_theory_lr_needs_the_squared_loss():
    with pytest.raises(config_lib.ConfigError, match="^config.lr:"):
        config_lib.validate(dict(lr=("theory",), loss=("hinge",), labels="random_sign"))


@pytest.mark.slow
@pytest.mark.cpu_only  # XLA:CPU's fault, run on the CPU: nothing to learn on a GPU
def test_long_chunks_with_gram_tracking_do_not_deadlock():
    """jaxlib 0.10.2's XLA:CPU deadlocked here (see overparam._xla_cpu_workaround)."""
    import os
    import subprocess
    import sys

    code = ("import overparam, jax, jax.numpy as jnp\n"
            "from overparam import chunks, train, trainstate\n"
            "M, n = 16, 64\n"
            "st = train.Static(width=256, depth=1, n=n, d=16, batch_size=n, loss='squared',"
            " optimizer='gd', param='du', chunk_records=67, gram_every=10)\n"
            "p = chunks.jit_program(st)\n"
            "X = jax.random.normal(jax.random.PRNGKey(0), (M, n, 16)) / 4.0\n"
            "h = trainstate.RunScalars(jnp.arange(M, dtype=jnp.uint32), jnp.zeros(M, jnp.uint32),"
            " jnp.zeros(M, jnp.uint32), jnp.full(M, 0.1), jnp.ones(M))\n"
            "data = trainstate.Data(X, X[..., 0], jnp.zeros((M, n, n)))\n"
            "s = p.init(trainstate.batch_keys(h), data)\n"
            "s, r = p.chunk(s, h, data, jnp.int32(0))\n"
            "jax.block_until_ready(r)\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "JAX_PLATFORMS": "cpu"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
