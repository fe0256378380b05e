"""Test settings: CPU and strict rank promotion.

float64 references are NumPy computations or run inside `jax.enable_x64(True)`;
the global x64 flag stays off, as in a float32 sweep.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
