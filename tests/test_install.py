"""Installing and starting as a user would (DESIGN.md section 2): the Python and jax that
pyproject.toml asks for are the ones tested, `make` picks the jax extra of the device (and of
CUDA 12 or 13), and the environment overparam sets before JAX starts suits the backend: the
CPU-only XLA flag only where the CPU is the backend, GPU memory taken as needed."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import overparam

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CPU_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def _floor(requirement: str) -> tuple[int, ...]:
    """(3, 11) of '>=3.11', (0, 10, 2) of 'jax>=0.10.2'."""
    return tuple(int(p) for p in re.fullmatch(r"[\w-]*>=([\d.]+)", requirement).group(1)
                 .split("."))


def test_the_python_and_jax_floors_are_what_the_tests_run_on():
    """Not a jax that was never tested, nor a Python on which pip picks an older jax."""
    project = PYPROJECT["project"]
    floors = {r.split(">=")[0]: _floor(r) for r in project["dependencies"]
              if r.startswith(("jax>=", "jaxlib>="))}
    for name in ("jax", "jaxlib"):
        installed = tuple(int(p) for p in importlib.metadata.version(name).split(".")[:3])
        assert floors[name] == installed, f"{name}: the tests run on {installed}"
    python = _floor(project["requires-python"])
    assert _floor(importlib.metadata.metadata("jax")["Requires-Python"]) <= python
    assert sys.version_info[:2] >= python
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py" + "".join(map(str, python))


def test_the_gpu_and_tpu_extras_are_jaxs():
    extras = PYPROJECT["project"]["optional-dependencies"]
    provided = importlib.metadata.metadata("jax").get_all("Provides-Extra")
    for name in ("cuda12", "cuda13", "tpu"):
        assert extras[name] == [f"jax[{name}]"] and name in provided


def _make(*args: str, venv: Path) -> subprocess.CompletedProcess:
    """What `make` would run (-n: nothing is run), into a virtual environment not there."""
    return subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), *args,
                           f"VENV={venv}"], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize("args, extras, platform, other", [
    (["DEVICE=gpu"], "test,cuda13", "cuda", "cuda12"),
    (["DEVICE=gpu", "CUDA=12"], "test,cuda12", "cuda", "cuda13"),
    (["DEVICE=gpu", "CUDA=13"], "test,cuda13", "cuda", "cuda12"),
    (["DEVICE=tpu"], "test,tpu", "tpu", None),
    ([], "test", "cpu", None),
])
@pytest.mark.slow
def test_make_sweep_installs_the_devices_jax_and_runs_on_it(tmp_path, args, extras, platform,
                                                           other):
    proc = _make("sweep", *args, venv=tmp_path / "venv")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"pip install -q -e '.[{extras}]'" in out
    assert f"JAX_PLATFORMS={platform} " in out
    device = {"cuda": "gpu"}.get(platform, platform)
    assert f"--device={device}" in out
    # The other CUDA's plugin goes, so that one CUDA plugin is installed.
    assert (f"pip uninstall -q -y jax-{other}-plugin" in out) == (other is not None)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_refuses_a_cuda_it_has_no_jax_for(tmp_path):
    proc = _make("sweep", "DEVICE=gpu", "CUDA=11", venv=tmp_path / "venv")
    assert proc.returncode == 2 and "CUDA must be 12 or 13; got '11'" in proc.stderr
    assert proc.stdout == ""


def _started(env: dict[str, str | None], pythonpath: list[Path] = ()) -> dict[str, str]:
    """The environment after `import overparam` in a fresh process started with `env`
    (a None value: unset)."""
    full = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [ROOT, *pythonpath]))}
    for k, v in env.items():
        full.pop(k, None) if v is None else full.__setitem__(k, v)
    code = ("import json, os, overparam; print(json.dumps({k: os.environ.get(k, '') for k in "
            "('XLA_FLAGS', 'XLA_PYTHON_CLIENT_PREALLOCATE')}))")
    proc = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("platforms, cpu_flag", [
    ("cpu", True), ("cuda", False), ("tpu", False), ("cuda,cpu", False), (" cpu ,cpu", True),
])
@pytest.mark.slow
def test_the_cpu_only_xla_flag_is_set_only_where_jax_platforms_says_cpu(platforms, cpu_flag):
    """XLA_FLAGS reaches every XLA of the process and of its children: a GPU or TPU child
    never gets a flag of XLA:CPU's."""
    env = _started({"JAX_PLATFORMS": platforms, "XLA_FLAGS": "--xla_dump_to=/tmp/mine"})
    assert env["XLA_FLAGS"].startswith("--xla_dump_to=/tmp/mine")   # the user's are kept
    assert (CPU_FLAG in env["XLA_FLAGS"]) == cpu_flag


@pytest.mark.slow
@pytest.mark.parametrize("plugin", ["jax_plugins/xla_cuda13/__init__.py", "libtpu/__init__.py"])
def test_without_jax_platforms_an_installed_accelerator_plugin_means_no_cpu_flag(tmp_path,
                                                                                plugin):
    (tmp_path / plugin).parent.mkdir(parents=True)
    (tmp_path / plugin).write_text("")
    env = _started({"JAX_PLATFORMS": None, "XLA_FLAGS": None}, [tmp_path])
    assert CPU_FLAG not in env["XLA_FLAGS"]


def test_without_jax_platforms_or_a_plugin_the_cpu_is_the_backend(monkeypatch):
    monkeypatch.setattr(overparam, "_accelerator_plugin_installed", lambda: False)
    assert overparam._cpu_is_the_backend({})
    assert overparam._cpu_is_the_backend({"JAX_PLATFORMS": ""})
    monkeypatch.setattr(overparam, "_accelerator_plugin_installed", lambda: True)
    assert not overparam._cpu_is_the_backend({})
    assert overparam._cpu_is_the_backend({"JAX_PLATFORMS": "cpu"})


@pytest.mark.slow
@pytest.mark.parametrize("given, kept", [(None, "false"), ("true", "true"), ("false", "false")])
def test_gpu_memory_is_taken_as_needed_unless_the_user_says_otherwise(given, kept):
    assert _started({"XLA_PYTHON_CLIENT_PREALLOCATE": given})["XLA_PYTHON_CLIENT_PREALLOCATE"] \
        == kept
