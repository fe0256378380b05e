"""The analysis of a sweep end to end (`run_analysis`), and where it writes.

`run_analysis(path)` writes into path/analysis/ (or `out`):

  report.md         summary, the fit table, the quantities' definitions, the censored runs
                    per width, the convergence rates against the kernel's, the test error
                    against Arora et al.'s measure, what the figures draw, the figures
                    (relative links): `report.write_report`
  fits.csv          the fit table (`fits.fit_table`): one row per fit
  generalization.csv  the test error against Arora et al.'s measure (`fits.bound_fit_table`),
                    where the sweep has test errors of +-1 labels
  per_run.parquet   the per-run table (`per_run.per_run_quantities`): the fitted values
  figures/*.png     `figures.write_figures` (and a .pdf of each beside it)

`run_analysis([path_a, path_b, ...])` analyzes several sweeps side by side: each is fitted
on its own, the tables gain a first column `sweep` (its label: `groups.sweep_labels`), the
figures overlay the sweeps, and everything is written into `out`, by default
path_a/analysis/compare_<label a>_<label b>... (`output_dir`).

Everything is written into a hidden directory that replaces `out` once complete
(`outdir.building`), report.md last.

Owns the order in which the analysis loads, computes and writes, and the choice of its
directory; computes no quantity, fit, figure or text itself. Its command line is
`python -m overparam.analyze` (overparam/analyze.py).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from overparam import store
from overparam.analysis import outdir
from overparam.analysis.figures import write_figures
from overparam.analysis.fits import bound_fit_table, fit_table, sweeps_fit_table
from overparam.analysis.groups import SWEEP, sweep_labels
from overparam.analysis.per_run import per_run_quantities
from overparam.analysis.quantities import QUANTITIES, QuantityOptions
from overparam.analysis.rates import censored_counts, rate_vs_theory
from overparam.analysis.report import write_report


def _safe(label: str) -> str:
    return re.sub(r"[^\w.-]+", "-", label).strip("-.") or "sweep"


def output_dir(paths: Sequence[str | os.PathLike], labels: Sequence[str] | None = None,
               out: str | os.PathLike | None = None) -> Path:
    """Where `run_analysis` writes: `out` if given; else PATH/analysis for one sweep, and for
    several FIRST/analysis/compare_<label>_<label>... (labels made safe for a file name)."""
    if out is not None:
        return Path(out)
    first = Path(paths[0]) / "analysis"
    if len(paths) == 1:
        return first
    return first / ("compare_" + "_".join(_safe(lab) for lab in labels))


def check_distinct(paths: Sequence[str | os.PathLike]) -> None:
    """Raises ValueError if two of `paths` are the same directory."""
    seen: dict[Path, str] = {}
    for p in paths:
        key = Path(p).resolve()
        if key in seen:
            same = "" if str(p) == seen[key] else f" (as {seen[key]!s})"
            raise ValueError(f"--results: {p} is given twice{same}; give each sweep once")
        seen[key] = str(p)


def finished_runs(results: store.Results) -> store.Results:
    """`results`, of a sweep still running (Results.partial) only its runs whose batch is
    finished (the others have not reached their last step: their maxima and rates would
    be of part of a run). Raises ResultsError if there is none yet."""
    if not results.partial:
        return results
    done = results.runs[results.runs.status != "running"]
    if done.empty:
        raise store.ResultsError(f"{results.path} holds a sweep that has not finished a batch "
                                 f"yet (status {results.manifest['status']!r}); analyze it "
                                 "once one is finished")
    keep = lambda t: t[t.run_id.isin(done.run_id)].reset_index(drop=True)
    return dataclasses.replace(results, runs=done.reset_index(drop=True),
                               steps=keep(results.steps), layers=keep(results.layers))


def run_analysis(path: str | os.PathLike | Sequence[str | os.PathLike], *,
            out: str | os.PathLike | None = None, loss_threshold: float = 1e-3,
            tail_fraction: float = 0.5, rate_floor: float = 1e-10,
            eos_fraction: float = 0.95, n_boot: int = 1000, level: float = 0.95, ci: str = "t",
            seed: int = 0, plots: bool = True) -> pd.DataFrame:
    """Analyzes the sweep in `path` and writes into `out` (default path/analysis):
    report.md, fits.csv, per_run.parquet and figures/*.png and *.pdf (unless plots=False).
    Returns the fit table (`fit_table`), with attrs['out'] the directory written.
    Arguments: `per_run_quantities` and `power_law_fit`.

    `path` a list of several sweeps: each fitted on its own, the tables with a first column
    SWEEP (`groups.sweep_labels`), the figures shared, written into `output_dir` (by
    default FIRST/analysis/compare_<labels>). A list of one is one sweep.

    A sweep still running (or interrupted) is analyzed as far as it has gone: the runs
    of its finished batches (`finished_runs`); report.md says it is partial, and the
    table's attrs['partial'] lists such sweeps.

    `out` is replaced whole (`outdir.building`): the analysis is written into a hidden
    directory beside it and swapped in once complete, so `out` is at every moment the
    previous analysis or the new complete one, and an exception or signal leaves it as
    it was; what a kill left of an earlier analysis of `out` is recovered or removed
    first. The analyses nested in `out` (comparisons) are kept.

    Raises overparam.ResultsError for a missing, foreign or corrupted results directory,
    outdir.OutputError for an `out` that holds anything but an analysis or that another
    analysis is writing (both before anything is written), ValueError for a directory
    given twice.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        raise ValueError("run_analysis: no results directory given")
    check_distinct(paths)
    loaded = [finished_runs(store.load(p, partial=True)) for p in paths]  # before writing
    store.crash_point("load")
    options = QuantityOptions(loss_threshold, tail_fraction, rate_floor, eos_fraction)
    fit_options = dict(n_boot=n_boot, level=level, ci=ci, seed=seed)
    quantity_options = dataclasses.asdict(options)
    labels = sweep_labels(loaded) if len(loaded) > 1 else None
    out = output_dir(paths, labels, out)
    with outdir.building(out) as new:  # swapped in for `out` once complete (outdir)
        if labels is None:
            (results,) = loaded
            sweeps = results
            per_run = per_run_quantities(results, **quantity_options)
            fits = fit_table(per_run, **fit_options)
        else:
            sweeps = dict(zip(labels, loaded))
            per_run = pd.concat([per_run_quantities(r, **quantity_options).assign(
                **{SWEEP: lab}) for lab, r in sweeps.items()], ignore_index=True)
            per_run = per_run[[SWEEP, *[c for c in per_run if c != SWEEP]]]
            fits = sweeps_fit_table(per_run, **fit_options)
        store.crash_point("fit")
        store.write_parquet(per_run, new / "per_run.parquet")
        store.atomic_write(new / "fits.csv", lambda tmp: fits.to_csv(tmp, index=False))
        bound = (bound_fit_table(per_run, n_boot=n_boot, level=level, seed=seed)
                 if labels is None else None)
        if bound is not None and len(bound):
            store.atomic_write(new / "generalization.csv",
                               lambda tmp: bound.to_csv(tmp, index=False))
        figures = (write_figures(new, sweeps, per_run, fits, options=options, n_boot=n_boot,
                                 seed=seed, bound_fits=bound) if plots else {})
        skipped = [q.name for q in QUANTITIES if q.name not in set(per_run.quantity)]
        write_report(new / outdir.COMPLETE, loaded if labels else loaded[0], fits, figures,
                     options=options, fit_options=fit_options, skipped=skipped,
                     rates=rate_vs_theory(per_run), censored=censored_counts(per_run),
                     labels=labels, bound=bound, directory=out)  # last: marks it complete
    fits.attrs["out"] = str(out)
    fits.attrs["partial"] = [str(r.path) for r in loaded if r.partial]
    return fits
