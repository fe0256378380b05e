"""A results directory is data: reading, verifying, analyzing, comparing and resuming one
never imports a module it names (unless the caller names that module) and never opens,
reads or writes a file outside it because of what it holds (a name, an id, a link).

Each way in has its test: the arch of runs.parquet (the issue's `this` and an evilmod.py
placed in the directory, analyzed from inside it), a resume and a rerun, a dataset id, the
manifest's list of files, a checkpoint's list of parts, links (a part, a folder, the
manifest, the lock, the analysis folder) and special files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import overparam
from overparam import analyze, checkpoint, engine, networks, resultsdir, store
from overparam import config as config_lib
from overparam.analysis import bounds

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu",
       "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                     if p)}
# Two widths and Du et al.'s setting (du, depth 1, squared loss, GD): the analysis draws
# the radius bound, which rebuilds the runs' initial networks (Results.initial_net).
SWEEP = dict(name="t", widths=(4, 8), depths=(1,), num_seeds=2, n=(4,), d=4, steps=4,
             chunk_steps=2, lr=(0.05,))
ZEN = "Beautiful is better than ugly"  # what `import this` prints


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "r"
    engine.run_sweep(config_lib.validate(SWEEP), out, show_progress=False,
                     log_fn=lambda *a: None)
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("analysis"))
    return dst


def _edit_manifest(path: Path, change) -> None:
    manifest = json.loads((path / store.MANIFEST).read_text())
    change(manifest)
    (path / store.MANIFEST).write_text(json.dumps(manifest))


def _set_runs(path: Path, column: str, value) -> None:
    """Sets `column` of every run in runs.parquet, its hash recomputed in the manifest (a
    hash is not a signature: whoever hands over a directory can do this)."""
    table = pq.read_table(path / store.RUNS)
    i = table.schema.get_field_index(column)
    field = table.schema.field(i)
    pq.write_table(table.set_column(i, field, pa.array([value] * len(table), field.type)),
                   path / store.RUNS)

    def rehash(m):
        m["files"][store.RUNS]["sha256"] = store.sha256(path / store.RUNS)
    _edit_manifest(path, rehash)


def _name_arch(path: Path, arch: str) -> None:
    """runs.parquet and the manifest's config both say `arch`."""
    _set_runs(path, "arch", arch)
    _edit_manifest(path, lambda m: m["config"].update(arch=[arch]))


def _evilmod(where: Path, marker: Path) -> None:
    (where / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")


def _imported(stderr: str) -> set[str]:
    """The modules a `python -X importtime` run imported."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines()
            if line.startswith("import time:")}


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "overparam.analyze",
                           *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=600)


# ------------------------------------------------------------------ no module imported


@pytest.mark.slow
def test_analyzing_a_directory_from_inside_it_never_imports_the_module_it_names(sweep_dir,
                                                                               tmp_path):
    d = _copy(sweep_dir, tmp_path / "r")
    _name_arch(d, "evilmod:X")
    marker = tmp_path / "ran"
    _evilmod(d, marker)
    proc = _analyze("--results=.", cwd=d)  # the case: cd DIR && analyze it
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (d / "analysis" / "figures" / "fit_max_radius_rowmax_vs_width.png").is_file()
    assert "evilmod" not in _imported(proc.stderr) and not marker.exists()
    # The control: from that directory, `import evilmod` runs it.
    subprocess.run([sys.executable, "-c", "import evilmod"], cwd=d, check=True, timeout=60)
    assert marker.read_text() == "ran"


@pytest.mark.slow
def test_comparing_sweeps_one_of_them_live_never_imports_the_module_they_name(sweep_dir,
                                                                             tmp_path):
    done, live = _copy(sweep_dir, tmp_path / "done"), _copy(sweep_dir, tmp_path / "live")
    for d in (done, live):
        _name_arch(d, "this:X")  # the case: `this` prints the Zen of Python
    _edit_manifest(live, lambda m: m.update(status="running"))
    proc = _analyze(f"--results={done}", f"--results={live}", cwd=ROOT)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "partial:" in proc.stdout and ZEN not in proc.stdout
    assert "this" not in _imported(proc.stderr)
    control = subprocess.run([sys.executable, "-c", "import this"], capture_output=True,
                             text=True, timeout=60)
    assert ZEN in control.stdout


@pytest.mark.slow
def test_initial_net_imports_a_module_only_when_the_call_names_it(sweep_dir, tmp_path,
                                                                  monkeypatch):
    d = _copy(sweep_dir, tmp_path / "r")
    _name_arch(d, "evilmod:X")
    marker = tmp_path / "ran"
    _evilmod(tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evilmod", raising=False)
    for partial in (False, True):
        r = overparam.load(d, partial=partial)
        run_id = r.runs.run_id.iloc[0]
        with pytest.raises(overparam.ResultsError) as info:
            r.initial_net(run_id)
        message = str(info.value)
        assert "\n" not in message and "'evilmod:X'" in message and "modules=" in message
        assert bounds.radius_bounds(r).empty  # Du's bound is the mlp's only
        assert "evilmod" not in sys.modules and not marker.exists()
    for named in (["evil"], ["evilmod:Y", "evilmod.X"], "evilmod:X2", "evilmod.py"):
        with pytest.raises(overparam.ResultsError, match="modules="):
            r.initial_net(run_id, modules=named)  # another module, or a name containing it
    assert "evilmod" not in sys.modules and not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 - named: imported (and no flax module X)
        r.initial_net(run_id, modules=["evilmod:X"])
    assert marker.exists() and "evilmod" in sys.modules


def test_the_networks_overparam_ships_are_built_without_being_named():
    for arch in ("mlp", "cnn", "resnet", "overparam.modules:MLP", "overparam.modules:CNN"):
        assert networks.shipped(arch), arch
    for arch in ("evilmod:X", "this:X", "overparam_x.modules:MLP", "overparam.modulesx:MLP",
                 "overparam.sweep:X", "examples.modules:BiasMLP", None, ["mlp"]):
        assert not networks.shipped(arch), arch


@pytest.mark.slow
@pytest.mark.parametrize("status", ["complete", "interrupted"])
def test_a_rerun_or_resume_never_imports_the_module_a_directory_names(sweep_dir, tmp_path,
                                                                       monkeypatch, status):
    d = _copy(sweep_dir, tmp_path / "r")
    _name_arch(d, "evilmod:X")
    _edit_manifest(d, lambda m: m.update(status=status))
    marker = tmp_path / "ran"
    _evilmod(d, marker)
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.delitem(sys.modules, "evilmod", raising=False)
    with pytest.raises(resultsdir.OutError) as info:  # the command line's sweep: the mlp
        engine.run_sweep(config_lib.validate(SWEEP), d, show_progress=False,
                         log_fn=lambda *a: None)
    assert "holds a different sweep (arch: ['evilmod:X'] -> ['mlp'])" in str(info.value)
    overparam.load(d, partial=True)
    assert "evilmod" not in sys.modules and not marker.exists()


# ------------------------------------------------------------------ no file outside opened


@pytest.fixture
def reads(monkeypatch):
    """Every path opened by Python's open/os.open (an audit hook) or read by pyarrow or
    pandas while the test runs, resolved (a test clears it after its own setup)."""
    seen: list[Path] = []
    _RECORDERS.append(seen)

    def wrap(module, name):
        original = getattr(module, name)

        def recorded(source, *args, **kwargs):
            if isinstance(source, (str, os.PathLike)):
                seen.append(Path(source).resolve())
            return original(source, *args, **kwargs)
        monkeypatch.setattr(module, name, recorded)

    for name in ("read_table", "read_metadata", "read_schema"):
        wrap(pq, name)
    wrap(pd, "read_parquet")
    yield seen
    _RECORDERS.remove(seen)


_RECORDERS: list[list[Path]] = []


def _audit(event, args):
    if event == "open" and _RECORDERS and isinstance(args[0], (str, os.PathLike)):
        _RECORDERS[-1].append(Path(os.fsdecode(args[0])).resolve())


sys.addaudithook(_audit)


def _outside(seen: list[Path], root: Path, directory: Path) -> list[Path]:
    """The paths of `seen` under root (the test's folder) but not in `directory`."""
    root, directory = root.resolve(), directory.resolve()
    return [p for p in seen if root in p.parents and not (p == directory
                                                          or directory in p.parents)]


def _refused(path: Path, *words: str) -> str:
    """load(path) and a rerun of its sweep on it both refuse in one line with `words`."""
    with pytest.raises(overparam.ResultsError) as info:
        overparam.load(path, partial=True)
    with pytest.raises(resultsdir.OutError) as rerun:
        engine.run_sweep(config_lib.validate(SWEEP), path, show_progress=False,
                         log_fn=lambda *a: None)
    for message in (str(info.value), str(rerun.value)):
        assert "\n" not in message, message
        for w in words:
            assert w in message, (w, message)
    return str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("dataset_id", ["../../x", "../x", "/tmp/x", "ABC", ""])
def test_a_dataset_id_is_checked_before_a_file_is_opened_for_it(sweep_dir, tmp_path, reads,
                                                                dataset_id):
    d = _copy(sweep_dir, tmp_path / "r")
    real = next((d / store.DATASETS).iterdir())
    for target in (tmp_path / "x.parquet", d / "x.parquet"):  # what '../' would reach
        shutil.copy(real, target)
    _set_runs(d, "dataset_id", dataset_id)
    reads.clear()  # from here on: what overparam opens
    _refused(d, str(d / store.RUNS), f"dataset_id {dataset_id!r}")
    results = overparam.Results(path=d, runs=pd.DataFrame(), steps=pd.DataFrame(),
                                layers=pd.DataFrame(), manifest={})
    with pytest.raises(overparam.ResultsError, match="not an overparam dataset id"):
        results.dataset(dataset_id)
    assert reads and not _outside(reads, tmp_path, d)
    assert not [p for p in reads if p.name == "x.parquet"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["../x.parquet", "/tmp/x.parquet", "steps/../../x.parquet",
                                  "steps/part-b00000-c00000.parquet/..", "manifest.json"])
def test_the_manifests_files_are_checked_before_one_is_opened(sweep_dir, tmp_path, reads,
                                                              name):
    d = _copy(sweep_dir, tmp_path / "r")
    shutil.copy(d / store.RUNS, tmp_path / "x.parquet")

    def add(m):
        m["files"][name] = dict(m["files"][store.RUNS])
    _edit_manifest(d, add)
    reads.clear()
    _refused(d, str(d / store.MANIFEST), f"files[{name!r}]", "not a file overparam writes")
    assert not _outside(reads, tmp_path, d)


def _part(d: Path) -> Path:
    return sorted((d / store.STEPS).glob("part-*.parquet"))[0]


LINKED = {  # an entry of the directory -> the entry a link replaces
    "a part": _part,
    "a table folder": lambda d: d / store.STEPS,
    "runs.parquet": lambda d: d / store.RUNS,
    "a dataset": lambda d: next((d / store.DATASETS).iterdir()),
    "the manifest": lambda d: d / store.MANIFEST,
    "the analysis folder": lambda d: d / "analysis",
    "the state folder": lambda d: d / checkpoint.STATE,
}


@pytest.mark.slow
@pytest.mark.parametrize("entry", list(LINKED))
def test_a_link_is_refused_and_never_followed(sweep_dir, tmp_path, reads, entry):
    """A link to an identical copy outside: the hashes would match, and the file outside
    be read (or the analysis written there)."""
    d = _copy(sweep_dir, tmp_path / "r")
    (d / "analysis").mkdir()
    (d / checkpoint.STATE).mkdir()
    linked = LINKED[entry](d)
    outside = tmp_path / "outside" / linked.name
    outside.parent.mkdir()
    shutil.move(linked, outside)
    before = sorted(p.relative_to(outside.parent) for p in outside.parent.rglob("*"))
    linked.symlink_to(outside, target_is_directory=outside.is_dir())
    reads.clear()
    _refused(d, str(linked), "symbolic link")
    with pytest.raises(overparam.ResultsError, match="symbolic link"):
        analyze.run_analysis(d, plots=False)
    assert not _outside(reads, tmp_path, d)
    assert sorted(p.relative_to(outside.parent) for p in outside.parent.rglob("*")) == before


@pytest.mark.slow
def test_a_special_file_is_refused(sweep_dir, tmp_path):
    d = _copy(sweep_dir, tmp_path / "r")
    os.mkfifo(d / store.STEPS / "part-b00099-c00000.parquet")  # opening it would block
    _refused(d, str(d / store.STEPS / "part-b00099-c00000.parquet"), "not a regular file")


@pytest.mark.slow
@pytest.mark.parametrize("manifest", [True, False], ids=["sweep", "new directory"])
def test_a_linked_lock_is_never_written_through(sweep_dir, tmp_path, manifest):
    d = _copy(sweep_dir, tmp_path / "r") if manifest else tmp_path / "r"
    d.mkdir(exist_ok=True)
    precious = tmp_path / "precious"
    precious.write_text("not overparam's\n")
    (d / resultsdir.LOCK).symlink_to(precious)
    with pytest.raises(resultsdir.OutError) as info:
        engine.run_sweep(config_lib.validate(SWEEP), d, show_progress=False,
                         log_fn=lambda *a: None)
    assert "symbolic link" in str(info.value) and "\n" not in str(info.value)
    assert precious.read_text() == "not overparam's\n"


@pytest.mark.parametrize("part", ["../../x.parquet", "steps/../x.parquet", "/tmp/x.parquet",
                                  "steps/part-b00000-c00000.parquet.x"])
def test_a_checkpoints_parts_are_checked_before_they_are_used(tmp_path, part):
    entry = {"rows": 1, "sha256": "0" * 64}
    checkpoint.save(tmp_path, 0, checkpoint.CheckpointMeta(
        chunks_done=1, step=2, parts={part: entry},
        results={"zero_step": [None], "final_loss": [None]}))
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load(tmp_path, 0)
    assert f"parts[{part!r}]" in str(info.value) and "\n" not in str(info.value)
    fine = "steps/part-b00000-c00000.parquet"
    checkpoint.save(tmp_path, 0, checkpoint.CheckpointMeta(
        chunks_done=1, step=2, parts={fine: entry},
        results={"zero_step": [None], "final_loss": [None]}))
    assert checkpoint.load(tmp_path, 0).parts == {fine: entry}
