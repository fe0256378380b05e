"""Test settings: CPU, strict rank promotion, a private compilation cache.

float64 references are NumPy computations or run inside `jax.enable_x64(True)`;
the global x64 flag stays off, as in a float32 sweep. Subprocess sweeps share
one persistent XLA cache in a temporary directory (not the user's).

JAX_PLATFORMS, if set, is kept (benchmarks/gpu_check.py runs the numerics tests
with cuda): there the tests marked `cpu_only` (what only the CPU backend does: its
cache groups, XLA:CPU's own faults) are skipped with the backend as the reason.
"""

import os
import tempfile

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("OVERPARAM_COMPILATION_CACHE", tempfile.mkdtemp(prefix="overparam-xla-"))

# isort: off
import overparam  # noqa: E402, F401  (sets XLA flags before JAX starts)
import jax  # noqa: E402
# isort: on

jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_collection_modifyitems(config, items):
    """Skips the tests marked cpu_only unless JAX's backend is the CPU."""
    backend = jax.default_backend()
    if backend == "cpu":
        return
    skip = pytest.mark.skip(reason=f"cpu_only: JAX's backend here is {backend}")
    for item in items:
        if item.get_closest_marker("cpu_only"):
            item.add_marker(skip)
