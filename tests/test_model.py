"""Tests of overparam.model: init laws, the forward pass, and its gradient.

The forward pass is checked against a slow float64 NumPy transcription of the
module docstring (z_l = c_l W_l h_{l-1}, h_l = relu(z_l), f = c_out a . h_L,
with the multipliers c_l, c_out of each parameterization written out here
again, not taken from `forward_scales`). The gradient is checked against Du et
al.'s hand-written backward pass (two layers) and against central finite
differences (deep nets).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overparam import config, losses, model

PARAMS = config.PARAMS


def _doc_scales(param, d, m, depth):
    """(c_1..c_L), c_out as written in the model docstring (zou, standard, mup: all 1)."""
    if param == "du":
        return [1.0] + [math.sqrt(2.0 / m)] * (depth - 1), 1.0 / math.sqrt(m)
    if param == "ntk":
        return [math.sqrt(2.0 / f) for f in [d] + [m] * (depth - 1)], math.sqrt(2.0 / m)
    return [1.0] * depth, 1.0


def _np_net(net):
    return [np.asarray(W, np.float64) for W in net.hidden], np.asarray(net.out, np.float64)


def _np_forward(hidden, out, X, param):
    """Slow reference: a loop over layers, one example at a time."""
    d, m, depth = X.shape[1], out.shape[0], len(hidden)
    scales, c_out = _doc_scales(param, d, m, depth)
    fs, pres = [], [[] for _ in range(depth)]
    for x in X:
        h = x
        for layer, (W, c) in enumerate(zip(hidden, scales, strict=True)):
            z = c * (W @ h)
            pres[layer].append(z)
            h = np.maximum(z, 0.0)
        fs.append(c_out * float(out @ h))
    return np.array(fs), [np.array(p) for p in pres]


def _np_forward_two_layer_loop(W, a, X, param):
    """Depth 1, explicit loop over neurons: f(x) = c_out sum_r a_r relu(c_1 w_r . x)."""
    d, m = X.shape[1], a.shape[0]
    (c1,), c_out = _doc_scales(param, d, m, 1)
    f = np.zeros(len(X))
    for i, x in enumerate(X):
        total = 0.0
        for r in range(m):
            total += a[r] * max(c1 * float(np.dot(W[r], x)), 0.0)
        f[i] = c_out * total
    return f


def _unit_inputs(key, n, d, dtype):
    X = jax.random.normal(key, (n, d), dtype)
    return X / jnp.linalg.norm(X, axis=1, keepdims=True)


# ------------------------------------------------------------------ init laws


@pytest.mark.parametrize("param", PARAMS)
def test_init_shapes_and_dtype(param):
    d, m, depth = 5, 12, 3
    net = model.init(jax.random.PRNGKey(0), d=d, width=m, depth=depth, param=param)
    assert len(net.hidden) == depth
    assert net.hidden[0].shape == (m, d)
    for W in net.hidden[1:]:
        assert W.shape == (m, m)
    assert net.out.shape == (m,)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(net))


def test_init_float64():
    with jax.enable_x64(True):
        net = model.init(jax.random.PRNGKey(0), d=3, width=4, depth=2, param="ntk",
                         dtype=jnp.float64)
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree_util.tree_leaves(net))


@pytest.mark.parametrize("param", PARAMS)
def test_init_hidden_std_matches_law(param):
    d, m, depth = 64, 512, 3
    net = model.init(jax.random.PRNGKey(1), d=d, width=m, depth=depth, param=param)
    for layer, W in enumerate(net.hidden):
        fan_in = d if layer == 0 else m
        want = {"du": 1.0, "ntk": 1.0, "zou": math.sqrt(2.0 / m),
                "standard": math.sqrt(2.0 / fan_in), "mup": math.sqrt(2.0 / fan_in)}[param]
        W = np.asarray(W, np.float64)
        assert abs(W.std() / want - 1.0) < 0.03, (layer, W.std(), want)
        assert abs(W.mean()) < 0.03 * want


@pytest.mark.parametrize("param", ["ntk", "standard", "mup"])
def test_init_gaussian_output_std(param):
    m = 512
    keys = jax.random.split(jax.random.PRNGKey(2), 16)
    outs = np.concatenate([np.asarray(model.init(k, d=4, width=m, depth=1, param=param).out,
                                      np.float64) for k in keys])
    want = {"ntk": 1.0, "standard": math.sqrt(2.0 / m), "mup": 1.0 / m}[param]
    assert abs(outs.std() / want - 1.0) < 0.03
    assert abs(outs.mean()) < 0.03 * want
    # Gaussian, not a scaled sign vector.
    assert len(np.unique(np.abs(outs))) > len(outs) // 2


def test_init_du_output_is_rademacher():
    m = 512
    out = np.asarray(model.init(jax.random.PRNGKey(3), d=4, width=m, depth=1, param="du").out)
    assert set(np.unique(out).tolist()) == {-1.0, 1.0}
    # Uniform signs: the count of +1 is Binomial(512, 1/2), sd ~ 11.
    assert abs(int(np.sum(out > 0)) - m // 2) < 60


@pytest.mark.parametrize("m", [4, 64])
def test_init_zou_output_is_exactly_balanced(m):
    outs = [np.asarray(model.init(jax.random.PRNGKey(s), d=4, width=m, depth=2,
                                  param="zou").out) for s in range(3)]
    for out in outs:
        assert set(np.unique(out).tolist()) == {-1.0, 1.0}
        assert int(np.sum(out == 1.0)) == m // 2
        assert int(np.sum(out == -1.0)) == m // 2
    # In random order: not the sorted vector, and different keys give different orders.
    if m >= 64:
        assert not np.array_equal(outs[0], np.sort(outs[0]))
        assert not np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize("param", PARAMS)
def test_init_is_a_function_of_the_key(param):
    kw = dict(d=5, width=12, depth=3, param=param)
    a = model.init(jax.random.PRNGKey(7), **kw)
    b = model.init(jax.random.PRNGKey(7), **kw)
    c = model.init(jax.random.PRNGKey(8), **kw)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, z in zip(a.hidden, c.hidden, strict=True):
        assert not np.array_equal(np.asarray(x), np.asarray(z))
    # Layers are drawn from different streams.
    assert not np.array_equal(np.asarray(a.hidden[1]), np.asarray(a.hidden[2]))


# ------------------------------------------------------------------- forward


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_apply_matches_numpy_forward_float64(param, depth):
    d, m, n = 5, 12, 7
    with jax.enable_x64(True):
        kn, kx = jax.random.split(jax.random.PRNGKey(depth))
        net = model.init(kn, d=d, width=m, depth=depth, param=param, dtype=jnp.float64)
        X = jax.random.normal(kx, (n, d), jnp.float64)
        f, pre = model.apply(net, X, param=param)
        assert f.dtype == jnp.float64
        f, pre = np.asarray(f), [np.asarray(z) for z in pre]
    hidden, out = _np_net(net)
    Xn = np.asarray(X)
    f_ref, pre_ref = _np_forward(hidden, out, Xn, param)
    assert f.shape == (n,)
    assert len(pre) == depth
    for z, z_ref in zip(pre, pre_ref, strict=True):
        assert z.shape == (m, n)   # neuron by example
        np.testing.assert_allclose(z, z_ref.T, rtol=1e-6, atol=1e-12 * np.abs(z_ref).max())
    np.testing.assert_allclose(f, f_ref, rtol=1e-6, atol=1e-12 * np.abs(f_ref).max())
    if depth == 1:
        f_loop = _np_forward_two_layer_loop(hidden[0], out, Xn, param)
        np.testing.assert_allclose(f, f_loop, rtol=1e-6, atol=1e-12 * np.abs(f_loop).max())


@pytest.mark.parametrize("param", PARAMS)
def test_apply_float32_close_to_float64_reference(param):
    d, m, n, depth = 5, 12, 7, 3
    kn, kx = jax.random.split(jax.random.PRNGKey(11))
    net = model.init(kn, d=d, width=m, depth=depth, param=param)
    X = _unit_inputs(kx, n, d, jnp.float32)
    f, pre = model.apply(net, X, param=param)
    assert f.dtype == jnp.float32 and all(z.dtype == jnp.float32 for z in pre)
    f_ref, _ = _np_forward(*_np_net(net), np.asarray(X, np.float64), param)
    np.testing.assert_allclose(np.asarray(f), f_ref, rtol=1e-4, atol=1e-5 * np.abs(f_ref).max())


def test_du_two_layer_is_du_eq1():
    """du, depth 1 is exactly (1/sqrt(m)) sum_r a_r relu(w_r . x)."""
    d, m, n = 5, 12, 7
    with jax.enable_x64(True):
        kn, kx = jax.random.split(jax.random.PRNGKey(5))
        net = model.init(kn, d=d, width=m, depth=1, param="du", dtype=jnp.float64)
        X = jax.random.normal(kx, (n, d), jnp.float64)
        f = np.asarray(model.apply(net, X, param="du")[0])
    W, a, Xn = np.asarray(net.hidden[0]), np.asarray(net.out), np.asarray(X)
    ref = np.array([sum(a[r] * max(W[r] @ x, 0.0) for r in range(m)) for x in Xn]) / np.sqrt(m)
    np.testing.assert_allclose(f, ref, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ gradients


def test_du_gradient_matches_hand_written_backward_pass():
    """dL/dw_r = (1/sqrt(m)) sum_i (f_i - y_i) a_r 1{w_r . x_i > 0} x_i (Du et al.)."""
    d, m, n = 5, 12, 7
    with jax.enable_x64(True):
        kn, kx, ky = jax.random.split(jax.random.PRNGKey(21), 3)
        net = model.init(kn, d=d, width=m, depth=1, param="du", dtype=jnp.float64)
        X = _unit_inputs(kx, n, d, jnp.float64)
        y = jax.random.normal(ky, (n,), jnp.float64)

        def loss(W):
            f, _ = model.apply(model.Net((W,), net.out), X, param="du")
            return losses.reduce(losses.per_example("squared", f, y), reduction="sum", n=n)

        grad = np.asarray(jax.grad(loss)(net.hidden[0]))
        f = np.asarray(model.apply(net, X, param="du")[0])
    W, a, Xn, yn = np.asarray(net.hidden[0]), np.asarray(net.out), np.asarray(X), np.asarray(y)
    ref = np.zeros((m, d))
    for r in range(m):
        for i in range(n):
            if W[r] @ Xn[i] > 0:
                ref[r] += (f[i] - yn[i]) * a[r] * Xn[i]
    ref /= np.sqrt(m)
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(grad, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("depth,loss", [(2, "squared"), (3, "logistic")])
def test_deep_gradient_matches_finite_differences(param, depth, loss):
    d, m, n, h = 5, 12, 7, 1e-6
    rng = np.random.default_rng(depth)
    with jax.enable_x64(True):
        kn, kx = jax.random.split(jax.random.PRNGKey(31 + depth))
        net = model.init(kn, d=d, width=m, depth=depth, param=param, dtype=jnp.float64)
        X = _unit_inputs(kx, n, d, jnp.float64)
        y = jnp.asarray(rng.choice([-1.0, 1.0], size=n))

        @jax.jit
        def objective(net):
            f, _ = model.apply(net, X, param=param)
            return losses.reduce(losses.per_example(loss, f, y), reduction="sum", n=n)

        grads = jax.grad(objective)(net)
        leaves, treedef = jax.tree_util.tree_flatten(net)
        g_leaves = jax.tree_util.tree_leaves(grads)
        got, fd = [], []
        for li, leaf in enumerate(leaves):
            base = np.asarray(leaf)
            for _ in range(3):
                idx = tuple(int(rng.integers(s)) for s in base.shape)
                vals = []
                for sign in (1.0, -1.0):
                    moved = base.copy()
                    moved[idx] += sign * h
                    new = list(leaves)
                    new[li] = jnp.asarray(moved)
                    vals.append(float(objective(jax.tree_util.tree_unflatten(treedef, new))))
                fd.append((vals[0] - vals[1]) / (2 * h))
                got.append(float(np.asarray(g_leaves[li])[idx]))
    got, fd = np.array(got), np.array(fd)
    assert np.abs(got).max() > 0
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-6 * np.abs(got).max())


# --------------------------------------------------------------- width scale


@pytest.mark.slow
@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("depth", [1, 2])
def test_forward_scale_is_width_stable(param, depth):
    """mean f(x)^2 at init over random unit inputs is O(1) in m: m=64 vs m=1024. Under mup
    the output layer's variance 1/m^2 makes it O(1/m): f starts at 0 in the limit (Yang &
    Hu 2021), and only training moves it by O(1)."""
    d, n, num_nets = 8, 64, 8
    X = _unit_inputs(jax.random.PRNGKey(0), n, d, jnp.float32)
    second_moment = {}
    for m in (64, 1024):
        fs = []
        for k in jax.random.split(jax.random.PRNGKey(m + depth), num_nets):
            net = model.init(k, d=d, width=m, depth=depth, param=param)
            f, pre = model.apply(net, X, param=param)
            assert all(z.shape == (m, n) for z in pre)
            fs.append(np.asarray(f, np.float64))
        second_moment[m] = float(np.mean(np.square(fs)))
    ratio = second_moment[1024] / second_moment[64]
    if param == "mup":
        ratio, second_moment = ratio * 16, {m: v * m for m, v in second_moment.items()}
    assert 1 / 3 < ratio < 3, second_moment
    assert 1e-2 < second_moment[1024] < 1e2


def test_lr_multipliers():
    """mup: eta fan_out for the input layer, eta for hidden layers, eta / fan_in for the output
    (Yang & Hu 2021, Table 3); every other parameterization: eta everywhere."""
    assert model.lr_multipliers("mup", width=64, depth=3) == ((64.0, 1.0, 1.0), 1 / 64)
    for param in ("du", "zou", "ntk", "standard"):
        assert model.lr_multipliers(param, width=64, depth=2) == ((1.0, 1.0), 1.0)
