"""Per-example losses and their reduction.

  squared        (1/2) (f - y)^2                  Du et al. 2018, eq. (2)
  hinge          max(0, 1 - y f)                  Zou et al. 2018, section 3
  squared_hinge  max(0, 1 - y f)^2
  exponential    exp(-y f)
  logistic       log(1 + exp(-y f))

Reduction 'sum' gives L = sum_i l_i (Du et al.), 'mean' gives (1/n) sum_i l_i
(Zou et al.). A minibatch B of size b estimates the full-batch loss without
bias: (n/b) sum_{i in B} l_i for 'sum', (1/b) sum_{i in B} l_i for 'mean'.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def per_example(loss: str, f: jax.Array, y: jax.Array) -> jax.Array:
    """f, y: (n,) -> (n,) losses."""
    if loss == "squared":
        return 0.5 * (f - y) ** 2
    z = y * f
    if loss == "hinge":
        return jax.nn.relu(1.0 - z)
    if loss == "squared_hinge":
        return jax.nn.relu(1.0 - z) ** 2
    if loss == "exponential":
        return jnp.exp(-z)
    if loss == "logistic":
        return jax.nn.softplus(-z)
    raise ValueError(f"unknown loss {loss!r}")


def reduce(values: jax.Array, *, reduction: str, n: int) -> jax.Array:
    """values: (b,) losses of a batch drawn from n points -> the unbiased loss estimate."""
    b = values.shape[0]
    return jnp.sum(values) * (n / b if reduction == "sum" else 1.0 / b)
