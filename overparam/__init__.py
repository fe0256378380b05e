"""overparam: sweeps of over-parameterized ReLU networks in JAX.

    import overparam
    r = overparam.load("results/du")   # r.runs, r.steps, r.layers: pandas DataFrames
    net0 = r.initial_net(r.runs.run_id[0])  # a run's initial weights, bit for bit
"""

import os
import sys


def _xla_cpu_workaround() -> None:
    """Turns off XLA:CPU's concurrency-optimized scheduler before JAX starts.

    With it (jaxlib 0.10.2), a chunk whose scan of >= 64 records holds the Gram
    matrix's lax.cond with eigvalsh, vmapped over >= 8 networks, deadlocks in
    the CPU runtime (idle threads, no progress; tests/test_gram.py reproduces it).
    Has no effect once jax is imported, nor on GPU/TPU.
    """
    flag = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    flags = os.environ.get("XLA_FLAGS", "")
    if "jax" not in sys.modules and "concurrency_optimized_scheduler" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


def _single_threaded_blas() -> None:
    """One OpenBLAS thread for NumPy/SciPy (unless OPENBLAS_NUM_THREADS is set).

    Their only large work here is one float64 eigendecomposition of H^inf per
    training set, on the host beside JAX's own threads; there OpenBLAS's
    threads wait on each other: 0.56-0.70 s for n = 1000 with 2 threads against
    0.16-0.18 s with one (2-core CPU, busy). Has no effect once NumPy is loaded.
    """
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


_xla_cpu_workaround()
_single_threaded_blas()

__all__ = ["Results", "ResultsError", "load"]


def __getattr__(name):
    """`overparam.load` and friends, imported on first use (pandas and pyarrow are slow
    to import, and the command line takes signals before it imports them)."""
    if name in __all__:
        from overparam import store

        return getattr(store, name)
    raise AttributeError(f"module 'overparam' has no attribute {name!r}")
__version__ = "0.1.0"
