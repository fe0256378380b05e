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


def symmetric_norm(S: jax.Array) -> jax.Array:
    """||S||_2 of a symmetric matrix: its largest |eigenvalue|. S: (n, n)."""
    return jnp.max(jnp.abs(jnp.linalg.eigvalsh(S)))


def ntk_gram(net: model.Net, X: jax.Array, *, param: str, train_output: bool,
             precision=jax.lax.Precision.HIGHEST) -> jax.Array:
    """Empirical NTK Gram matrix H_ij = sum_theta df(x_i)/dtheta . df(x_j)/dtheta, (n, n).

    theta: the hidden weights (and the output weights with train_output). With
    delta_l = df/dz_l (n, m) and g_l = h_{l-1} (n, fan_in), the inputs of layer l,
    df(x_i)/dW_l = c_l delta_l[i] g_l[i]^T, so each layer adds
    c_l^2 (delta_l delta_l^T) * (g_l g_l^T) (elementwise): O(n^2 m) per layer,
    no Jacobian is formed. X: (n, d).
    """
    width, depth = net.out.shape[0], len(net.hidden)
    scales, out_scale = model.forward_scales(param, d=X.shape[-1], width=width, depth=depth)
    mm = functools.partial(jnp.matmul, precision=precision)

    def f_sum(taps):  # d f / d taps = delta
        f, pre = model.apply(net, X, param=param, precision=precision, taps=taps)
        return jnp.sum(f), pre

    taps = tuple(jnp.zeros((X.shape[0], width), X.dtype) for _ in range(depth))
    deltas, pre = jax.grad(f_sum, has_aux=True)(taps)
    hidden = [jax.nn.relu(z) for z in pre]
    inputs, h_last = [X, *hidden[:-1]], hidden[-1]
    H = sum(c**2 * mm(dl, dl.T) * mm(g, g.T) for c, dl, g in zip(scales, deltas, inputs))
    if train_output:
        H = H + out_scale**2 * mm(h_last, h_last.T)
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
    """Fraction of (example, neuron) pairs with 1{z > 0} != pattern0. z, pattern0: (n, m).

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
