"""End-to-end tests of the command line `python -m overparam.sweep` (DESIGN.md sections 2, 3).

Tiny real sweeps run in subprocesses on CPU; their results directories are
checked against the results contract (every contract column, one row per
network x recorded step (x layer), step 0 at initialization, datasets and
manifest). Bad command lines must exit non-zero with one `error:` line naming
the field, no traceback, and nothing written.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import overparam
from overparam import config as config_lib
from overparam import plan as plan_lib

ROOT = Path(__file__).resolve().parents[1]

RUNS_COLUMNS = ["run_id", "width", "depth", "seed", "n", "d", "loss", "optimizer", "lr",
                "batch_size", "param", "status", "steps_to_zero_error", "final_loss"]
STEPS_COLUMNS = ["run_id", "step", "loss", "train_error", "min_margin", "grad_norm"]
LAYERS_COLUMNS = ["run_id", "step", "layer", "radius_spectral", "radius_frobenius",
                  "radius_rowmax", "flip_frac"]
RADII = ["radius_spectral", "radius_frobenius", "radius_rowmax"]


def sweep_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "overparam.sweep", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _check_ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ default (du) sweep

DU_STEPS, DU_WIDTHS, DU_SEEDS = 6, (8, 16), 2


@pytest.fixture(scope="module")
def du_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "r"
    proc = sweep_cli("--config=sweeps/default.py", "--config.widths=(8,16)",
                     f"--config.num_seeds={DU_SEEDS}", f"--config.steps={DU_STEPS}",
                     "--config.chunk_steps=4", f"--out={out}", "--progress=false")
    _check_ok(proc)
    return out, proc


@pytest.mark.slow
def test_du_sweep_runs_table(du_results):
    out, _ = du_results
    runs = pd.read_parquet(out / "runs.parquet")
    assert set(RUNS_COLUMNS) <= set(runs.columns), set(RUNS_COLUMNS) - set(runs.columns)
    assert len(runs) == len(DU_WIDTHS) * DU_SEEDS
    assert runs["run_id"].is_unique
    assert sorted(set(runs["width"])) == list(DU_WIDTHS)
    assert sorted(set(runs["seed"])) == list(range(DU_SEEDS))
    assert set(runs["depth"]) == {1} and set(runs["n"]) == {64} and set(runs["d"]) == {16}
    assert set(runs["loss"]) == {"squared"} and set(runs["optimizer"]) == {"gd"}
    assert set(runs["param"]) == {"du"} and set(runs["lr"]) == {0.1}
    assert (runs["batch_size"] == runs["n"]).all()
    assert set(runs["status"]) == {"ok"}
    assert np.isfinite(runs["final_loss"]).all() and (runs["final_loss"] >= 0).all()


@pytest.mark.slow
def test_du_sweep_steps_table(du_results):
    out, _ = du_results
    runs = pd.read_parquet(out / "runs.parquet")
    steps = pd.read_parquet(out / "steps")
    assert set(STEPS_COLUMNS) <= set(steps.columns), set(STEPS_COLUMNS) - set(steps.columns)
    assert len(steps) == len(runs) * (DU_STEPS + 1)
    assert not steps.duplicated(["run_id", "step"]).any()
    assert set(steps["run_id"]) == set(runs["run_id"])
    for _, g in steps.groupby("run_id"):
        assert sorted(g["step"]) == list(range(DU_STEPS + 1))
    assert np.isfinite(steps[["loss", "grad_norm"]].to_numpy()).all()
    # final_loss is the loss recorded at the last step.
    last = steps[steps["step"] == DU_STEPS].set_index("run_id")["loss"]
    np.testing.assert_allclose(runs.set_index("run_id")["final_loss"], last[runs["run_id"]])
    # Training reduces the squared loss from initialization.
    first = steps[steps["step"] == 0].set_index("run_id")["loss"]
    assert (last[first.index] < first).all()


@pytest.mark.slow
def test_du_sweep_layers_table(du_results):
    out, _ = du_results
    runs = pd.read_parquet(out / "runs.parquet")
    layers = pd.read_parquet(out / "layers")
    assert set(LAYERS_COLUMNS) <= set(layers.columns), set(LAYERS_COLUMNS) - set(layers.columns)
    assert len(layers) == len(runs) * (DU_STEPS + 1) * 1
    assert not layers.duplicated(["run_id", "step", "layer"]).any()
    assert set(layers["layer"]) == {1}
    step0 = layers[layers["step"] == 0]
    assert len(step0) == len(runs)
    assert (step0[RADII + ["flip_frac"]] == 0).all().all()
    later = layers[layers["step"] > 0]
    assert (later[RADII] > 0).all().all()
    assert layers["flip_frac"].between(0, 1).all()
    # ||A||_2 <= ||A||_F and the largest row norm is at most both.
    tol = 1e-4 * layers["radius_frobenius"] + 1e-7
    assert (layers["radius_spectral"] <= layers["radius_frobenius"] + tol).all()
    assert (layers["radius_rowmax"] <= layers["radius_spectral"] + tol).all()


@pytest.mark.slow
def test_du_sweep_load_matches_direct_reads(du_results):
    out, _ = du_results
    r = overparam.load(out)
    for name, cols in [("runs", RUNS_COLUMNS), ("steps", STEPS_COLUMNS),
                       ("layers", LAYERS_COLUMNS)]:
        df = getattr(r, name)
        assert set(cols) <= set(df.columns), (name, set(cols) - set(df.columns))
    assert len(r.steps) == len(pd.read_parquet(out / "steps"))
    assert len(r.layers) == len(pd.read_parquet(out / "layers"))
    assert len(r.runs) == len(pd.read_parquet(out / "runs.parquet"))
    keys = list(zip(r.steps["run_id"], r.steps["step"], strict=True))
    assert keys == sorted(keys)


@pytest.mark.slow
def test_du_sweep_datasets(du_results):
    out, _ = du_results
    r = overparam.load(out)
    ids = set(r.runs["dataset_id"])
    assert len(ids) == DU_SEEDS   # one per seed, shared across widths
    assert {p.name for p in (out / "datasets").iterdir()} == {f"{i}.parquet" for i in ids}
    for did in ids:
        X, y = r.dataset(did)
        assert X.shape == (64, 16) and y.shape == (64,)
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_du_sweep_manifest(du_results):
    out, _ = du_results
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    for key in ("config", "versions", "device", "git_commit", "timings"):
        assert key in manifest, key
    assert manifest["config"]["widths"] == list(DU_WIDTHS)
    assert manifest["config"]["steps"] == DU_STEPS
    assert manifest["config"]["num_seeds"] == DU_SEEDS
    assert manifest["versions"]["jax"]
    assert manifest["device"]["backend"] == "cpu"
    assert manifest["timings"]["total"] > 0
    if (ROOT / ".git").exists():
        assert isinstance(manifest["git_commit"], str) and len(manifest["git_commit"]) >= 40
        assert isinstance(manifest["git_dirty"], bool)
    # Every runtime dependency pyproject.toml declares, with its version.
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = [re.match(r"[A-Za-z0-9_.-]+", d).group() for d in dependencies]
    assert {"scipy", "matplotlib", "flax", "absl-py"} <= set(declared)
    for name in declared:
        assert manifest["versions"][name], name


@pytest.mark.slow
def test_du_sweep_leaves_no_temp_files(du_results):
    out, proc = du_results
    hidden = [p for p in out.rglob("*") if p.name.startswith((".", "_"))]
    assert hidden == []
    assert str(out) in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("results", ["du_results", "zou_results"])
def test_a_sweep_writes_the_rows_its_footprint_counts_within_its_bytes(request, results):
    """plan.footprint, the bound check_resources holds a sweep to: exactly the rows of
    steps/ and layers/, and no more bytes per table than it allows for their rows and
    files, nor in all."""
    found = request.getfixturevalue(results)
    out = found.path if isinstance(found, overparam.Results) else found[0]
    manifest = json.loads((out / "manifest.json").read_text())
    sweep = config_lib.validate(manifest["config"])
    fp = plan_lib.footprint(sweep, device_bytes=2**34, workers=2)
    for table, raw in (("steps", plan_lib.steps_row_bytes(sweep.dtype)),
                       ("layers", plan_lib.layers_row_bytes(sweep.dtype)),
                       ("datasets", plan_lib.dataset_row_bytes(sweep.d, sweep.dtype))):
        entries = {k: v for k, v in manifest["files"].items() if k.startswith(f"{table}/")}
        rows = sum(e["rows"] for e in entries.values())
        if table != "datasets":
            assert rows == fp.rows[table]
        written = sum((out / k).stat().st_size for k in entries)
        assert written <= rows * raw * plan_lib.DISK_SLACK + len(entries) * plan_lib.PART_BYTES
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert total <= sum(fp.disk.values())


# ------------------------------------------------------------------ deep zou classification

ZOU_STEPS = 2


@pytest.fixture(scope="module")
def zou_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "zou"
    proc = sweep_cli("--config=sweeps/default.py", "--config.widths=(8,)",
                     "--config.depths=(2,)", "--config.num_seeds=1",
                     f"--config.steps={ZOU_STEPS}", "--config.chunk_steps=4",
                     "--config.n=(8,)", "--config.d=4", '--config.param=("zou",)',
                     '--config.loss=("logistic",)', '--config.optimizer=("gd","sgd")',
                     "--config.batch_size=(4,)", "--config.labels=random_sign",
                     "--config.dataset=zou", f"--out={out}", "--progress=false")
    _check_ok(proc)
    return overparam.load(out)


@pytest.mark.slow
def test_zou_sweep_string_tuples_parsed(zou_results):
    runs = zou_results.runs
    assert sorted(runs["optimizer"]) == ["gd", "sgd"]
    assert set(runs["param"]) == {"zou"} and set(runs["loss"]) == {"logistic"}
    assert set(runs["depth"]) == {2}
    assert dict(zip(runs["optimizer"], runs["batch_size"], strict=True)) == {"gd": 8, "sgd": 4}
    assert set(runs["status"]) == {"ok"}
    assert zou_results.manifest["config"]["dataset"] == "zou"


@pytest.mark.slow
def test_zou_sweep_classification_metrics(zou_results):
    steps = zou_results.steps
    assert len(steps) == 2 * (ZOU_STEPS + 1)
    assert steps["train_error"].between(0, 1).all()
    assert np.isfinite(steps["min_margin"]).all()
    assert np.isfinite(steps["loss"]).all() and (steps["loss"] > 0).all()
    # train_error is a fraction of the n = 8 examples.
    np.testing.assert_allclose(steps["train_error"] * 8, np.round(steps["train_error"] * 8),
                               atol=1e-6)


@pytest.mark.slow
def test_zou_sweep_two_layers_per_step(zou_results):
    layers = zou_results.layers
    assert len(layers) == 2 * (ZOU_STEPS + 1) * 2
    counts = layers.groupby(["run_id", "step"])["layer"].apply(sorted)
    assert all(c == [1, 2] for c in counts)
    step0 = layers[layers["step"] == 0]
    assert (step0[RADII + ["flip_frac"]] == 0).all().all()
    assert layers["flip_frac"].between(0, 1).all()


@pytest.mark.slow
def test_zou_sweep_datasets_have_mu_coordinate(zou_results):
    (did,) = set(zou_results.runs["dataset_id"])
    X, y = zou_results.dataset(did)
    assert X.shape == (8, 4)
    np.testing.assert_allclose(X[:, -1], X[0, -1])     # Zou's fixed last coordinate mu
    assert set(np.unique(y)) <= {-1.0, 1.0}
    assert math.isclose(float(np.linalg.norm(X[0])), 1.0, rel_tol=1e-5)


# ------------------------------------------------------------------ bad command lines

SMALL = ["--config.widths=(8,)", "--config.num_seeds=1", "--config.steps=2"]
BAD = [
    # (extra args, word the error line must name, out is an existing file)
    pytest.param(["--config.bogus=1"], "config.bogus", False, id="unknown-field"),
    pytest.param(["--config.phi=0.1"], "config.phi", False, id="field-not-in-file"),
    pytest.param(["--config.loss=bogus"], "config.loss", False, id="bad-loss"),
    pytest.param(["--config.widths=(0,)"], "config.widths", False, id="zero-width"),
    pytest.param(["--config.num_seeds=abc"], "num_seeds", False, id="not-an-int"),
    pytest.param(["--config.lr=(-1.0,)"], "config.lr", False, id="negative-lr"),
    pytest.param(["--config=does/not/exist.py"], "does/not/exist.py", False,
                 id="missing-config"),
    pytest.param(["--config=does/not/exist.py", "--config.steps=2"], "does/not/exist.py",
                 False, id="missing-config-with-override"),
    pytest.param([*SMALL, "--config.labels=random_sign", "--config.loss=(hinge,)",
                  "--config.phi=1.99", "--config.n=(200,)", "--config.d=3"], "config.phi",
                 False, id="unsatisfiable-separation"),
    pytest.param([*SMALL, "--config.param=(zou,)", "--config.widths=(7,)"], "config.widths",
                 False, id="odd-width-zou"),
    pytest.param([*SMALL, "--config.optimizer=(sgd,)", "--config.batch_size=(65,)"],
                 "config.batch_size", False, id="batch-larger-than-n"),
    pytest.param([*SMALL, "--device=gpu"], "gpu", False, id="device-gpu-on-cpu"),
    pytest.param(["--device=cuda"], "device", False, id="device-not-allowed"),
    pytest.param(SMALL, "out", True, id="out-is-a-file"),
    pytest.param([*SMALL, "--config.seed=4294967296"], "config.seed", False,
                 id="seed-over-32-bits"),
    pytest.param([*SMALL, "--config.num_seeds=100000000"], "config.num_seeds", False,
                 id="huge-grid"),
    pytest.param([*SMALL, "--config.widths=(100000000,)"], "config.widths", False,
                 id="huge-width"),
    pytest.param([*SMALL, "--config.widths=(1000000000000,)"], "config.widths", False,
                 id="absurd-width"),
    pytest.param([*SMALL, "--config.n=(1000000000,)"], "config.n", False, id="huge-n"),
    pytest.param(["--config=sweeps/du2018.py:bogus"], "unknown variant 'bogus'", False,
                 id="variant-typo"),
    pytest.param([*SMALL, "--compilation_cache=sweeps/default.py"], "--compilation_cache",
                 False, id="cache-is-a-file"),
    # Nothing typed is dropped or merged: a repeated flag, a stray argument, an unused field.
    pytest.param([*SMALL, "--config.depths=(1,)", "--config.depths=(2,3)"],
                 "--config.depths: given 2 times", False, id="repeated-override"),
    pytest.param([*SMALL, "--progress", "--noprogress"], "--progress: given 3 times", False,
                 id="repeated-boolean"),
    pytest.param(["--config=sweeps/default.py", *SMALL, "--config=sweeps/du2018.py"],
                 "--config: given 2 times", False, id="repeated-config"),
    pytest.param([*SMALL, "stray"], "unexpected argument 'stray'", False, id="positional"),
    pytest.param([*SMALL, "--config.digits_task=3v5"], "config.digits_task: is used only with "
                 "dataset 'digits'", False, id="digits-task-on-the-sphere"),
    pytest.param([*SMALL, "--config.batch_size=(4,)"], "config.batch_size: is used only with "
                 "optimizer 'sgd'", False, id="batch-size-without-sgd"),
    # Sizes: refused before anything is allocated (tests below: the memory the refusal took).
    pytest.param([*SMALL, "--config.steps=1000000000000"], "config.steps", False,
                 id="steps-past-the-step-counter"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, names, out_is_file", BAD)
def test_bad_command_line(tmp_path, args, names, out_is_file):
    if out_is_file:
        out = tmp_path / "taken"
        out.write_text("precious")
    else:
        out = tmp_path / "out"
    proc = sweep_cli(*args, f"--out={out}", "--progress=false", timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "no error message"
    last = lines[-1]
    assert last.startswith("error:"), proc.stderr[-2000:]
    assert names in last, last
    # Nothing written.
    if out_is_file:
        assert out.read_text() == "precious"
        assert [p.name for p in tmp_path.iterdir()] == ["taken"]
    else:
        assert not out.exists()
        assert list(tmp_path.iterdir()) == []


SWEEP_FILES = {
    "returns-none": ("def get_config(arg=None):\n    return None\n", "returned NoneType"),
    "wrong-type": ("from overparam.config import default_config\n\n\n"
                   "def get_config(arg=None):\n    c = default_config()\n"
                   "    c.widths = 'abc'\n    return c\n", "Could not override field 'widths'"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SWEEP_FILES))
def test_a_broken_sweep_file_is_one_line_with_its_reason(tmp_path_factory, case):
    text, words = SWEEP_FILES[case]
    path = tmp_path_factory.mktemp("sweeps") / "mine.py"
    path.write_text(text)
    out = tmp_path_factory.mktemp("out") / "r"
    proc = sweep_cli(f"--config={path}", f"--out={out}", timeout=120)
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith(f"error: --config={path}") and words in last, last
    assert not out.exists()


@pytest.mark.slow
def test_out_under_a_regular_file_is_one_line_and_nothing_is_written(tmp_path):
    (tmp_path / "taken").write_text("precious")
    proc = sweep_cli(*SMALL, f"--out={tmp_path / 'taken' / 'r'}", "--progress=false",
                     timeout=120)
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("error: --out:") and "taken" in last and "Not a directory" in last
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


@pytest.mark.slow
def test_an_empty_out_is_refused_not_replaced_by_the_default(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "overparam.sweep",
                           f"--config={ROOT / 'sweeps' / 'default.py'}", *SMALL, "--out="],
                          cwd=tmp_path, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip() == "error: --out: empty; give a directory, or leave --out out " \
        "for results/<config.name>"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("module, args", [
    ("overparam.sweep", [*SMALL, "--dry_run"]),
    ("overparam.analyze", ["--results=results/default"]),
])
@pytest.mark.slow
def test_a_positional_argument_is_refused_by_both_command_lines(tmp_path, module, args):
    proc = subprocess.run([sys.executable, "-m", module, *args, "results/other"], cwd=ROOT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unexpected argument 'results/other'")


def _peak_rss_of(command: list[str]) -> tuple[int, str, int]:
    """(exit status, stderr, the child's peak resident memory in bytes) of a command."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
    return child.returncode, stderr, usage.ru_maxrss * 1024


@pytest.mark.parametrize("args, field", [
    pytest.param(["--config.n_test=1000000000"], "n_test", id="n-test-1e9"),  # was 119 GiB
    pytest.param(["--config.n_test=100000000"], "n_test", id="n-test-1e8"),   # was 6.7 GB+
    pytest.param(["--config.steps=100000000"], "steps", id="steps-1e8"),  # wrote parts forever
    pytest.param(["--config.widths=(8,)", "--config.steps=1000000"], "steps",
                 id="rows-beyond-the-disk"),
])
@pytest.mark.slow
def test_huge_sizes_are_refused_before_anything_is_allocated(tmp_path, args, field):
    """One line naming the field, exit 2, nothing written, and no more memory than the
    interpreter and JAX take (the sizes were allocated before, or written part by part).
    The disk case is the free space of --out's file system, here a fake of 1 GiB."""
    out = tmp_path / "r"
    rc, stderr, peak = _peak_rss_of(
        [sys.executable, "-c", _WITH_A_SMALL_DISK, "--config=sweeps/default.py", *args,
         f"--out={out}", "--progress=false"])
    lines = stderr.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"error: config.{field}: "), \
        stderr[-2000:]
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert peak < 1.5 * 2**30, peak


# The sweep's command line with --out's file system 1 GiB free (shutil.disk_usage faked).
_WITH_A_SMALL_DISK = """
import collections, shutil, sys
from overparam import interrupt
interrupt.install()
Usage = collections.namedtuple("Usage", "total used free")
shutil.disk_usage = lambda path: Usage(2**31, 2**30, 2**30)
from overparam import sweep
sys.argv[0] = "overparam.sweep"
sweep.run()
"""


@pytest.mark.slow
def test_lr_may_mix_numbers_and_theory(tmp_path):
    proc = sweep_cli(*SMALL, "--config.lr=(0.1,theory)", "--dry_run",
                     f"--out={tmp_path / 'r'}", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 networks" in proc.stdout and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_device_error_names_backend(tmp_path):
    proc = sweep_cli(*SMALL, "--device=gpu", f"--out={tmp_path / 'out'}", "--progress=false",
                     timeout=120)
    assert proc.returncode != 0
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert "cpu" in last and "gpu" in last
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("platform, device", [("cuda", "gpu"), ("tpu", "tpu")])
def test_a_sweep_on_a_machine_without_the_device_is_one_line_and_exit_2(tmp_path, platform,
                                                                        device):
    """As `make sweep DEVICE=gpu` (or tpu) runs it: JAX_PLATFORMS names the device, whose
    jax plugin (or the device) is not here."""
    if not overparam._cpu_is_the_backend({}):
        pytest.skip("a jax plugin for an accelerator is installed here")
    env = {**os.environ, "JAX_PLATFORMS": platform}
    proc = subprocess.run([sys.executable, "-m", "overparam.sweep", *SMALL, f"--device={device}",
                           f"--out={tmp_path / 'r'}", "--progress=false"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: JAX could not start the "
                                                   f"'{platform}' backend ("), proc.stderr
    assert f"make install DEVICE={device}" in lines[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_plain_run_prints_no_backend_search(tmp_path):
    """Without JAX_PLATFORMS, JAX looks for backends that are not there; that INFO line
    ("Unable to initialize backend 'tpu'") is not the user's business."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    proc = subprocess.run([sys.executable, "-m", "overparam.sweep", "--config=sweeps/default.py",
                           "--config.widths=(8,)", "--dry_run", f"--out={tmp_path / 'r'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Unable to initialize backend" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
