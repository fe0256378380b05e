"""The analysis stops like the sweep: SIGINT and SIGTERM at any moment of
`python -m overparam.analyze` (importing, loading, fitting, drawing, writing, swapping
the new directory in, printing) are one line on stderr and exit 128 + signal, leaving
the analysis directory as it was or complete; a SIGKILL at any moment is recovered by
the next analysis, which leaves no temporary behind; only overparam's own temporaries
are removed and an --out holding anything else is refused (overparam/analysis/outdir.py).

The moments are the test hooks of overparam/writes.py (OVERPARAM_CRASH_AT: the process
signals itself there; OVERPARAM_HANG_AT: it blocks there for good), so nothing depends on
timing. One small sweep, with an earlier analysis and a comparison nested in it, is made
once; each test works on a copy.
"""

from __future__ import annotations

import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from overparam import analyze, engine, interrupt, programs, resultsdir, store
from overparam import config as config_lib
from overparam.analysis import outdir
from overparam.analysis.outdir import OutputError
from overparam.cli import analysis_interrupted

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"widths": (8, 16), "num_seeds": 2, "steps": 10, "n": (8,), "d": 4}
SWEEP_ARGS = ["--config=sweeps/default.py", "--progress=false",
              *(f"--config.{k}={v}".replace(" ", "") for k, v in FIELDS.items())]
OLD_BOOT, NEW_BOOT = 20, 30  # the earlier analysis's and the new one's (their reports differ)


def _temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if store.is_temporary(p))


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A finished sweep `r` (sweeps/default.py with FIELDS, as SWEEP_ARGS give it) with an
    analysis (n_boot OLD_BOOT, no figures) holding a comparison of `r` with a twin."""
    base = tmp_path_factory.mktemp("stop")
    c = runpy.run_path(str(ROOT / "sweeps" / "default.py"))["get_config"]()
    for k, v in FIELDS.items():
        setattr(c, k, v)
    programs.enable_compilation_cache(os.environ["OVERPARAM_COMPILATION_CACHE"])
    engine.run_sweep(config_lib.validate(c), base / "r", show_progress=False,
                     log_fn=lambda *a: None)
    shutil.copytree(base / "r", base / "twin")
    analyze.run_analysis([base / "r", base / "twin"], n_boot=OLD_BOOT, plots=False)
    analyze.run_analysis(base / "r", n_boot=OLD_BOOT, plots=False)
    assert sorted(p.name for p in (base / "r" / "analysis").iterdir()) == [
        "compare_r_twin", "fits.csv", "generalization.csv", "per_run.parquet", "report.md"]
    return base / "r"


@pytest.fixture
def results(template, tmp_path):
    """A copy of the template sweep and its analysis: (path, the analysis's files)."""
    r = tmp_path / "r"
    shutil.copytree(template, r)
    return r, _snapshot(r / "analysis")


def _analyze(r: Path, *args: str, env=None, popen=False):
    command = [sys.executable, "-m", "overparam.analyze", f"--results={r}",
               f"--n_boot={NEW_BOOT}", *args]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    if popen:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _assert_complete_and_new(r: Path, old: dict[str, bytes]) -> None:
    """r/analysis is the new analysis, whole, with the comparison nested in the old one."""
    new = _snapshot(r / "analysis")
    assert f"{NEW_BOOT} resamples" in new["report.md"].decode()
    assert {k for k in new if not k.startswith("compare_")} >= {
        "report.md", "fits.csv", "per_run.parquet"}
    assert {k: v for k, v in new.items() if k.startswith("compare_")} == {
        k: v for k, v in old.items() if k.startswith("compare_")}
    assert outdir.foreign_entry(r / "analysis") is None


# ------------------------------------------------------------------ signals


@pytest.mark.parametrize("point,sig,complete", [
    ("import:1", "SIGINT", False),    # importing the analysis's modules
    ("load:1", "SIGTERM", False),     # the sweep loaded
    ("fit:1", "SIGINT", False),       # quantities and fits computed, nothing written yet
    ("write:5", "SIGTERM", False),    # a figure drawn, being written
    ("swap:1", "SIGINT", True),       # between the two renames: taken once they are done
    ("analyzed:1", "SIGTERM", True),  # complete, before the table is printed
])
@pytest.mark.slow
def test_a_signal_at_any_moment_is_one_line_and_leaves_the_analysis_old_or_complete(
        results, point, sig, complete):
    r, old = results
    plots = "--plots=true" if point.startswith("write") else "--plots=false"
    proc = _analyze(r, plots, env={"OVERPARAM_CRASH_AT": point,
                                   "OVERPARAM_CRASH_SIGNAL": sig})
    signum = signal.Signals[sig]
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [analysis_interrupted(signum)], proc.stderr[-3000:]
    assert proc.stdout == ""
    if complete:
        _assert_complete_and_new(r, old)
    else:
        assert _snapshot(r / "analysis") == old
    assert _temporaries(r) == []


@pytest.mark.slow
def test_a_signal_while_a_write_never_returns_stops_the_analysis(results, tmp_path):
    """The analysis blocks for good in its second write (OVERPARAM_HANG_AT); once it is
    there (its crash log says so), Ctrl-C stops it."""
    r, old = results
    log = tmp_path / "points"
    proc = _analyze(r, "--plots=false", popen=True, env={"OVERPARAM_HANG_AT": "write:2",
                                                         "OVERPARAM_CRASH_LOG": str(log)})
    try:
        deadline = time.monotonic() + 240  # a guard only: the wait is for the log line
        while not (log.exists() and log.read_text().split().count("write") >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.poll()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert stderr.splitlines() == [analysis_interrupted(signal.SIGINT)] and stdout == ""
    assert _snapshot(r / "analysis") == old and _temporaries(r) == []


@pytest.mark.slow
def test_the_sweeps_analysis_stops_cleanly_too(results):
    """`python -m overparam.sweep ... --analyze` on the finished sweep, whose analysis is
    older than its manifest (so it is redone): SIGTERM while fitting."""
    r, old = results
    os.utime(r / "analysis" / "report.md", (1, 1))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "OVERPARAM_CRASH_AT": "fit:1",
           "OVERPARAM_CRASH_SIGNAL": "SIGTERM"}
    proc = subprocess.run([sys.executable, "-m", "overparam.sweep", *SWEEP_ARGS, f"--out={r}",
                           "--analyze"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "nothing to do" in proc.stdout and "Traceback" not in proc.stderr
    assert "interrupted by SIGTERM" in proc.stderr
    assert _snapshot(r / "analysis") == old and _temporaries(r) == []


# ------------------------------------------------------------------ kills


@pytest.mark.slow
def test_a_kill_between_the_two_renames_is_recovered_by_the_next_analysis(results):
    r, old = results
    proc = _analyze(r, "--plots=false", env={"OVERPARAM_CRASH_AT": "swap:1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (r / "analysis").exists()  # set aside; the new one not yet in place
    left = [p for p in r.iterdir() if store.is_temporary(p)]
    assert len(left) == 2 and all((p / "report.md").is_file() for p in left)
    assert resultsdir.clean_leftovers(r) == 0 and len(_temporaries(r)) >= 2  # not the sweep's
    outdir.recover(r / "analysis")  # what the next analysis does first: the newest is kept
    _assert_complete_and_new(r, old)
    assert _temporaries(r) == []
    analyze.run_analysis(r, n_boot=NEW_BOOT, plots=False)
    _assert_complete_and_new(r, old)
    assert _temporaries(r) == []


@pytest.mark.slow
def test_a_kill_while_drawing_leaves_temporaries_that_the_next_analysis_removes(results):
    r, old = results
    proc = _analyze(r, env={"OVERPARAM_CRASH_AT": "write:5"})  # with figures
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert _snapshot(r / "analysis") == old
    assert any(p.parent.name == "figures" for p in _temporaries(r))
    analyze.run_analysis(r, n_boot=NEW_BOOT, plots=False)
    _assert_complete_and_new(r, old)
    assert _temporaries(r) == []


# ------------------------------------------------------------------ the directory


@pytest.mark.slow
def test_an_analysis_directory_holding_a_foreign_file_is_refused_in_one_line(results):
    r, _ = results
    (r / "analysis" / "notes.txt").write_text("mine")
    before = _snapshot(r)
    proc = _analyze(r, "--plots=false")
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: --out: ") and "holds notes.txt, which no analysis" in line
    assert _snapshot(r) == before


def _fake_analysis(folder: Path, text: str) -> None:
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "a.png").write_text(text)
    for name in ("per_run.parquet", "fits.csv", "report.md"):  # report.md last
        (folder / name).write_text(text)


def test_recover_restores_the_newest_complete_analysis_and_removes_only_its_temporaries(
        tmp_path):
    out = tmp_path / "analysis"
    old, new, partial = (tmp_path / f".analysis.{h}{store.TEMP_SUFFIX}"
                         for h in ("0000000a", "0000000b", "0000000c"))
    _fake_analysis(old, "old")
    _fake_analysis(new, "new")
    os.utime(old / "report.md", (1, 1))
    (partial / "figures").mkdir(parents=True)           # an analysis killed while drawing
    foreign = [tmp_path / ".notes.tmp", tmp_path / f"analysis{store.TEMP_SUFFIX}",
               tmp_path / f".analysis.zz{store.TEMP_SUFFIX}",
               tmp_path / f".other.0000000d{store.TEMP_SUFFIX}"]
    for p in foreign:
        p.write_text("not the analysis's")
    outdir.recover(out)
    assert (out / "report.md").read_text() == "new"
    assert sorted(tmp_path.iterdir()) == sorted([out, *foreign])
    outdir.recover(out)  # nothing left to do
    assert (out / "report.md").read_text() == "new"
    assert sorted(tmp_path.iterdir()) == sorted([out, *foreign])


def test_building_replaces_the_directory_whole_and_keeps_the_analyses_nested_in_it(
        tmp_path):
    out = tmp_path / "analysis"
    _fake_analysis(out, "old")
    (out / "generalization.csv").write_text("old")        # not written by the new one
    _fake_analysis(out / "compare_a_b", "nested")
    (out / "figures" / f".b.png.0123abcd{store.TEMP_SUFFIX}").write_text("a kill's")
    with outdir.building(out) as new:
        assert new.parent == tmp_path and store.is_temporary(new) and not any(new.iterdir())
        assert (out / "report.md").read_text() == "old"  # untouched until the swap
        _fake_analysis(new, "new")
    assert _snapshot(out) == {
        **{k: b"new" for k in ("figures/a.png", "per_run.parquet", "fits.csv", "report.md")},
        **{f"compare_a_b/{k}": b"nested"
           for k in ("figures/a.png", "per_run.parquet", "fits.csv", "report.md")}}
    assert sorted(tmp_path.iterdir()) == [out]


def test_an_error_while_building_leaves_the_directory_as_it_was(tmp_path):
    out = tmp_path / "analysis"
    _fake_analysis(out, "old")
    before = _snapshot(tmp_path)
    with pytest.raises(RuntimeError, match="fitting failed"), outdir.building(out) as new:
        _fake_analysis(new, "new")
        raise RuntimeError("fitting failed")
    assert _snapshot(tmp_path) == before and sorted(tmp_path.iterdir()) == [out]
    deep = tmp_path / "a" / "b" / "analysis"   # parents it created go too
    with pytest.raises(interrupt.Interrupted), outdir.building(deep):
        raise interrupt.Interrupted(signal.SIGINT)
    assert not (tmp_path / "a").exists()


def test_one_analysis_at_a_time_writes_a_directory_and_those_nested_in_it(tmp_path):
    out = tmp_path / "analysis"
    _fake_analysis(out, "old")
    with outdir.building(out) as new:
        for other in (out, out / "compare_a_b"):
            with pytest.raises(OutputError, match="another analysis is writing"):
                with outdir.building(other):
                    pass
        _fake_analysis(new, "new")
    with outdir.building(out / "compare_a_b") as nested:  # free again
        _fake_analysis(nested, "nested")
    assert (out / "compare_a_b" / "report.md").read_text() == "nested"


@pytest.mark.parametrize("make,named", [
    (lambda out: (out / "notes.txt").write_text("mine"), "notes.txt"),
    (lambda out: (out / "figures" / "draft.tex").write_text("mine"), "figures/draft.tex"),
    (lambda out: (out / "compare_a_b" / "x.csv").write_text("mine"), "compare_a_b/x.csv"),
    (lambda out: (out / "data").symlink_to(out.parent), "data"),
])
def test_a_directory_holding_anything_but_an_analysis_is_refused_and_left_alone(
        tmp_path, make, named):
    out = tmp_path / "analysis"
    _fake_analysis(out, "old")
    _fake_analysis(out / "compare_a_b", "nested")
    make(out)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(OutputError) as info, outdir.building(out):
        pass
    assert f"holds {named}, which no analysis wrote" in str(info.value)
    assert str(info.value).startswith("--out: ") and "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is not a directory"), outdir.building(
            tmp_path / "file"):
        pass
