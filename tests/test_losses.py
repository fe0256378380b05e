"""Tests of overparam.losses: each per-example loss against its formula in NumPy,
and the unbiasedness of the minibatch reduction.

References are float64 NumPy; JAX runs in float64 under `jax.enable_x64(True)`
unless a test is about float32 behaviour.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overparam import losses

LOSSES = ("squared", "hinge", "squared_hinge", "exponential", "logistic")


def _logistic_ref(z):
    """log(1 + exp(-z)) one element at a time, in a form that neither overflows nor
    loses the tail: for z > 0 it is log1p(exp(-z)), for z <= 0 it is -z + log1p(exp(z))."""
    return np.array([math.log1p(math.exp(-t)) if t > 0 else -t + math.log1p(math.exp(t))
                     for t in z])


def _ref(loss, f, y):
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    z = y * f
    return {
        "squared": lambda: 0.5 * (f - y) ** 2,
        "hinge": lambda: np.maximum(0.0, 1.0 - z),
        "squared_hinge": lambda: np.maximum(0.0, 1.0 - z) ** 2,
        "exponential": lambda: np.exp(-z),
        "logistic": lambda: _logistic_ref(z),
    }[loss]()


def _per_example64(loss, f, y):
    with jax.enable_x64(True):
        out = losses.per_example(loss, jnp.asarray(f, jnp.float64), jnp.asarray(y, jnp.float64))
        assert out.dtype == jnp.float64
        return np.asarray(out)


@pytest.mark.parametrize("loss", LOSSES)
def test_per_example_matches_formula(loss):
    rng = np.random.default_rng(0)
    n = 40
    f = 2.0 * rng.standard_normal(n)
    y = rng.choice([-1.0, 1.0], size=n) if loss != "squared" else rng.standard_normal(n)
    # Points on the hinge (y f = 1) and at f = 0.
    f[:2], y[:2] = [1.0, -1.0], [1.0, -1.0]
    f[2] = 0.0
    got = _per_example64(loss, f, y)
    assert got.shape == (n,)
    np.testing.assert_allclose(got, _ref(loss, f, y), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("loss", LOSSES)
def test_per_example_float32(loss):
    rng = np.random.default_rng(1)
    f = rng.standard_normal(16).astype(np.float32)
    y = rng.choice([-1.0, 1.0], size=16).astype(np.float32)
    got = losses.per_example(loss, jnp.asarray(f), jnp.asarray(y))
    assert got.dtype == jnp.float32 and got.shape == (16,)
    np.testing.assert_allclose(np.asarray(got), _ref(loss, f, y), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("loss", LOSSES)
def test_per_example_values_at_known_points(loss):
    # y f = 0: every margin loss is at 1 except logistic (log 2); squared is y^2 / 2.
    want = {"squared": 0.5, "hinge": 1.0, "squared_hinge": 1.0, "exponential": 1.0,
            "logistic": math.log(2.0)}[loss]
    got = _per_example64(loss, [0.0], [1.0])
    np.testing.assert_allclose(got, [want], rtol=1e-15)


def test_margin_losses_depend_on_y_f_only():
    rng = np.random.default_rng(2)
    f = rng.standard_normal(10)
    for loss in ("hinge", "squared_hinge", "exponential", "logistic"):
        a = _per_example64(loss, f, np.ones(10))
        b = _per_example64(loss, -f, -np.ones(10))
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logistic_is_finite_and_accurate_for_large_margins(dtype):
    z = np.array([-1000.0, -200.0, -80.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 80.0, 200.0, 700.0])
    ref = _logistic_ref(z)
    if dtype == "float64":
        got = _per_example64("logistic", z, np.ones_like(z))
        rtol = 1e-13
    else:
        got = np.asarray(losses.per_example("logistic", jnp.asarray(z, jnp.float32),
                                            jnp.ones(len(z), jnp.float32)), np.float64)
        rtol = 1e-6
    assert np.all(np.isfinite(got))
    # For very negative margins the loss is -yf (no overflow to inf).
    np.testing.assert_allclose(got[0], 1000.0, rtol=rtol)
    # In float64, small tails are resolved relatively (exp(-700) ~ 1e-304), not rounded to 0.
    # float32 underflows below ~1e-38 (its smallest normals); there only demand atol.
    if dtype == "float64":
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=0)
    else:
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-37)
    # Large positive margins: tiny but positive where representable.
    assert got[-4] > 0 and got[-3] > 0


@pytest.mark.parametrize("loss", LOSSES)
def test_unknown_loss_raises(loss):
    with pytest.raises(ValueError, match="unknown loss"):
        losses.per_example(loss + "_typo", jnp.zeros(3), jnp.ones(3))


def test_unknown_loss_message_names_the_loss():
    with pytest.raises(ValueError, match="'cross_entropy'"):
        losses.per_example("cross_entropy", jnp.zeros(3), jnp.ones(3))


# ----------------------------------------------------------------- reduction


def _reduce64(values, reduction, n):
    with jax.enable_x64(True):
        return float(losses.reduce(jnp.asarray(values, jnp.float64), reduction=reduction, n=n))


def test_reduce_full_batch_sum_and_mean():
    rng = np.random.default_rng(3)
    values = rng.exponential(size=9)
    np.testing.assert_allclose(_reduce64(values, "sum", 9), np.sum(values), rtol=1e-14)
    np.testing.assert_allclose(_reduce64(values, "mean", 9), np.mean(values), rtol=1e-14)


def test_reduce_minibatch_scaling():
    values = np.array([1.0, 2.0, 4.0])
    # 'sum' scales a batch of b out of n by n / b; 'mean' divides by b.
    np.testing.assert_allclose(_reduce64(values, "sum", 12), 7.0 * 12 / 3, rtol=1e-15)
    np.testing.assert_allclose(_reduce64(values, "mean", 12), 7.0 / 3, rtol=1e-15)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("n,b", [(5, 2), (5, 1), (6, 3), (5, 5)])
def test_minibatch_estimate_is_unbiased(reduction, n, b):
    """The average of reduce over all size-b subsets equals the full-batch loss."""
    rng = np.random.default_rng(10 * n + b)
    values = rng.exponential(size=n)
    full = np.sum(values) if reduction == "sum" else np.mean(values)
    np.testing.assert_allclose(_reduce64(values, reduction, n), full, rtol=1e-14)
    subsets = list(itertools.combinations(range(n), b))
    assert len(subsets) == math.comb(n, b)
    avg = np.mean([_reduce64(values[list(s)], reduction, n) for s in subsets])
    np.testing.assert_allclose(avg, full, rtol=1e-13)


@pytest.mark.parametrize("loss", LOSSES)
def test_reduce_of_per_example_is_differentiable(loss):
    """jax.grad of the reduced loss is the sum/mean of per-example derivatives."""
    rng = np.random.default_rng(4)
    f0 = rng.standard_normal(6)
    y = rng.choice([-1.0, 1.0], size=6)
    with jax.enable_x64(True):
        yj = jnp.asarray(y)
        g_sum = jax.grad(lambda f: losses.reduce(losses.per_example(loss, f, yj),
                                                 reduction="sum", n=6))(jnp.asarray(f0))
        g_mean = jax.grad(lambda f: losses.reduce(losses.per_example(loss, f, yj),
                                                  reduction="mean", n=6))(jnp.asarray(f0))
    z = y * f0
    dl_df = {
        "squared": f0 - y,
        "hinge": np.where(z < 1, -y, 0.0),
        "squared_hinge": -2.0 * np.maximum(0.0, 1.0 - z) * y,
        "exponential": -y * np.exp(-z),
        "logistic": -y / (1.0 + np.exp(z)),
    }[loss]
    np.testing.assert_allclose(np.asarray(g_sum), dl_df, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(g_mean), dl_df / 6, rtol=1e-12, atol=1e-15)
