"""Results can be read while a sweep runs: runs.parquet from the start (status 'running'
until its batch finishes), and `load(partial=True)` returns every chunk written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import overparam
from overparam import store

ROOT = Path(__file__).resolve().parents[1]
# Two shapes (two batches), 20 steps in 5 chunks of 5 records (steps 0..24, 21..24 dropped).
ARGS = ["--config=sweeps/default.py", "--config.widths=(8,16)", "--config.num_seeds=2",
        "--config.steps=20", "--config.chunk_steps=5", "--progress=false"]


def _cli(out, env=None):
    return subprocess.run([sys.executable, "-m", "overparam.sweep", *ARGS, f"--out={out}"],
                          cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A sweep killed after the 7th chunk's parts: one batch finished, the other at 2 of
    its 5 chunks."""
    out = tmp_path_factory.mktemp("live") / "r"
    killed = _cli(out, env={"OVERPARAM_CRASH_AT": "chunk:7"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    return out


@pytest.mark.slow
def test_an_unfinished_sweep_needs_partial(stopped):
    with pytest.raises(overparam.ResultsError, match="partial=True"):
        overparam.load(stopped)


@pytest.mark.slow
def test_partial_load_holds_every_chunk_written_and_the_runs_status(stopped):
    r = overparam.load(stopped, partial=True)
    assert r.partial
    assert len(r.runs) == 4 and set(r.runs.status) == {"ok", "running"}
    steps = r.steps.groupby("run_id").step.agg(["min", "max", "count"])
    for run in r.runs.itertuples():
        if run.status == "ok":        # its batch finished: every step, and its results
            assert tuple(steps.loc[run.run_id]) == (0, 20, 21)
            assert np.isfinite(run.final_loss)
            assert run.final_loss == r.steps.loss[(r.steps.run_id == run.run_id)
                                                  & (r.steps.step == 20)].item()
        else:                         # 2 chunks of 5 records so far, no results yet
            assert tuple(steps.loc[run.run_id]) == (0, 9, 10)
            assert pd.isna(run.final_loss) and pd.isna(run.steps_to_zero_error)
    assert len(r.layers) == len(r.steps)  # depth 1
    tidy = r.with_settings("layers")
    settings = [{"loss": "loss_fn"}.get(c, c) for c in store.SETTINGS]
    assert list(tidy.columns[:1 + len(settings)]) == ["run_id", *settings]
    steps = r.with_settings("steps")
    assert (steps.loss_fn == "squared").all() and steps.loss.dtype.kind == "f"
    assert (tidy.width.to_numpy() == r.runs.set_index("run_id").width[tidy.run_id]).all()


@pytest.mark.slow
def test_the_resumed_sweep_loads_whole(stopped, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(stopped, out)
    assert _cli(out).returncode == 0
    r = overparam.load(out)
    assert not r.partial and set(r.runs.status) == {"ok"} and len(r.steps) == 4 * 21
    assert overparam.load(out, partial=True).steps.equals(r.steps)


@pytest.mark.slow
def test_analyze_on_an_unfinished_sweep_says_it_is_partial(stopped, tmp_path):
    out = tmp_path / "analysis"
    proc = subprocess.run([sys.executable, "-m", "overparam.analyze", f"--results={stopped}",
                           f"--out={out}", "--plots=false"], cwd=ROOT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"partial: {stopped} is still running" in proc.stdout
    report = (out / "report.md").read_text()
    assert "**partial**: the sweep is running; the 2 of its 4 networks" in report
    per_run = pd.read_parquet(out / "per_run.parquet")
    finished = overparam.load(stopped, partial=True).runs.query("status == 'ok'").run_id
    assert set(per_run.run_id) == set(finished)
