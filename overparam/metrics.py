"""Per-step metrics of one network: iterate radius, pattern flips, error, margin.

All functions act on one network; the engine vmaps them over networks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from overparam import model


def orthonormalize(W: jax.Array) -> jax.Array:
    """Orthonormal rows spanning W's, by Gram-Schmidt applied twice (CGS2). W: (b, k).

    For the few vectors of the power iteration this is plain vector arithmetic,
    which XLA fuses; LAPACK's QR in a vmapped while loop cost more than the
    rest of the metrics together on the CPU (BENCHMARKS.md). A row in the span
    of the previous ones (or zero) comes out as rounding noise, normalized.
    """
    rows = []
    for j in range(W.shape[0]):
        w = W[j]
        for _ in range(2):
            for q in rows:
                w = w - jnp.dot(q, w) * q
        rows.append(w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(W.dtype).tiny))
    return jnp.stack(rows)


def spectral_norm(D: jax.Array, V: jax.Array, *, tol: float, max_iters: int,
                  precision=jax.lax.Precision.HIGHEST) -> tuple[jax.Array, jax.Array]:
    """||D||_2 by block power iteration with Rayleigh-Ritz, warm-started from `V`.

    D: (m, k); V: (k, b) with b small (the previous step's Ritz vectors, best
    first; the engine puts a fresh random vector in the last column each step).
    The estimate sigma = sqrt(top Ritz value of D^T D on span(Q)) starts from
    Q = orth(V); each iteration sets Q <- orth(D^T D Q). sigma only grows and
    never exceeds ||D||_2; it stops once sigma changes by at most tol * sigma,
    or after max_iters iterations. A warm start usually stops after one
    iteration: two passes over D, plus one for the start. A block converges at
    the rate sigma_{b+1}/sigma_1 rather than sigma_2/sigma_1 and follows a
    change of the top direction among its b vectors; the random column makes a
    start orthogonal to the top direction improbable.
    Returns (sigma, Ritz vectors (k, b), best first). For D = 0: (0, V).
    """
    # The block is kept as rows, Q: (b, k), and the passes over D are written so
    # that D^T P comes out as (b, k): vmapped, XLA:CPU computes it as (k, b)
    # about 8x slower (width 1024), which made that pass the main cost of the
    # metrics at depth 3 (benchmarks/overhead.py).
    ein = functools.partial(jnp.einsum, precision=precision)

    def top_ritz(DQ):  # DQ: (m, b)
        return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(ein("mb,mc->bc", DQ, DQ))[-1], 0.0))

    def body(carry):
        Q, DQ, sigma, _, i = carry
        Q = orthonormalize(ein("mk,mb->bk", D, DQ))
        DQ = ein("mk,bk->mb", D, Q)
        new_sigma = top_ritz(DQ)
        converged = jnp.abs(new_sigma - sigma) <= tol * new_sigma
        return Q, DQ, new_sigma, converged, i + 1

    def cond(carry):
        *_, converged, i = carry
        return (i < max_iters) & ~converged

    Q = orthonormalize(V.T)
    DQ = ein("mk,bk->mb", D, Q)
    sigma = top_ritz(DQ)
    init = (Q, DQ, sigma, sigma == 0, jnp.zeros((), jnp.int32))
    Q, DQ, sigma, _, _ = jax.lax.while_loop(cond, body, init)
    _, rot = jnp.linalg.eigh(ein("mb,mc->bc", DQ, DQ))
    return sigma, jnp.where(sigma > 0, ein("bk,bc->kc", Q, rot[:, ::-1]), V)


GRAM_MAX_FAN_IN = 64  # layers with at most this fan-in: ||D||_2 through D's Gram matrix
POWER_BLOCK = 4       # vectors of the block power iteration on D itself (larger fan-ins)


def block_size(fan_in: int) -> int:
    """Vectors that warm-start the spectral norm of a layer with this fan-in."""
    return 2 if fan_in <= GRAM_MAX_FAN_IN else min(POWER_BLOCK, fan_in)


def layer_spectral_norm(D: jax.Array, V: jax.Array, fresh: jax.Array | None = None, *,
                        tol: float, max_iters: int, precision=jax.lax.Precision.HIGHEST
                        ) -> tuple[jax.Array, jax.Array]:
    """||D||_2 of a layer's D (m, k), warm-started from V (k, block_size(k)), the Ritz
    vectors this returned for the previous step.

    For k <= GRAM_MAX_FAN_IN (a first layer's input dimension, narrow hidden
    layers): `gram_spectral_norm` of the k x k Gram matrix D^T D, one pass over
    D and then only k x k arithmetic, no LAPACK call; its block keeps both
    previous Ritz vectors, so a swap of the top two directions is followed at
    once. Otherwise `spectral_norm`, the block power iteration on D, with the
    random vector `fresh` (k, 1) in place of the last of its four. Either way the
    estimate stops changing by more than tol relative, or max_iters is reached.
    """
    if D.shape[1] <= GRAM_MAX_FAN_IN:
        A = jnp.einsum("mk,mj->kj", D, D, precision=precision)
        return gram_spectral_norm(A, V, tol=tol, max_iters=max_iters, precision=precision)
    if fresh is not None:
        V = V.at[:, -1].set(fresh[:, 0])
    return spectral_norm(D, V, tol=tol, max_iters=max_iters, precision=precision)


def _orthonormal_pair(V: jax.Array) -> jax.Array:
    """Orthonormal columns spanning V's two columns, by Gram-Schmidt applied twice.
    V: (k, 2). A second column in the span of the first comes out as rounding noise."""
    tiny = jnp.finfo(V.dtype).tiny
    q1 = V[:, 0] / jnp.maximum(jnp.linalg.norm(V[:, 0]), tiny)
    w = V[:, 1]
    for _ in range(2):
        w = w - jnp.dot(q1, w) * q1
    return jnp.stack([q1, w / jnp.maximum(jnp.linalg.norm(w), tiny)], axis=1)


def _ritz_pair(A: jax.Array, Q: jax.Array, precision) -> tuple[jax.Array, jax.Array]:
    """The larger eigenvalue of the 2 x 2 matrix R = Q^T A Q and its unit eigenvector,
    in closed form: lambda = (a + c)/2 + sqrt(((a - c)/2)^2 + b^2) for R = [[a, b],
    [b, c]], eigenvector (b, lambda - a) or (lambda - c, b), whichever is longer.
    A: (k, k) symmetric; Q: (k, 2) orthonormal."""
    R = jnp.matmul(Q.T, jnp.matmul(A, Q, precision=precision), precision=precision)
    a, b, c = R[0, 0], 0.5 * (R[0, 1] + R[1, 0]), R[1, 1]
    lam = 0.5 * (a + c) + jnp.sqrt(0.25 * (a - c) ** 2 + b * b)
    y1, y2 = jnp.stack([b, lam - a]), jnp.stack([lam - c, b])
    n1, n2 = jnp.linalg.norm(y1), jnp.linalg.norm(y2)
    tiny = jnp.finfo(A.dtype).tiny
    y = jnp.where(n1 > n2, y1 / jnp.maximum(n1, tiny),
                  jnp.where(n2 > 0, y2 / jnp.maximum(n2, tiny), jnp.eye(2, dtype=A.dtype)[0]))
    return lam, y


def gram_spectral_norm(A: jax.Array, V: jax.Array, *, tol: float, max_iters: int,
                       precision=jax.lax.Precision.HIGHEST) -> tuple[jax.Array, jax.Array]:
    """sqrt(lambda_max(A)) of a Gram matrix A = D^T D (k, k): ||D||_2.

    Block power iteration with a block of two, V (k, 2) (the engine passes the
    previous step's two Ritz vectors), on A^2, with
    Rayleigh-Ritz on A in closed form (`_ritz_pair`): each iteration costs a
    few k x k x 2 products. sigma = sqrt(top Ritz value) never exceeds
    ||D||_2; it stops once sigma changes by at most tol * sigma, or after
    max_iters iterations. lambda_max of A is as accurate in float32 as
    sigma_max of D is (relative rounding of A's entries is of the order of
    ||A|| eps), so nothing is lost by squaring for the top singular value.
    A is scaled by its trace first (to lambda_max in [1/k, 1]), so that A^2 V
    neither overflows nor underflows for any ||D||_2 that float32 can square.
    Returns (sigma, the two Ritz vectors (k, 2), best first). For A = 0: (0, V).
    """
    scale = jnp.maximum(jnp.trace(A), jnp.finfo(A.dtype).tiny)
    A = A / scale
    B = jnp.matmul(A, A, precision=precision)
    Q = _orthonormal_pair(V)
    lam, y = _ritz_pair(A, Q, precision)

    def body(carry):
        Q, lam, _, _, i = carry
        Q = _orthonormal_pair(jnp.matmul(B, Q, precision=precision))
        new, y = _ritz_pair(A, Q, precision)
        old_sigma, sigma = jnp.sqrt(jnp.maximum(lam, 0.0)), jnp.sqrt(jnp.maximum(new, 0.0))
        return Q, new, y, jnp.abs(sigma - old_sigma) <= tol * sigma, i + 1

    def cond(carry):
        *_, converged, i = carry
        return (i < max_iters) & ~converged

    init = (Q, lam, y, lam <= 0, jnp.zeros((), jnp.int32))
    Q, lam, y, _, _ = jax.lax.while_loop(cond, body, init)
    sigma = jnp.sqrt(jnp.maximum(lam, 0.0) * scale)
    ritz = jnp.matmul(Q, jnp.stack([y, jnp.stack([-y[1], y[0]])], axis=1), precision=precision)
    return sigma, jnp.where(sigma > 0, ritz, V)


def symmetric_norm(S: jax.Array) -> jax.Array:
    """||S||_2 of a symmetric matrix: its largest |eigenvalue|. S: (n, n)."""
    return jnp.max(jnp.abs(jnp.linalg.eigvalsh(S)))


def ntk_gram(net: model.Net, X: jax.Array, *, param: str, train_output: bool,
             precision=jax.lax.Precision.HIGHEST) -> jax.Array:
    """Empirical NTK Gram matrix H_ij = sum_theta df(x_i)/dtheta . df(x_j)/dtheta, (n, n).

    theta: the hidden weights (and the output weights with train_output). With
    delta_l = df/dz_l (m, n) and g_l = h_{l-1} (fan_in, n), the inputs of layer l
    (one column per example, as `model.apply` lays them out),
    df(x_i)/dW_l = c_l delta_l[:, i] g_l[:, i]^T, so each layer adds
    c_l^2 (delta_l^T delta_l) * (g_l^T g_l) (elementwise): O(n^2 m) per layer,
    no Jacobian is formed. X: (n, d).
    """
    width, depth = net.out.shape[0], len(net.hidden)
    scales, out_scale = model.forward_scales(param, d=X.shape[-1], width=width, depth=depth)
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
