"""The quick tier is quick by construction: tests/conftest.py fails a test that starts a
process or trains a whole sweep unless it is marked slow (`make test-quick` leaves those
out), whether it does so itself or through a fixture."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = '''
import subprocess, sys
import pytest
from overparam import engine


@pytest.fixture(scope="module")
def started():
    return subprocess.run([sys.executable, "-c", "pass"]).returncode


def test_unmarked_process():
    subprocess.run([sys.executable, "-c", "pass"])


def test_unmarked_process_in_a_fixture(started):
    pass


def test_unmarked_sweep():
    engine.run_sweep(None, "unused")


@pytest.mark.slow
def test_marked_process():
    assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0


def test_unmarked_quick():
    assert True
'''


@pytest.mark.slow
def test_an_unmarked_test_that_starts_a_process_or_a_sweep_fails(tmp_path):
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(textwrap.dedent(CASES))
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA",
                           "-o", "markers=slow: slow", str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout
    for name, what in (("test_unmarked_process", "starts a process"),
                       ("test_unmarked_process_in_a_fixture", "starts a process"),
                       ("test_unmarked_sweep", "trains a whole sweep")):
        assert f"test_cases.py::{name} " in out and f"{name} {what}: mark it" in out, out
    assert "PASSED test_cases.py::test_marked_process" in out, out
    assert "PASSED test_cases.py::test_unmarked_quick" in out, out
    assert proc.returncode == 1, out


def test_the_tests_compile_with_the_engines_cpu_options():
    """The XLA flags tests/conftest.py adds on the CPU are the engine's compile options
    (programs._CPU_OPTIONS), but LLVM's level: so a program a test jits itself compiles
    as the engine's own, at the tests' -O0."""
    import conftest

    from overparam import programs

    flags = dict(f.removeprefix("--").split("=") for f in conftest.TEST_XLA_FLAGS)
    engine = {k: str(v).lower() for k, v in programs._CPU_OPTIONS.items()}
    assert flags.pop("xla_backend_optimization_level") == "0"
    assert engine.pop("xla_backend_optimization_level") == "1"
    assert flags == engine
    if conftest.FAST_BACKEND:
        assert set(conftest.TEST_XLA_FLAGS) <= set(os.environ["XLA_FLAGS"].split())


def test_the_longest_files_first_are_files_of_the_suite():
    import conftest

    assert len(set(conftest.LONGEST_FIRST)) == len(conftest.LONGEST_FIRST)
    for name in conftest.LONGEST_FIRST:
        assert (ROOT / "tests" / name).is_file(), name
    assert "--no-loadscope-reorder" in (ROOT / "Makefile").read_text()
