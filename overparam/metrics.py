"""Per-step metrics of one network: iterate radius, pattern flips, error, margin.

All functions act on one network; the engine vmaps them over networks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def spectral_norm(D: jax.Array, v: jax.Array, *, tol: float, max_iters: int,
                  precision=jax.lax.Precision.HIGHEST) -> tuple[jax.Array, jax.Array]:
    """||D||_2 by power iteration on D^T D, warm-started from `v`.

    D: (m, k); v: (k,), the previous step's right singular vector estimate.
    Iterates v <- D^T D v / ||D^T D v|| until the estimate sigma = ||D v||
    (which only increases) changes by at most tol * sigma, at least once and
    at most max_iters times. Between training steps D moves little, so one or
    two iterations usually suffice. Returns (sigma, v). For D = 0, (0, v).
    """

    def body(carry):
        v, sigma, _, i = carry
        u = jnp.matmul(D, v, precision=precision)
        w = jnp.matmul(D.T, u, precision=precision)
        new_sigma = jnp.linalg.norm(u)
        w_norm = jnp.linalg.norm(w)
        v = jnp.where(w_norm > 0, w / jnp.where(w_norm > 0, w_norm, 1.0), v)
        converged = jnp.abs(new_sigma - sigma) <= tol * new_sigma
        return v, new_sigma, converged, i + 1

    def cond(carry):
        _, _, converged, i = carry
        return (i < max_iters) & ~converged

    init = (v, jnp.zeros((), D.dtype), jnp.zeros((), bool), jnp.zeros((), jnp.int32))
    v, _, _, _ = jax.lax.while_loop(cond, body, init)
    # Report ||D v|| for the final (normalized) v: a lower bound that is tight
    # once v has converged to the top right singular vector.
    sigma = jnp.linalg.norm(jnp.matmul(D, v, precision=precision))
    return sigma, v


def frobenius_norm(D: jax.Array) -> jax.Array:
    """||D||_F. D: (m, k)."""
    return jnp.sqrt(jnp.sum(D * D))


def rowmax_norm(D: jax.Array) -> jax.Array:
    """max_r ||D[r]||_2, the largest move of one neuron (Du et al.'s R'). D: (m, k)."""
    return jnp.sqrt(jnp.max(jnp.sum(D * D, axis=1)))


def flip_fraction(z: jax.Array, pattern0: jax.Array) -> jax.Array:
    """Fraction of (example, neuron) pairs with 1{z > 0} != pattern0. z, pattern0: (n, m)."""
    return jnp.mean((z > 0) != pattern0)


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
