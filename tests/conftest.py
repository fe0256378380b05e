"""Test settings: CPU, strict rank promotion, a private compilation cache.

float64 references are NumPy computations or run inside `jax.enable_x64(True)`;
the global x64 flag stays off, as in a float32 sweep. The tests and their
subprocesses share one persistent XLA cache in a temporary directory (not the user's).

JAX_PLATFORMS, if set, is kept (benchmarks/gpu_check.py runs the numerics tests
with cuda): there the tests marked `cpu_only` (what only the CPU backend does: its
cache groups, XLA:CPU's own faults) are skipped with the backend as the reason.

Two tiers: `make test` runs everything; `make test-quick` (`-m "not slow"`) the
modules' unit and identity tests, for the edit-test loop. A test that starts a
process or trains a whole sweep (engine.run_sweep), itself or through a fixture,
must be marked `slow`: an unmarked one that does fails, in both tiers, so the
quick tier cannot start a process or a sweep by mistake. The tests that compile
large programs (over ~3 s of CPU each, measured: BENCHMARKS.md, "Test suite")
are marked `slow` too.
"""

import os
import subprocess
import tempfile

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# OVERPARAM_TEST_AS_SWEEPS=1: XLA's backend as a sweep's (tests/test_initial_net.py).
FAST_BACKEND = (os.environ["JAX_PLATFORMS"] == "cpu"
                and not os.environ.get("OVERPARAM_TEST_AS_SWEEPS"))
# The XLA flags of a sweep's process, for the tests that run one (tests/test_initial_net.py).
os.environ.setdefault("OVERPARAM_SWEEP_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
# What the tests add to them on the CPU: LLVM at -O0, and the engine's own compile options
# (programs._CPU_OPTIONS) for every program, also those a test jits itself.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
                  f"--xla_cpu_parallel_codegen_split_count={min(32, 4 * (os.cpu_count() or 1))}")
if FAST_BACKEND:
    # The tests' programs are tiny: LLVM's optimizations cost more compile time than they
    # save (half of the CPU time of a conv network's test, measured: BENCHMARKS.md, "Test
    # suite"). XLA's own passes, and so every fusion and every result's rounding rule, are
    # those of a sweep. A program a test jits itself (chunks.jit_program) compiles as the
    # engine's do (programs.compiler_options: the older loop emitters, a third of the
    # MLIR fusion emitters' compile time for a conv network's chunk). Subprocesses inherit
    # them (their env is this os.environ). What holds only bit for bit across two
    # programs (a run's initial weights rebuilt by another program than the engine's) is
    # tested with a sweep's flags instead.
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ["OVERPARAM_SWEEP_XLA_FLAGS"], *TEST_XLA_FLAGS]).strip()
os.environ.setdefault("OVERPARAM_COMPILATION_CACHE", tempfile.mkdtemp(prefix="overparam-xla-"))

# isort: off
import overparam  # noqa: E402, F401  (sets XLA flags before JAX starts)
import jax  # noqa: E402
from overparam import engine, programs  # noqa: E402
# isort: on

jax.config.update("jax_numpy_rank_promotion", "raise")
# One persistent cache for the session, in this process as in its subprocesses: the
# same small programs recur across files (and a sweep's planner and run share them).
programs.enable_compilation_cache(os.environ["OVERPARAM_COMPILATION_CACHE"])


# The files that take the most CPU time, most first (measured: BENCHMARKS.md, "Test
# suite"). `make test` hands the files to its workers in collection order (pytest-xdist's
# loadfile), so these start first and no worker is left alone with one at the end. A stale
# list only changes the order.
LONGEST_FIRST = ("test_resume.py", "test_benchmarks.py", "test_networks.py",
                 "test_sharpness.py", "test_train.py", "test_multihost.py", "test_readme.py",
                 "test_analyze.py", "test_cli.py", "test_lowering.py", "test_theory.py",
                 "test_multidevice.py")


def pytest_collection_modifyitems(config, items):
    """Puts the LONGEST_FIRST files first, and skips the tests marked cpu_only unless
    JAX's backend is the CPU."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable
    backend = jax.default_backend()
    if backend == "cpu":
        return
    skip = pytest.mark.skip(reason=f"cpu_only: JAX's backend here is {backend}")
    for item in items:
        if item.get_closest_marker("cpu_only"):
            item.add_marker(skip)


_running: list = [None]  # the test being set up, run or torn down


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _running[0] = item
    try:
        return (yield)
    finally:
        _running[0] = None


def _must_be_slow(what: str) -> None:
    item = _running[0]
    if item is not None and item.get_closest_marker("slow") is None:
        raise AssertionError(f"{item.nodeid} {what}: mark it `slow` (tests/conftest.py)")


def _guarded(function, what: str):
    def guarded(*args, **kwargs):
        _must_be_slow(what)
        return function(*args, **kwargs)
    return guarded


engine.run_sweep = _guarded(engine.run_sweep, "trains a whole sweep")
subprocess.Popen.__init__ = _guarded(subprocess.Popen.__init__, "starts a process")
