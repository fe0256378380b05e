"""Test settings: CPU, strict rank promotion, a private compilation cache.

float64 references are NumPy computations or run inside `jax.enable_x64(True)`;
the global x64 flag stays off, as in a float32 sweep. Subprocess sweeps share
one persistent XLA cache in a temporary directory (not the user's).
"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("OVERPARAM_COMPILATION_CACHE", tempfile.mkdtemp(prefix="overparam-xla-"))

# isort: off
import overparam  # noqa: E402, F401  (sets XLA flags before JAX starts)
import jax  # noqa: E402
# isort: on

jax.config.update("jax_numpy_rank_promotion", "raise")
