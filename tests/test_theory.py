"""theory: closed forms against slow loops, and the limit kernels against random networks."""

import math

import du2018
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overparam import data, model, theory


def _dataset(n=6, d=5, seed=0, labels="gaussian"):
    return data.make_dataset(dict(dataset="sphere", labels=labels, n=n, d=d, seed=seed,
                                  dtype="float64"))


def test_du_gram_inf_is_the_closed_form_and_positive_definite():
    X = _dataset(n=7).X
    H = theory.du_gram_inf(X)
    slow = np.empty((7, 7))
    for i in range(7):
        for j in range(7):
            dot = float(X[i] @ X[j])
            c = min(max(dot / math.sqrt(float(X[i] @ X[i]) * float(X[j] @ X[j])), -1.0), 1.0)
            slow[i, j] = dot * (math.pi - math.acos(c)) / (2 * math.pi)
    np.testing.assert_allclose(H, slow, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(H, H.T)
    np.testing.assert_allclose(np.diag(H), 0.5, rtol=1e-14)
    assert theory.lambda_0(H) > 1e-3


def test_du_output_gram_inf_is_the_arccos_kernel():
    X = _dataset(n=7).X
    G = du2018.du_output_gram_inf(X)
    t = np.arccos(np.clip(X @ X.T, -1, 1))
    ref = (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
    np.testing.assert_allclose(G, ref, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(np.diag(G), 0.5, rtol=1e-14)
    assert theory.lambda_0(G) > 0


def test_parallel_points_make_du_gram_inf_singular():
    X = _dataset(n=4).X
    H = theory.du_gram_inf(np.concatenate([X, X[:1]]))  # x_0 twice: two equal rows
    assert abs(theory.lambda_0(H)) < 1e-12


def test_gram_inf_du_depth_1_is_du_gram_inf():
    X = _dataset().X
    np.testing.assert_array_equal(theory.gram_inf(X, param="du", depth=1), theory.du_gram_inf(X))
    np.testing.assert_array_equal(theory.gram_inf(X, param="du", depth=1, train_output=True),
                                  theory.du_gram_inf(X) + du2018.du_output_gram_inf(X))


@pytest.mark.parametrize("param", theory.PARAMS)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_gram_inf_is_symmetric_positive_definite(param, depth):
    H = theory.gram_inf(_dataset().X, param=param, depth=depth)
    np.testing.assert_allclose(H, H.T, rtol=1e-14)
    assert theory.lambda_0(H) > 0


def test_gram_scale_needs_depth_for_standard():
    assert theory.gram_scale("du", 64) == theory.gram_scale("ntk", 64) == 1.0
    assert theory.gram_scale("zou", 64) == 64.0
    assert theory.gram_scale("standard", 64, depth=2) == 64.0
    assert theory.gram_scale("standard", 64, depth=1, train_output=True) == 64.0
    assert theory.gram_scale("standard", 64, depth=1) == 1.0
    with pytest.raises(ValueError, match="depth"):
        theory.gram_scale("standard", 64)


def _empirical_gram(X, *, key, param, depth, width, train_output):
    """H = J M J^T with J the Jacobian of f(X) (n,) w.r.t. the trained parameters and M their
    step-size multipliers (model.lr_multipliers: identity but for mup), float64."""
    net = model.init(key, d=X.shape[1], width=width, depth=depth, param=param,
                     dtype=jnp.float64)

    def f(theta):
        full = model.Net(*theta) if train_output else model.Net(theta, net.out)
        return model.apply(full, X, param=param)[0]

    theta = (net.hidden, net.out) if train_output else net.hidden
    hidden_mu, out_mu = model.lr_multipliers(param, width=width, depth=depth)
    mus = [*hidden_mu, out_mu] if train_output else list(hidden_mu)
    blocks = [j.reshape(X.shape[0], -1) for j in jax.tree_util.tree_leaves(jax.jacrev(f)(theta))]
    return sum(mu * J @ J.T for mu, J in zip(mus, blocks, strict=True))  # J M J^T, J concatenated


# Depth 2 has an (n, m, m) Jacobian, so smaller widths there. Measured with these seeds,
# the slopes are -0.47..-0.56 at depth 1 and -0.40..-0.45 at depth 2 (other seed blocks:
# -0.36..-0.52), the relative errors at the largest width 0.01..0.02 and 0.07..0.14.
WIDTHS = {1: (256, 1024, 4096, 16384), 2: (64, 256, 1024)}
SEEDS = 8
MAX_RELATIVE_ERROR = {1: 0.05, 2: 0.2}
CASES = [(p, depth, False) for depth in (1, 2) for p in theory.PARAMS] + [
    ("du", 1, True), ("standard", 1, True), ("mup", 1, True)]


@pytest.mark.slow
@pytest.mark.parametrize("param,depth,train_output", CASES)
def test_empirical_gram_converges_to_gram_inf_like_inverse_sqrt_width(param, depth,
                                                                       train_output):
    """Mean over seeds of ||H(0) / s - H^inf||_2 falls like m^-1/2 (THEORY.md section 4)."""
    X = _dataset().X
    H_inf = theory.gram_inf(X, param=param, depth=depth, train_output=train_output)
    errors = []
    with jax.enable_x64(True):
        for width in WIDTHS[depth]:
            scale = theory.gram_scale(param, width, depth=depth, train_output=train_output)
            errors.append(np.mean([np.linalg.norm(np.asarray(_empirical_gram(
                jnp.asarray(X), key=jax.random.PRNGKey(seed), param=param, depth=depth,
                width=width, train_output=train_output)) / scale - H_inf, 2)
                for seed in range(SEEDS)]))
    slope = np.polyfit(np.log(WIDTHS[depth]), np.log(errors), 1)[0]
    assert -0.75 <= slope <= -0.3, (slope, errors)
    assert errors[-1] < MAX_RELATIVE_ERROR[depth] * np.linalg.norm(H_inf, 2), errors


def test_du_step_sizes():
    X = _dataset().X
    H = theory.du_gram_inf(X)
    lam_max = np.linalg.eigvalsh(H)[-1]
    assert du2018.du_max_step_size(H) * lam_max == pytest.approx(2.0, rel=1e-14)
    assert du2018.du_max_step_size(H, reduction="mean") == pytest.approx(
        len(X) * du2018.du_max_step_size(H), rel=1e-14)
    eta = du2018.du_theory_lr(X)
    assert 0 < eta < du2018.du_max_step_size(H)
    eta_out = du2018.du_theory_lr(X, train_output=True)
    assert 0 < eta_out < eta  # training a too adds G^inf, raising lambda_max


def test_du_theory_lr_makes_linearized_gd_contract():
    """r(k+1) = (I - eta H^inf) r(k): with eta = du_theory_lr, ||r|| never grows."""
    ds = _dataset(n=8)
    H, eta = theory.du_gram_inf(ds.X), du2018.du_theory_lr(ds.X)
    r = ds.y.copy()
    norms = [np.linalg.norm(r)]
    for _ in range(50):
        r = r - eta * H @ r
        norms.append(np.linalg.norm(r))
    assert np.all(np.diff(norms) <= 0)
    bound = theory.du_linear_rate(eta, theory.lambda_0(H), np.arange(51))
    assert np.all(np.square(norms) <= bound * norms[0] ** 2 * (1 + 1e-12))


def test_du_linear_rate():
    assert theory.du_linear_rate(0.1, 0.3, 0) == 1.0
    rates = theory.du_linear_rate(0.1, 0.3, np.arange(10))
    assert np.all(np.diff(rates) < 0)
    assert theory.du_linear_rate(0.1, 0.3, 7) == pytest.approx(0.985**7, rel=1e-14)


def test_du_radius_bound_scales_as_inverse_sqrt_width():
    ds = _dataset(n=8)
    u0 = np.linspace(-0.3, 0.3, 8)
    r = theory.du_radius_bound(ds.X, ds.y, u0, 100)
    assert theory.du_radius_bound(ds.X, ds.y, u0, 400) == pytest.approx(r / 2, rel=1e-14)
    lam0 = np.linalg.eigvalsh(theory.du_gram_inf(ds.X))[0]
    assert r == pytest.approx(4 * np.sqrt(8) * np.linalg.norm(ds.y - u0) / (10 * lam0),
                              rel=1e-14)


def test_lambda_0_is_the_smallest_eigenvalue():
    A = np.random.default_rng(0).standard_normal((6, 6))
    H = A @ A.T
    assert theory.lambda_0(H) == np.linalg.eigvalsh(H)[0]
    assert theory.lambda_0(H) == pytest.approx(np.min(np.linalg.eigvals(H).real), rel=1e-10)


def test_separation_is_the_data_separation():
    ds = data.make_dataset(dict(dataset="sphere", labels="random_sign", n=10, d=4, seed=1,
                                dtype="float64"))
    assert theory.separation(ds.X, ds.y) == ds.separation
    i, j = np.nonzero(ds.y[:, None] != ds.y[None, :])
    assert ds.separation == pytest.approx(np.min(np.linalg.norm(ds.X[i] - ds.X[j], axis=1)))


def test_width_exponents_follow_theory_section_5():
    half, flat = (-0.5, -0.5), (0.0, 0.0)
    stable = dict(lr_scaling="constant", depth=1)
    assert [theory.width_stable(p, "constant") for p in theory.PARAMS] == [True, False, True,
                                                                           False, True]
    assert [theory.width_stable(p, "inverse_width") for p in theory.PARAMS] == [False, True,
                                                                                False, True,
                                                                                False]
    assert theory.row_radius_exponent("du", **stable) == half
    assert theory.row_radius_exponent("du", lr_scaling="constant", depth=2) is None
    assert theory.row_radius_exponent("ntk", **stable) is None
    assert theory.relative_radius_exponent("du", **stable) == half
    assert theory.relative_radius_exponent("ntk", lr_scaling="constant", depth=3) == half
    assert theory.relative_radius_exponent("zou", lr_scaling="inverse_width", depth=2) == half
    assert theory.relative_radius_exponent("du", lr_scaling="inverse_width", depth=1) is None
    assert theory.relative_radius_exponent("standard", lr_scaling="inverse_width",
                                           depth=2) is None
    # N(0, 1) weights with a 1/sqrt(fan_in) multiplier (du, ntk) move by O(1) in spectral
    # norm at every depth; zou's N(0, 2/m) weights with lr / m by m^-1/2.
    assert theory.spectral_radius_exponent("du", **stable) == flat
    assert theory.spectral_radius_exponent("du", lr_scaling="constant", depth=2) == flat
    assert theory.spectral_radius_exponent("ntk", lr_scaling="constant", depth=3) == flat
    assert theory.spectral_radius_exponent("zou", lr_scaling="inverse_width", depth=2) == half
    assert theory.spectral_radius_exponent("zou", **stable) is None  # lr not width-stable
    assert theory.spectral_radius_exponent("standard", lr_scaling="inverse_width",
                                           depth=2) is None
    # mup: sqrt(fan_out / fan_in) (the spectral condition): m^1/2 for the input layer.
    assert theory.spectral_radius_exponent("mup", **stable) is None  # layer not known
    assert theory.spectral_radius_exponent("mup", **stable, layer=1) == (0.5, 0.5)
    assert theory.spectral_radius_exponent("mup", lr_scaling="constant", depth=3,
                                           layer=3) == flat
    assert theory.flip_exponent("standard", lr_scaling="inverse_width", depth=2) == (-0.5,
                                                                                     -1 / 3)
    assert theory.gram_change_exponent("ntk", **stable) == half
    assert theory.gram_change_exponent("zou", lr_scaling="inverse_width", depth=1) is None
    assert theory.relative_gram_change_exponent("zou", lr_scaling="inverse_width",
                                                depth=1) == half
    # mup with its own lr learns features: relative radius, flips and kernel change stay O(1).
    for exponent in (theory.relative_radius_exponent, theory.flip_exponent,
                     theory.gram_change_exponent, theory.relative_gram_change_exponent):
        assert exponent("mup", lr_scaling="constant", depth=2) == flat
        assert exponent("mup", lr_scaling="inverse_width", depth=2) is None
    assert theory.gram_init_error_exponent("zou", **stable) == half  # any step size


def test_kernel_loss_rate_is_linearized_gds_rate_along_the_slowest_direction():
    X = _dataset(n=8).X
    H, eta = theory.du_gram_inf(X), du2018.du_theory_lr(X)
    lam, V = np.linalg.eigh(H)
    r = V[:, 0]  # the slowest eigendirection: r(k) = (1 - eta lambda_0)^k r(0)
    losses = []
    for _ in range(20):
        losses.append(0.5 * r @ r)
        r = r - eta * H @ r
    rate = theory.kernel_loss_rate(eta, lam[0])
    assert -np.polyfit(np.arange(20), np.log(losses), 1)[0] == pytest.approx(rate, rel=1e-9)
    assert rate >= -np.log(theory.du_linear_rate(eta, lam[0], 1))  # Du et al.'s bound is weaker
    assert theory.kernel_loss_rate(8 * eta, lam[0], reduction="mean", n=8) == pytest.approx(
        rate, rel=1e-14)
    both = theory.kernel_loss_rate(np.array([eta, 2 / lam[0]]), np.array([lam[0], lam[0]]))
    assert both.shape == (2,) and both[0] == rate and np.isnan(both[1])  # no contraction
    with pytest.raises(ValueError, match="needs n"):
        theory.kernel_loss_rate(eta, lam[0], reduction="mean")
