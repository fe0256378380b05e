"""Tests of overparam.metrics against NumPy and explicit loops.

spectral_norm, by both of its routes (through D^T D for small fan-ins, passes over
D otherwise), is checked against np.linalg.norm(D, 2) (an SVD) on matrices that are
hard for power iteration (rank-deficient, rank-1, a near-tie of the top two
singular values, extreme scales) and for its warm start; the other metrics against loops over
rows, examples and neurons. float64 runs under `jax.enable_x64(True)`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overparam import metrics

ROUTES = ["gram", "passes"]  # through D^T D (fan-in <= GRAM_MAX_FAN_IN), or passes over D


@functools.cache
def _spectral_jit(route):
    """spectral_norm jitted with its route fixed: 'passes' forces the iteration on D
    itself by tracing with GRAM_MAX_FAN_IN = 0. tol and max_iters go in as traced
    arguments (one compilation per shape instead of one per call)."""
    def fn(D, V, tol, max_iters):
        saved = metrics.GRAM_MAX_FAN_IN
        metrics.GRAM_MAX_FAN_IN = saved if route == "gram" else 0
        try:
            return metrics.spectral_norm(D, V, tol=tol, max_iters=max_iters)
        finally:
            metrics.GRAM_MAX_FAN_IN = saved
    return jax.jit(fn)


def _spectral64(D, V, tol, max_iters, route="gram"):
    """spectral_norm in float64 with V as columns (k, 2) in and out (it takes rows)."""
    with jax.enable_x64(True):
        sigma, V_out = _spectral_jit(route)(
            jnp.asarray(D, jnp.float64), jnp.asarray(V, jnp.float64).T,
            jnp.asarray(tol, jnp.float64), jnp.asarray(max_iters, jnp.int32))
        assert sigma.dtype == jnp.float64 and V_out.dtype == jnp.float64
        assert sigma.shape == ()
        return float(sigma), np.asarray(V_out).T


def _with_singular_values(rng, m, k, s):
    U, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    V, _ = np.linalg.qr(rng.standard_normal((k, len(s))))
    return (U * np.asarray(s)) @ V.T


def _matrix(kind, rng):
    if kind == "square":
        return rng.standard_normal((12, 12))
    if kind == "wide":  # m < k
        return rng.standard_normal((5, 17))
    if kind == "tall":  # m > k
        return rng.standard_normal((23, 6))
    if kind == "rank1":
        return np.outer(rng.standard_normal(9), rng.standard_normal(7))
    if kind == "rank_deficient":
        return rng.standard_normal((14, 3)) @ rng.standard_normal((3, 11))
    if kind == "near_tie":  # sigma_1 / sigma_2 = 1 + 1e-8
        return _with_singular_values(rng, 10, 8, [3.0, 3.0 * (1 - 1e-8), 1.0, 0.5, 0.1])
    if kind == "tiny_scale":
        return 1e-30 * rng.standard_normal((6, 4))
    if kind == "huge_scale":
        return 1e30 * rng.standard_normal((6, 4))
    raise ValueError(kind)


KINDS = ["square", "wide", "tall", "rank1", "rank_deficient", "near_tie", "tiny_scale",
         "huge_scale"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("kind", KINDS)
def test_spectral_norm_matches_svd(kind, route):
    rng = np.random.default_rng(KINDS.index(kind) + 10 * ROUTES.index(route))
    D = _matrix(kind, rng)
    k = D.shape[1]
    sigma, V = _spectral64(D, rng.standard_normal((k, 2)), tol=1e-13, max_iters=5000,
                           route=route)
    want = np.linalg.norm(D, 2)
    assert abs(sigma - want) <= 1e-6 * want, (sigma, want)
    # The estimate is a Ritz value: it never exceeds ||D||_2.
    assert sigma <= want * (1 + 1e-12)
    # V: orthonormal columns, best first, ||D V[:, 0]|| = sigma.
    assert V.shape == (k, 2)
    np.testing.assert_allclose(V.T @ V, np.eye(2), atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(D @ V[:, 0]), sigma, rtol=1e-6)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("kind", ["square", "tall", "wide"])
def test_spectral_norm_returns_top_right_singular_vector_first(kind, route):
    rng = np.random.default_rng(100 + KINDS.index(kind))
    D = _matrix(kind, rng)
    _, V = _spectral64(D, rng.standard_normal((D.shape[1], 2)), tol=1e-15, max_iters=5000,
                       route=route)
    v_top = np.linalg.svd(D)[2][0]
    assert abs(abs(V[:, 0] @ v_top) - 1.0) < 1e-6


@pytest.mark.parametrize("shape", [(1024, 32), (64, 32), (300, 64), (5, 40), (40, 100),
                                   (256, 256)])
@pytest.mark.parametrize("scale", [1.0, 1e12, 1e-12])  # D^T D and its square over/underflow
def test_spectral_norm_float32(shape, scale):
    rng = np.random.default_rng(27)
    D = (scale * rng.standard_normal(shape)).astype(np.float32)
    D[:, 0] *= 3.0  # a clear top direction, as a training run has
    V0 = jnp.asarray(rng.standard_normal((2, shape[1])), jnp.float32)
    sigma, V = metrics.spectral_norm(jnp.asarray(D), V0, tol=1e-7, max_iters=500)
    assert sigma.dtype == jnp.float32 and V.dtype == jnp.float32 and V.shape == (2, shape[1])
    np.testing.assert_allclose(float(sigma), np.linalg.norm(D.astype(np.float64), 2), rtol=1e-6)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("shape", [(4, 6), (7, 3)])
def test_spectral_norm_of_zero_is_zero_and_keeps_v(shape, route):
    rng = np.random.default_rng(8)
    V0 = rng.standard_normal((shape[1], 2))
    sigma, V = _spectral64(np.zeros(shape), V0, tol=1e-10, max_iters=50, route=route)
    assert sigma == 0.0
    np.testing.assert_array_equal(V, V0)


@pytest.mark.parametrize("route", ROUTES)
def test_spectral_norm_unnormalized_start_returns_orthonormal_v(route):
    rng = np.random.default_rng(9)
    D = rng.standard_normal((8, 5))
    V0 = 1e3 * rng.standard_normal((5, 2))
    V0[:, 1] = 2.0 * V0[:, 0] + 1e-3 * V0[:, 1]  # nearly dependent columns
    sigma, V = _spectral64(D, V0, tol=1e-12, max_iters=1000, route=route)
    np.testing.assert_allclose(V.T @ V, np.eye(2), atol=1e-12)
    assert abs(sigma - np.linalg.norm(D, 2)) <= 1e-6 * np.linalg.norm(D, 2)


@pytest.mark.parametrize("route", ROUTES)
def test_spectral_norm_estimate_only_grows_with_iterations(route):
    """sigma after k iterations (no early stop) is nondecreasing in k and <= ||D||_2."""
    rng = np.random.default_rng(14)
    D = rng.standard_normal((10, 8))
    V0 = rng.standard_normal((8, 2))
    sigmas = [_spectral64(D, V0, tol=1e-300, max_iters=k, route=route)[0] for k in range(1, 7)]
    steps = zip(sigmas[:-1], sigmas[1:], strict=True)
    assert all(s1 <= s2 * (1 + 1e-14) for s1, s2 in steps), sigmas
    assert sigmas[-1] > sigmas[0]
    assert sigmas[-1] <= np.linalg.norm(D, 2) * (1 + 1e-12)


@pytest.mark.parametrize("route,power", [("gram", 2), ("passes", 1)])
def test_spectral_norm_one_iteration_is_one_block_power_step(route, power):
    """max_iters=1: sigma^2 is the top Ritz value of A = D^T D on span(A^p V), p = 2 for
    the Gram route (which multiplies by A^2), 1 for passes over D."""
    rng = np.random.default_rng(11)
    D = rng.standard_normal((9, 6))
    V0 = rng.standard_normal((6, 2))
    sigma, V = _spectral64(D, V0, tol=1e-12, max_iters=1, route=route)
    A = D.T @ D
    Q, _ = np.linalg.qr(np.linalg.matrix_power(A, power) @ V0)
    ritz = np.linalg.eigvalsh(Q.T @ A @ Q)
    np.testing.assert_allclose(sigma ** 2, ritz[-1], rtol=1e-12)
    np.testing.assert_allclose(V @ V.T, Q @ Q.T, atol=1e-12)  # the same span


@pytest.mark.slow
@pytest.mark.parametrize("route", ROUTES)
def test_fixed_spectral_norm_takes_exactly_max_iters_iterations(route):
    """fixed=True (the accelerators' fori_loop, no early stop) gives the early-stop loop's
    result when a tolerance never stops it (tol = -1), to float64 rounding (the two loops
    compile apart), for several counts; and from a warm start (the previous V) 8
    iterations match the SVD as the early stop does."""
    rng = np.random.default_rng(19)
    D = rng.standard_normal((30, 20))
    V0 = rng.standard_normal((20, 2))
    for k in (1, 3, 8):
        with jax.enable_x64(True):
            fixed = jax.jit(lambda D, V, k=k: _with_route(route, lambda: metrics.spectral_norm(
                D, V, tol=1e-6, max_iters=k, fixed=True)))(jnp.asarray(D), jnp.asarray(V0.T))
        stopped = _spectral64(D, V0, tol=-1.0, max_iters=k, route=route)
        np.testing.assert_allclose(float(fixed[0]), stopped[0], rtol=1e-13)
        np.testing.assert_allclose(np.asarray(fixed[1]).T, stopped[1], atol=1e-12)
        if k > 1:  # it iterated: k - 1 iterations give another estimate
            fewer = _spectral64(D, V0, tol=-1.0, max_iters=k - 1, route=route)
            assert abs(fewer[0] - stopped[0]) > 1e-10 * stopped[0]
    _, V = _spectral64(D, V0, tol=1e-14, max_iters=10000, route=route)
    D2 = D + 1e-3 * rng.standard_normal(D.shape)
    with jax.enable_x64(True):
        sigma = float(_with_route(route, lambda: metrics.spectral_norm(
            jnp.asarray(D2), jnp.asarray(V.T), tol=0.0, max_iters=8, fixed=True))[0])
    assert abs(sigma - np.linalg.norm(D2, 2)) <= 1e-8 * np.linalg.norm(D2, 2)


@pytest.mark.slow
def test_fixed_conv_operator_norm_takes_exactly_max_iters_iterations():
    rng = np.random.default_rng(20)
    with jax.enable_x64(True):
        D = jnp.asarray(rng.standard_normal((3, 3, 2, 3)))
        V0 = jnp.asarray(rng.standard_normal((2, 4, 4, 2)))
        for k in (1, 5):
            fixed = metrics.conv_operator_norm(D, V0, tol=1e-6, max_iters=k, fixed=True)
            stopped = metrics.conv_operator_norm(D, V0, tol=-1.0, max_iters=k)
            np.testing.assert_allclose(float(fixed[0]), float(stopped[0]), rtol=1e-13)
            np.testing.assert_allclose(fixed[1], stopped[1], atol=1e-12)


def _with_route(route, fn):
    """fn() traced with spectral_norm's route fixed (as `_spectral_jit`)."""
    saved = metrics.GRAM_MAX_FAN_IN
    metrics.GRAM_MAX_FAN_IN = saved if route == "gram" else 0
    try:
        return fn()
    finally:
        metrics.GRAM_MAX_FAN_IN = saved


@pytest.mark.parametrize("route", ROUTES)
def test_spectral_norm_warm_start_converges_in_few_iterations(route):
    """Warm-started from the previous V on a slightly moved D, the loop stops within
    3 iterations: max_iters=3 gives exactly the result of max_iters=10000. Cold, it
    does not (which shows the comparison can detect a longer run)."""
    rng = np.random.default_rng(10)
    D = rng.standard_normal((30, 20))
    tol = 1e-10
    _, V = _spectral64(D, rng.standard_normal((20, 2)), tol=1e-14, max_iters=10000,
                       route=route)
    D2 = D + 1e-6 * rng.standard_normal(D.shape)
    warm_short = _spectral64(D2, V, tol=tol, max_iters=3, route=route)
    warm_long = _spectral64(D2, V, tol=tol, max_iters=10000, route=route)
    assert warm_short[0] == warm_long[0]
    np.testing.assert_array_equal(warm_short[1], warm_long[1])
    assert abs(warm_long[0] - np.linalg.norm(D2, 2)) <= 1e-8 * np.linalg.norm(D2, 2)

    cold = rng.standard_normal((20, 2))
    cold_short = _spectral64(D2, cold, tol=tol, max_iters=3, route=route)
    cold_long = _spectral64(D2, cold, tol=tol, max_iters=10000, route=route)
    assert cold_short[0] != cold_long[0]


@pytest.mark.parametrize("route", ROUTES)
def test_spectral_norm_block_follows_a_swap_of_the_top_two_directions(route):
    """D has top singular values (2, 1.9) on directions (p1, p2); D2 swaps them to
    (1.9, 2). Warm-started on D, the block holds both directions and finds ||D2||_2
    within 3 iterations."""
    rng = np.random.default_rng(15)
    m, k = 12, 9
    U, _ = np.linalg.qr(rng.standard_normal((m, 4)))
    P, _ = np.linalg.qr(rng.standard_normal((k, 4)))
    s = np.array([2.0, 1.9, 0.5, 0.2])
    D = (U * s) @ P.T
    D2 = (U * s[[1, 0, 2, 3]]) @ P.T
    tol = 1e-12
    _, V = _spectral64(D, rng.standard_normal((k, 2)), tol=1e-15, max_iters=10000, route=route)
    short = _spectral64(D2, V, tol=tol, max_iters=3, route=route)
    long = _spectral64(D2, V, tol=tol, max_iters=10000, route=route)
    assert short[0] == long[0]
    np.testing.assert_allclose(short[0], 2.0, rtol=1e-12)
    assert abs(abs(short[1][:, 0] @ P[:, 1]) - 1.0) < 1e-8


@pytest.mark.slow
def test_both_routes_agree_in_float32():
    rng = np.random.default_rng(31)
    for shape in [(64, 32), (300, 16)]:
        D = rng.standard_normal(shape).astype(np.float32)
        V0 = rng.standard_normal((2, shape[1])).astype(np.float32)
        gram = _spectral_jit("gram")(D, V0, np.float32(1e-7), np.int32(500))[0]
        passes = _spectral_jit("passes")(D, V0, np.float32(1e-7), np.int32(500))[0]
        np.testing.assert_allclose(float(gram), float(passes), rtol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 1e-20])
def test_orthonormal_pair_gives_orthonormal_rows_with_the_same_span(scale):
    """Against NumPy's QR in float64: Q Q^T = I and the same projector onto the row span."""
    rng = np.random.default_rng(21)
    W = scale * rng.standard_normal((2, 7)) * np.array([[1.0], [1e-3]])  # graded rows
    with jax.enable_x64(True):
        Q = np.asarray(metrics.orthonormal_pair(jnp.asarray(W)))
    np.testing.assert_allclose(Q @ Q.T, np.eye(2), atol=1e-12)
    ref, _ = np.linalg.qr(W.T)
    np.testing.assert_allclose(Q.T @ Q, ref @ ref.T, atol=1e-10)


def test_initial_spectral_norm_is_exact_for_both_routes():
    rng = np.random.default_rng(32)
    for shape in [(128, 16), (100, 90)]:   # fan-in below and above GRAM_MAX_FAN_IN
        W = rng.standard_normal(shape).astype(np.float32)
        V0 = jnp.asarray(rng.standard_normal((2, shape[1])), jnp.float32)
        got = float(metrics.initial_spectral_norm(jnp.asarray(W), V0))
        np.testing.assert_allclose(got, np.linalg.norm(W.astype(np.float64), 2), rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (3, 8), (16, 16)])
def test_frobenius_and_rowmax_norm(shape):
    rng = np.random.default_rng(shape[0] * 31 + shape[1])
    D = rng.standard_normal(shape)
    D[0] *= 3.0  # make one row stand out
    with jax.enable_x64(True):
        fro = float(metrics.frobenius_norm(jnp.asarray(D)))
        rowmax = float(metrics.rowmax_norm(jnp.asarray(D)))
    np.testing.assert_allclose(fro, np.linalg.norm(D, "fro"), rtol=1e-14)
    best = 0.0
    for r in range(shape[0]):
        best = max(best, float(np.sqrt(sum(x * x for x in D[r]))))
    np.testing.assert_allclose(rowmax, best, rtol=1e-14)


def test_row_norms_match_a_loop():
    rng = np.random.default_rng(16)
    D = rng.standard_normal((7, 5))
    with jax.enable_x64(True):
        got = np.asarray(metrics.row_norms(jnp.asarray(D)))
    want = [np.sqrt(sum(x * x for x in row)) for row in D]
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_rowmax_norm_picks_the_largest_row():
    D = np.zeros((4, 3))
    D[2] = [3.0, 4.0, 0.0]
    D[1] = [1.0, 1.0, 1.0]
    assert float(metrics.rowmax_norm(jnp.asarray(D, jnp.float32))) == 5.0
    np.testing.assert_allclose(float(metrics.frobenius_norm(jnp.asarray(D, jnp.float32))),
                               np.sqrt(28.0), rtol=1e-7)


# --------------------------------------------------------------- flips etc.


@pytest.mark.parametrize("n,m", [(1, 1), (4, 7), (9, 5)])
def test_flip_fraction_matches_double_loop(n, m):
    rng = np.random.default_rng(n * 13 + m)
    z = rng.standard_normal((n, m))
    z[rng.random((n, m)) < 0.2] = 0.0  # z == 0 is inactive
    pattern0 = rng.random((n, m)) < 0.5
    flips = 0
    for i in range(n):
        for r in range(m):
            flips += int((z[i, r] > 0) != pattern0[i, r])
    got = float(metrics.flip_fraction(jnp.asarray(z, jnp.float32), jnp.asarray(pattern0)))
    np.testing.assert_allclose(got, flips / (n * m), rtol=1e-6)


def test_flip_fraction_counts_exactly_past_bfloat16_integers():
    """The flips are summed in z's dtype: counts far above 256 (where bfloat16 stops
    holding every integer) are exact."""
    rng = np.random.default_rng(17)
    z = rng.standard_normal((40, 300)).astype(np.float32)
    pattern0 = rng.random((40, 300)) < 0.3
    flips = int(np.sum((z > 0) != pattern0))
    assert flips > 4000
    got = float(metrics.flip_fraction(jnp.asarray(z), jnp.asarray(pattern0)))
    assert round(got * z.size) == flips
    np.testing.assert_allclose(got, flips / z.size, rtol=1e-7)


def test_flip_fraction_extremes():
    z = jnp.asarray([[1.0, -1.0, 0.0], [2.0, 0.0, -3.0]])
    assert float(metrics.flip_fraction(z, z > 0)) == 0.0
    assert float(metrics.flip_fraction(z, ~(z > 0))) == 1.0


def test_zero_one_error_counts_zero_output_as_error():
    f = np.array([1.0, -2.0, 0.0, 0.5, -0.1, 0.0, 3.0, -0.0])
    y = np.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 1.0])
    want = sum(1 for fi, yi in zip(f, y, strict=True) if yi * fi <= 0) / len(f)
    assert want == 6 / 8  # errors at indices 1, 2 (f = 0), 3, 5 (f = 0), 6, 7 (f = -0)
    got = float(metrics.zero_one_error(jnp.asarray(f, jnp.float32), jnp.asarray(y, jnp.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-7)
    ones = jnp.ones(4)
    assert float(metrics.zero_one_error(ones, ones)) == 0.0
    assert float(metrics.zero_one_error(jnp.zeros(4), ones)) == 1.0


def test_regression_error_strict_tolerance():
    f = np.array([0.0, 1.0, 2.5, -1.0, 0.25])
    y = np.array([0.0, 1.5, 2.0, 1.0, 0.0])
    tol = 0.5
    want = sum(1 for fi, yi in zip(f, y, strict=True) if abs(fi - yi) > tol) / len(f)
    assert want == 1 / 5  # |1-1.5| = |2.5-2| = 0.5 are not errors; |-1-1| = 2 is
    got = float(metrics.regression_error(jnp.asarray(f, jnp.float32),
                                         jnp.asarray(y, jnp.float32), tol))
    np.testing.assert_allclose(got, want, rtol=1e-7)


def test_min_margin():
    rng = np.random.default_rng(12)
    f = rng.standard_normal(11)
    y = rng.choice([-1.0, 1.0], size=11)
    with jax.enable_x64(True):
        got = float(metrics.min_margin(jnp.asarray(f), jnp.asarray(y)))
    assert got == min(yi * fi for fi, yi in zip(f, y, strict=True))


def test_global_norm():
    rng = np.random.default_rng(13)
    tree = {"a": rng.standard_normal((3, 4)),
            "b": (rng.standard_normal(5), rng.standard_normal(()))}
    want = np.sqrt(sum(np.sum(np.square(x)) for x in (tree["a"], *tree["b"])))
    with jax.enable_x64(True):
        got = float(metrics.global_norm(jax.tree_util.tree_map(jnp.asarray, tree)))
    np.testing.assert_allclose(got, want, rtol=1e-14)
