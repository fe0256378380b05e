"""overparam: sweeps of over-parameterized ReLU networks in JAX.

    import overparam
    r = overparam.load("results/du")   # r.runs, r.steps, r.layers: pandas DataFrames
    net0 = r.initial_net(r.runs.run_id[0])  # a run's initial weights, bit for bit
"""

import os
import sys


def _cpu_is_the_backend(environ=os.environ) -> bool:
    """Whether JAX will run on the CPU, as far as can be told before it starts.

    JAX_PLATFORMS, where set, lists the platforms JAX may use: the CPU only if
    it names no other. Unset, JAX takes an accelerator whose plugin is
    installed (a `jax_plugins` module or entry point: jax[cuda12], jax[cuda13],
    ROCm; libtpu: jax[tpu]), else the CPU.
    """
    platforms = {p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()}
    if platforms:
        return platforms == {"cpu"}
    return not _accelerator_plugin_installed()


def _accelerator_plugin_installed() -> bool:
    """Whether a JAX plugin for an accelerator is installed (found as JAX finds them)."""
    import importlib.util
    import pkgutil

    if importlib.util.find_spec("libtpu") is not None:
        return True
    spec = importlib.util.find_spec("jax_plugins")
    if spec is not None and any(pkgutil.iter_modules(spec.submodule_search_locations or [])):
        return True
    from importlib.metadata import entry_points

    return bool(entry_points(group="jax_plugins"))


def _xla_cpu_workaround() -> None:
    """Turns off XLA:CPU's concurrency-optimized scheduler before JAX starts.

    With it (jaxlib 0.10.2), a chunk whose scan of >= 64 records holds the Gram
    matrix's lax.cond with eigvalsh, vmapped over >= 8 networks, deadlocks in
    the CPU runtime (idle threads, no progress; tests/test_gram.py reproduces it).
    Has no effect once jax is imported. Set only where the CPU is the backend
    (`_cpu_is_the_backend`): XLA_FLAGS reaches every XLA this process and its
    children start, and an XLA that does not know a flag (a TPU's libtpu of
    another XLA version) aborts.
    """
    flag = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    flags = os.environ.get("XLA_FLAGS", "")
    if ("jax" not in sys.modules and "concurrency_optimized_scheduler" not in flags
            and _cpu_is_the_backend()):
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


def _gpu_memory_on_demand() -> None:
    """XLA_PYTHON_CLIENT_PREALLOCATE=false unless set: JAX then takes GPU memory as
    it needs it rather than 75% of the GPU when it starts (read when JAX starts its
    GPU backend), so that several processes (a parent and its child sweeps, a
    process per GPU) share a GPU, and the planner's budget sees what the others
    hold (plan.device_memory_budget_mb). The cap stays XLA_PYTHON_CLIENT_MEM_FRACTION
    (default 0.75) of the GPU's memory."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


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
_gpu_memory_on_demand()
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
