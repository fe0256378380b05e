"""Per-step metrics of one network: iterate radius, pattern flips, error, margin.

All functions act on one network; the engine vmaps them over networks.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from overparam import model

GRAM_MAX_FAN_IN = 64  # layers with at most this fan-in iterate on D's Gram matrix
INIT_POWER_ITERS, INIT_POWER_TOL = 1000, 1e-7  # ||W(0)||_2 of a wide layer: a cold start


def _rows(first: jax.Array, second: jax.Array) -> jax.Array:
    """The (2, k) matrix with these rows, as a broadcast select: under vmap a stack
    would add a transposing copy, a kernel of its own, for every use."""
    return jnp.where(jnp.arange(2)[:, None] == 0, first[None, :], second[None, :])


def orthonormal_pair(Q: jax.Array, precision=jax.lax.Precision.HIGHEST) -> jax.Array:
    """Orthonormal rows spanning Q's two rows, by Gram-Schmidt applied twice. Q: (2, k).

    Plain vector arithmetic that XLA fuses (LAPACK's QR in a vmapped loop cost
    more than the rest of the metrics together). A second row in the span of
    the first (or zero) comes out as rounding noise, normalized.
    """
    tiny = jnp.finfo(Q.dtype).tiny
    q1 = Q[0] / jnp.maximum(jnp.linalg.norm(Q[0]), tiny)
    w = Q[1]
    for _ in range(2):
        w = w - jnp.dot(q1, w, precision=precision) * q1
    return _rows(q1, w / jnp.maximum(jnp.linalg.norm(w), tiny))


def top_ritz_pair(Q: jax.Array, QA: jax.Array, precision=jax.lax.Precision.HIGHEST
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The larger eigenvalue of R = Q A Q^T (2 x 2) and its unit eigenvector (y0, y1), in
    closed form.

    Q: (2, k) orthonormal rows; QA = Q A (2, k) for a symmetric A. With R =
    [[a, b], [b, c]]: lambda = (a + c)/2 + sqrt(((a - c)/2)^2 + b^2), eigenvector
    (b, lambda - a) or (lambda - c, b), whichever is longer (exact when b = 0).
    precision: of R's matmul (the measurements'; 'highest' by default).
    """
    R = jnp.einsum("bk,ck->bc", Q, QA, precision=precision)
    a, b, c = R[0, 0], 0.5 * (R[0, 1] + R[1, 0]), R[1, 1]
    lam = 0.5 * (a + c) + jnp.sqrt(0.25 * (a - c) ** 2 + b * b)
    n1, n2 = jnp.sqrt(b * b + (lam - a) ** 2), jnp.sqrt((lam - c) ** 2 + b * b)
    tiny = jnp.finfo(Q.dtype).tiny
    first = n1 > n2
    y0 = jnp.where(first, b / jnp.maximum(n1, tiny),
                   jnp.where(n2 > 0, (lam - c) / jnp.maximum(n2, tiny), 1.0))
    y1 = jnp.where(first, (lam - a) / jnp.maximum(n1, tiny),
                   jnp.where(n2 > 0, b / jnp.maximum(n2, tiny), 0.0))
    return lam, y0, y1


def spectral_norm(D: jax.Array, V: jax.Array, *, tol: float, max_iters: int,
                  precision=jax.lax.Precision.HIGHEST,
                  fixed: bool = False) -> tuple[jax.Array, jax.Array]:
    """||D||_2 by block power iteration on A = D^T D with a block of two vectors.

    D: (m, k); V: (2, k), the start as rows: the engine passes the two Ritz
    vectors this returned for the previous step, so that a swap of the top two
    directions is followed at once (a random vector in place of the second lost
    the top direction when it swapped with the second: 8e-4 error, measured).
    A is scaled by its trace, ||D||_F^2 >= lambda_max(A), so nothing over- or
    underflows. Each iteration sets Q <- orth(Q A) (rows) and takes the top
    Ritz value of A on span(Q) in closed form (`top_ritz_pair`): no LAPACK
    call. For k <= GRAM_MAX_FAN_IN, A (k x k) is formed once (one pass over D)
    and each iteration multiplies by A^2; otherwise each iteration is two
    passes over D, Q D^T and then (Q D^T) D, written so that every product
    has its contraction on an operand's last axis or its rhs's first (the
    forms XLA:CPU gives to YNNPACK). sigma = sqrt(top Ritz value) never exceeds
    ||D||_2; it stops once sigma changes by at most tol * sigma, or after
    max_iters iterations. fixed: exactly max_iters iterations, no early
    stop: a loop whose trip count is a constant, which an accelerator runs
    without reading a predicate back on the host at every iteration (the
    early stop's is one round trip per iteration). lambda_max(A) is as
    accurate in float32 as sigma_max(D) is: squaring loses nothing for the
    top singular value. Returns (sigma, the two Ritz vectors as rows (2, k),
    best first). For D = 0: (0, V).
    """
    ein = functools.partial(jnp.einsum, precision=precision)
    if D.shape[1] <= GRAM_MAX_FAN_IN:
        A = ein("mk,mj->kj", D, D)
        scale = jnp.maximum(jnp.trace(A), jnp.finfo(D.dtype).tiny)
        A = A / scale
        A2 = ein("kj,jl->kl", A, A)
        times_a = lambda Q: ein("bk,kj->bj", Q, A)
        power_step = lambda Q, QA: orthonormal_pair(ein("bk,kj->bj", Q, A2), precision)
    else:
        scale = jnp.maximum(jnp.sum(D * D), jnp.finfo(D.dtype).tiny)
        times_a = lambda Q: ein("bm,mk->bk", ein("bk,mk->bm", Q, D), D) / scale
        power_step = lambda Q, QA: orthonormal_pair(QA, precision)
    return _block_power(times_a, power_step, V, scale, tol=tol, max_iters=max_iters,
                        fixed=fixed, precision=precision)


def _block_power(times_a, power_step, V: jax.Array, scale: jax.Array, *, tol: float,
                 max_iters: int, fixed: bool = False,
                 precision=jax.lax.Precision.HIGHEST) -> tuple[jax.Array, jax.Array]:
    """sqrt(scale lambda_max(A)) and the two Ritz vectors (2, k) of a symmetric PSD A (scaled
    to lambda_max <= 1) by `spectral_norm`'s block power iteration from V (2, k):
    times_a(Q) = Q A, power_step(Q, QA) the next orthonormal block. Stops early (a
    lax.while_loop on the change of sigma) or, fixed, takes max_iters iterations (a
    fori_loop with constant bounds: a fixed trip count)."""

    def body(carry):
        Q, QA, lam, _, _, _, i = carry
        Q = power_step(Q, QA)
        QA = times_a(Q)
        new, y0, y1 = top_ritz_pair(Q, QA, precision)
        sigma, old = jnp.sqrt(jnp.maximum(new, 0.0)), jnp.sqrt(jnp.maximum(lam, 0.0))
        return Q, QA, new, y0, y1, jnp.abs(sigma - old) <= tol * sigma, i + 1

    def cond(carry):
        *_, converged, i = carry
        return (i < max_iters) & ~converged

    Q = orthonormal_pair(V, precision)
    QA = times_a(Q)
    lam, y0, y1 = top_ritz_pair(Q, QA, precision)
    init = (Q, QA, lam, y0, y1, lam <= 0, jnp.zeros((), jnp.int32))
    if fixed:
        Q, _, lam, y0, y1, _, _ = jax.lax.fori_loop(0, max_iters, lambda _, c: body(c), init)
    else:
        Q, _, lam, y0, y1, _, _ = jax.lax.while_loop(cond, body, init)
    sigma = jnp.sqrt(jnp.maximum(lam, 0.0) * scale)
    ritz = _rows(y0 * Q[0] + y1 * Q[1], y0 * Q[1] - y1 * Q[0])
    return sigma, jnp.where(sigma > 0, ritz, V)


def conv_operator_norm(D: jax.Array, V: jax.Array, *, tol: float, max_iters: int,
                       precision=jax.lax.Precision.HIGHEST,
                       fixed: bool = False) -> tuple[jax.Array, jax.Array]:
    """||D||_op of the convolution v -> conv(v, D) (stride 1, 'SAME' padding) on inputs of
    V's shape, by `spectral_norm`'s block power iteration on A = C^T C, C the convolution
    as a linear map: each product passes the block through the convolution and back
    through its transpose (jax.vjp), never forming C.

    D: (kh, kw, c_in, c_out) (flax's layout); V: (2, s, s, c_in), the start (the previous
    call's Ritz vectors warm-start the next). A is scaled by kh kw ||D||_F^2 >=
    ||C||_2^2 (each output is D's inner product with one patch, and every input entry
    lies in at most kh kw patches). fixed: exactly max_iters iterations (as
    `spectral_norm`'s). Returns (sigma, the two Ritz vectors (2, s, s, c_in)).
    """
    shape = V.shape[1:]
    kh, kw = D.shape[:2]
    conv = lambda v: model.conv_same(v.reshape(1, *shape), D, precision=precision)
    scale = jnp.maximum(kh * kw * jnp.sum(D * D), jnp.finfo(D.dtype).tiny)

    def gram_times(q):  # C^T C q for one flattened input q
        out, back = jax.vjp(conv, q.reshape(shape))
        return back(out)[0].reshape(-1)

    times_a = lambda Q: jax.vmap(gram_times)(Q) / scale
    sigma, ritz = _block_power(times_a, lambda Q, QA: orthonormal_pair(QA, precision),
                               V.reshape(2, -1), scale, tol=tol, max_iters=max_iters,
                               fixed=fixed, precision=precision)
    return sigma, ritz.reshape(V.shape)


def initial_spectral_norm(W: jax.Array, V: jax.Array, *,
                          precision=jax.lax.Precision.HIGHEST) -> jax.Array:
    """||W||_2 of a layer at initialization, once per network. W: (m, k); V: (2, k), a
    random start for the block power iteration of a wide layer.

    For k <= GRAM_MAX_FAN_IN, the square root of the top eigenvalue of W^T W by
    LAPACK (exact to rounding, and one precompiled call instead of a loop the
    compiler would have to build); otherwise `spectral_norm` from V, cold, to a
    relative change of INIT_POWER_TOL.
    """
    if W.shape[1] <= GRAM_MAX_FAN_IN:
        A = jnp.einsum("mk,mj->kj", W, W, precision=precision)
        return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(A)[-1], 0.0))
    return spectral_norm(W, V, tol=INIT_POWER_TOL, max_iters=INIT_POWER_ITERS,
                         precision=precision)[0]


def _tree_dot(a, b, precision=jax.lax.Precision.HIGHEST) -> jax.Array:
    return sum(jnp.vdot(x, y, precision=precision)
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _tree_axpy(c, x, y):
    """c x + y for pytrees x, y of one structure and a scalar c."""
    return jax.tree_util.tree_map(lambda u, v: c * u + v, x, y)


def _tree_scale(c, x):
    return jax.tree_util.tree_map(lambda u: c * u, x)


def lanczos_top(matvec, v0, *, iters: int,
                precision=jax.lax.Precision.HIGHEST) -> tuple[jax.Array, object]:
    """The largest eigenvalue of a symmetric operator and its Ritz vector, by `iters` steps
    of Lanczos from v0.

    matvec: v -> A v on pytrees of v0's structure (the weights of a network); v0: the
    start (the previous call's Ritz vector warm-starts the next). The three-term
    recurrence q_{j+1} beta_j = A q_j - alpha_j q_j - beta_{j-1} q_{j-1} builds the
    tridiagonal T (alpha_j = q_j . A q_j, beta_j), whose top eigenvalue theta is the
    estimate; the Ritz vector sum_j s_j q_j (s: theta's eigenvector of T) is rebuilt by
    running the recurrence a second time with the stored alpha, beta, so that no Krylov
    basis is kept: memory is a few copies of v0, time 2 x iters products A v. precision:
    of its inner products (the matvec has its own). A fixed trip count: no early stop.

    Lanczos finds the largest *algebraic* eigenvalue, also of an indefinite A (a loss
    Hessian away from a minimum, whose most negative eigenvalue can be the largest in
    magnitude, where a power iteration would find that one instead), and converges much
    faster than a power iteration. Without reorthogonalization the q_j lose orthogonality
    once theta has converged; that adds copies of converged eigenvalues to T (Paige
    1976), not errors to theta, which stays within rounding of lambda_max(A).

    Where the Krylov space is invariant (beta_j ~ 0: A restricted to it is exact) the
    steps after j are masked out of T (their diagonal set to alpha_0, a Rayleigh
    quotient, their couplings to 0), so they can never raise theta. A zero v0 starts
    from the first leaf's first coordinate.
    """
    leaves, treedef = jax.tree_util.tree_flatten(v0)
    dtype = leaves[0].dtype
    eps, tiny = jnp.finfo(dtype).eps, jnp.finfo(dtype).tiny
    dot = functools.partial(_tree_dot, precision=precision)
    norm0 = jnp.sqrt(dot(v0, v0))
    zero = jax.tree_util.tree_map(jnp.zeros_like, v0)
    first = jnp.zeros_like(leaves[0]).reshape(-1).at[0].set(1.0).reshape(leaves[0].shape)
    e0 = jax.tree_util.tree_unflatten(treedef, [first, *jax.tree_util.tree_leaves(zero)[1:]])
    q0 = jax.tree_util.tree_map(
        lambda v, e: jnp.where(norm0 > 0, v / jnp.maximum(norm0, tiny), e), v0, e0)

    def advance(q_prev, q, beta_prev, alpha=None, beta=None, valid=True):
        """One step of the recurrence: (alpha, beta, next q, whether it goes on); with alpha
        and beta given (the second pass), those are used rather than recomputed."""
        w = _tree_axpy(-beta_prev, q_prev, matvec(q))
        if alpha is None:
            alpha = dot(q, w)
        w = _tree_axpy(-alpha, q, w)
        if beta is None:
            beta = jnp.sqrt(dot(w, w))
            scale = jnp.sqrt(alpha * alpha + beta_prev * beta_prev + beta * beta)
            valid = valid & (beta > 100 * eps * jnp.maximum(scale, tiny))
            beta = jnp.where(valid, beta, 0.0)
        q_next = _tree_scale(jnp.where(valid, 1.0 / jnp.maximum(beta, tiny), 0.0), w)
        return alpha, beta, q_next, valid

    def first_pass(carry, _):
        q_prev, q, beta_prev, valid = carry
        alpha, beta, q_next, goes_on = advance(q_prev, q, beta_prev, valid=valid)
        return (q, q_next, beta, goes_on), (alpha, beta, valid)

    init = (zero, q0, jnp.zeros((), dtype), jnp.ones((), bool))
    _, (alphas, betas, valid) = jax.lax.scan(first_pass, init, None, length=iters)
    alphas = jnp.where(valid, alphas, alphas[0])
    T = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    theta, S = jnp.linalg.eigh(T)

    def second_pass(carry, step):
        q_prev, q, beta_prev, ritz = carry
        s, alpha, beta, ok = step
        ritz = _tree_axpy(jnp.where(ok, s, 0.0), q, ritz)
        _, _, q_next, _ = advance(q_prev, q, beta_prev, alpha, beta, beta > 0)
        return (q, q_next, beta, ritz), None

    (_, _, _, ritz), _ = jax.lax.scan(second_pass, (zero, q0, jnp.zeros((), dtype), zero),
                                      (S[:, -1], alphas, betas, valid))
    length = jnp.sqrt(dot(ritz, ritz))
    ritz = jax.tree_util.tree_map(
        lambda r, q: jnp.where(length > 0.5, r / jnp.maximum(length, tiny), q), ritz, q0)
    return theta[-1], ritz


def symmetric_norm(S: jax.Array) -> jax.Array:
    """||S||_2 of a symmetric matrix: its largest |eigenvalue|. S: (n, n)."""
    return jnp.max(jnp.abs(jnp.linalg.eigvalsh(S)))


def ntk_gram(net: model.Net, X: jax.Array, *, param: str, train_output: bool,
             precision=jax.lax.Precision.HIGHEST) -> jax.Array:
    """Empirical NTK Gram matrix H_ij = sum_theta mu_theta df(x_i)/dtheta . df(x_j)/dtheta,
    (n, n).

    theta: the hidden weights (and the output weights with train_output); mu_theta:
    the step-size multiplier of theta's layer (`model.lr_multipliers`: 1 but under
    mup), so that H is the kernel of GD in function space, df = -eta H dL/df. With
    delta_l = df/dz_l (m, n) and g_l = h_{l-1} (fan_in, n), the inputs of layer l
    (one column per example, as `model.apply` lays them out),
    df(x_i)/dW_l = c_l delta_l[:, i] g_l[:, i]^T, so each layer adds
    mu_l c_l^2 (delta_l^T delta_l) * (g_l^T g_l) (elementwise): O(n^2 m) per layer,
    no Jacobian is formed. X: (n, d).
    """
    width, depth = net.out.shape[0], len(net.hidden)
    scales, out_scale = model.forward_scales(param, d=X.shape[-1], width=width, depth=depth)
    mus, mu_out = model.lr_multipliers(param, width=width, depth=depth)
    scales = [c * math.sqrt(mu) for c, mu in zip(scales, mus)]
    out_scale = out_scale * math.sqrt(mu_out)
    mm = functools.partial(jnp.matmul, precision=precision)

    def f_sum(taps):  # d f / d taps = delta
        f, pre = model.apply(net, X, param=param, precision=precision, taps=taps)
        return jnp.sum(f), pre

    taps = tuple(jnp.zeros((width, X.shape[0]), X.dtype) for _ in range(depth))
    deltas, pre = jax.grad(f_sum, has_aux=True)(taps)
    hidden = [jax.nn.relu(z) for z in pre]
    inputs, h_last = [X.T, *hidden[:-1]], hidden[-1]
    H = sum(c**2 * mm(dl.T, dl) * mm(g.T, g) for c, dl, g in zip(scales, deltas, inputs))
    if train_output:
        H = H + out_scale**2 * mm(h_last.T, h_last)
    return H


def row_norms(D: jax.Array) -> jax.Array:
    """||D[r]||_2 of every row r. D: (m, k).

    frobenius_norm and rowmax_norm both reduce these. Written as two reductions
    of D*D, they share D*D and XLA:CPU wrote it to memory first (both norms
    together 20x slower at width 1024, depth 3); from this vector, one pass.
    """
    return jnp.sqrt(jnp.sum(D * D, axis=1))


def frobenius_norm(D: jax.Array) -> jax.Array:
    """||D||_F. D: (m, k)."""
    return jnp.linalg.norm(row_norms(D))


def rowmax_norm(D: jax.Array) -> jax.Array:
    """max_r ||D[r]||_2, the largest move of one neuron (Du et al.'s R'). D: (m, k)."""
    return jnp.max(row_norms(D))


def flip_fraction(z: jax.Array, pattern0: jax.Array) -> jax.Array:
    """Fraction of (neuron, example) pairs with 1{z > 0} != pattern0. z, pattern0: (m, n).

    The comparison is not fused into the sum on the CPU, so it is written out
    first: as bfloat16 (0 and 1 are exact), half the bytes of float32 (flips
    took 1/6 of the metrics' time at width 1024); the sum is in z's dtype.
    """
    flips = ((z > 0) != pattern0).astype(jnp.bfloat16)
    return jnp.sum(flips, dtype=z.dtype) / z.size


def zero_one_error(f: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of examples with y f <= 0 (a zero output counts as an error). f, y: (n,)."""
    return jnp.mean(y * f <= 0)


def regression_error(f: jax.Array, y: jax.Array, tol: float) -> jax.Array:
    """Fraction of examples with |f - y| > tol. f, y: (n,)."""
    return jnp.mean(jnp.abs(f - y) > tol)


def min_margin(f: jax.Array, y: jax.Array) -> jax.Array:
    """min_i y_i f(x_i). f, y: (n,)."""
    return jnp.min(y * f)


def global_norm(tree) -> jax.Array:
    """sqrt of the sum of squares of every leaf."""
    return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(tree)))


def kernel_alignment(H: jax.Array, y: jax.Array,
                     precision=jax.lax.Precision.HIGHEST) -> jax.Array:
    """The centered kernel-target alignment of a Gram matrix H (n, n) with targets y (n,)
    (Cortes, Mohri & Rostamizadeh 2012; docs/THEORY.md section 10): with C = I - 11^T/n,
    K = C H C and c = C y, A = <K, c c^T>_F / (||K||_F ||c||^2) = c^T K c / (||K||_F c^T c),
    in [-1, 1]."""
    K = H - H.mean(axis=0, keepdims=True)
    K = K - K.mean(axis=1, keepdims=True)
    c = y - y.mean()
    Kc = jnp.matmul(K, c, precision=precision)
    return jnp.dot(c, Kc, precision=precision) / (jnp.linalg.norm(K) * jnp.dot(
        c, c, precision=precision))


def rms(x: jax.Array) -> jax.Array:
    """The root-mean-square of x's entries (every example, position and unit)."""
    return jnp.sqrt(jnp.mean(jnp.square(x)))
