"""mup's per-layer step sizes and Chizat et al.'s output scaling, against their definitions.

One optimizer step of the compiled program is compared with the step written out here
from `model.apply`, `losses` and `model.lr_multipliers`: W_l <- W_l - eta mu_l dJ/dW_l on
the objective J = loss(alpha (f - f0)) / alpha^2 (model docstring; Chizat, Oyallon & Bach
2019). The lazy limit is checked as the theory states it: with the centered model, the
weights move by O(1/alpha) (docs/THEORY.md section 6).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import overparam
from overparam import chunks, data, engine, initial, losses, model, train, trainstate
from overparam import config as config_lib

N, D = 10, 5


@functools.cache
def _jitted(static):
    return (jax.jit(functools.partial(initial.init_single, static)),
            jax.jit(functools.partial(chunks.chunk_single, static)))


def _data(dtype="float64"):
    ds = data.make_dataset(dict(dataset="sphere", labels="gaussian", n=N, d=D, seed=1,
                                dtype=dtype))
    return jnp.asarray(ds.X), jnp.asarray(ds.y)


def _hyper(lr, alpha):
    return trainstate.RunScalars(
        *(jnp.asarray(v) for v in (np.uint32(4), np.uint32(8), np.uint32(1))),
        lr=jnp.asarray(lr, jnp.float64), output_scale=jnp.asarray(alpha, jnp.float64))


@pytest.mark.slow
@pytest.mark.parametrize("param,alpha,center,reduction", [
    ("mup", 1.0, False, "sum"), ("mup", 3.0, True, "mean"), ("ntk", 0.25, True, "sum"),
    ("du", 10.0, False, "sum"), ("standard", 2.0, True, "mean")])
def test_one_step_is_minus_lr_times_multiplier_times_gradient(param, alpha, center,
                                                              reduction):
    width, depth, lr = 16, 2, 0.05
    with jax.enable_x64(True):
        X, y = _data()
        static = train.Static(width=width, depth=depth, n=N, d=D, batch_size=N,
                              loss="squared", optimizer="gd", param=param, reduction=reduction,
                              train_output=True, chunk_records=1, dtype="float64",
                              center_output=center)
        init, chunk = _jitted(static)
        hyper = _hyper(lr, alpha)
        state = init(hyper, trainstate.Data(X, y))
        net0 = state.net0
        f0 = model.apply(net0, X, param=param)[0]

        def objective(net):
            f = model.apply(net, X, param=param)[0]
            g = alpha * (f - f0) if center else alpha * f
            return losses.reduce(losses.per_example("squared", g, y), reduction=reduction,
                                 n=N) / alpha**2, g

        grads, g = jax.grad(objective, has_aux=True)(net0)
        state, rec = chunk(state, hyper, trainstate.Data(X, y), jnp.int32(0))
        want = float(losses.reduce(losses.per_example("squared", g, y), reduction=reduction,
                                   n=N))
        at_zero = float(losses.reduce(0.5 * y**2, reduction=reduction, n=N))
    hidden_mu, out_mu = model.lr_multipliers(param, width=width, depth=depth)
    for D_l, G_l, mu in zip(state.delta.hidden, grads.hidden, hidden_mu, strict=True):
        np.testing.assert_allclose(D_l, -lr * mu * np.asarray(G_l), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(state.delta.out, -lr * out_mu * np.asarray(grads.out),
                               rtol=1e-12, atol=1e-15)
    # The recorded loss is the model's, alpha (f - f0)'s, not the objective's.
    cols = chunks.columns(jax.device_get(rec))
    np.testing.assert_allclose(cols["loss"][0], want, rtol=1e-12)
    if center:  # the centered model starts at 0: its loss is that of predicting 0
        np.testing.assert_allclose(cols["loss"][0], at_zero, rtol=1e-12)


@pytest.mark.slow
def test_large_output_scale_is_lazy_weights_move_like_one_over_alpha():
    """Chizat et al. 2019: the centered model alpha (f - f0) trained on loss / alpha^2 follows
    its linearization as alpha grows, and its weights move by O(1/alpha): ten times the
    scale, a tenth of the movement (to 2% at alpha = 30 and 300)."""
    with jax.enable_x64(True):
        X, y = _data()
        static = train.Static(width=64, depth=2, n=N, d=D, batch_size=N, loss="squared",
                              optimizer="gd", param="ntk", chunk_records=60, dtype="float64",
                              center_output=True)
        init, chunk = _jitted(static)
        moved, losses_at_end = {}, {}
        for alpha in (30.0, 300.0):
            hyper = _hyper(0.2, alpha)
            data = trainstate.Data(X, y)
            state, rec = chunk(init(hyper, data), hyper, data, jnp.int32(0))
            cols = chunks.columns(jax.device_get(rec))
            moved[alpha] = np.max(cols["radius_frobenius"], axis=0)
            losses_at_end[alpha] = cols["loss"][-1]
    np.testing.assert_allclose(moved[30.0] / moved[300.0], 10.0, rtol=0.02)
    # ... while the function follows the same kernel trajectory: the same loss at the end.
    np.testing.assert_allclose(losses_at_end[30.0], losses_at_end[300.0], rtol=0.02)


@pytest.mark.slow
def test_output_scale_is_swept_and_recorded(tmp_path):
    sweep = config_lib.validate(dict(name="a", widths=(16,), num_seeds=2, n=(8,), d=4,
                                     steps=3, output_scale=(0.5, 2.0), center_output=True,
                                     param=("mup", "ntk")))
    runs = config_lib.expand(sweep)
    assert sorted({r.output_scale for r in runs}) == [0.5, 2.0]
    assert len({r.run_id for r in runs}) == len(runs) == 8
    engine.run_sweep(sweep, tmp_path / "r", show_progress=False)
    r = overparam.load(tmp_path / "r")
    assert sorted(r.runs.output_scale.unique()) == [0.5, 2.0]
    assert r.runs.center_output.all()
    assert set(r.with_settings().output_scale) == {0.5, 2.0}
    # Networks that differ only in alpha start from the same weights and data.
    first = r.runs.groupby(["seed", "param"]).init_tag.nunique()
    assert (first == 1).all()


def test_run_ids_of_sweeps_without_the_new_fields_are_unchanged():
    """output_scale and center_output enter a run's identity only off their defaults, so the
    default sweep's runs keep the ids they were published with."""
    c = config_lib.default_config()
    c.update(widths=(256, 1024, 4096, 16384), num_seeds=16, n=(64,), d=16, lr=(0.1,),
             gram_every=10, name="default")
    runs = config_lib.expand(config_lib.validate(c))
    assert runs[0].seed == 0 and runs[0].width == 256
    assert runs[0].run_id == "73e98623c4d136fa"
    c.update(center_output=True)
    assert config_lib.expand(config_lib.validate(c))[0].run_id != "73e98623c4d136fa"


@pytest.mark.parametrize("value", [0.0, -1.0, "big", float("inf")])
def test_output_scale_must_be_a_positive_number(value):
    with pytest.raises(config_lib.ConfigError, match="config.output_scale"):
        config_lib.validate(dict(output_scale=(value,)))


def test_sharpness_every_must_be_a_multiple_of_record_every():
    with pytest.raises(config_lib.ConfigError, match="^config.sharpness_every:"):
        config_lib.validate(dict(steps=12, record_every=3, sharpness_every=4))
    with pytest.raises(config_lib.ConfigError, match="^config.center_output:"):
        config_lib.validate(dict(center_output="yes"))
