"""The command line of the scaling analysis (the analysis itself: overparam/analysis/).

    python -m overparam.analyze --results=results/default

writes into results/default/analysis/:

  report.md         the fit table and the figures (relative links), with definitions
  fits.csv          one row per fit: quantity, swept variable, group, exponent, CI, prediction
  per_run.parquet   one row per run x quantity (x layer): the values that were fitted
  figures/*.png     each fitted quantity against the swept variable (log-log, every seed,
                    per-width medians with seed-bootstrap intervals, fit with the interval
                    of its exponent as a band, theory slopes, bounds, censored runs); loss,
                    radius, flip and Gram curves over steps; a .pdf of each beside it

and prints the short fit table. Two or more sweeps side by side (GD against SGD, du
against ntk):

    python -m overparam.analyze --results=results/gd --results=results/sgd

fits each sweep on its own (fits.csv and per_run.parquet gain a first column `sweep`: the
sweep's config name, or its directory name where names collide), draws them in the same
figures (told apart by marker and line style) and writes into --out, by default
FIRST/analysis/compare_<name>_<name>/ (FIRST: the first --results); the report names the
sweeps and that directory.

Flags: --results (required; repeat it for several sweeps), --out (default
RESULTS/analysis), --loss_threshold (1e-3), --tail_fraction (0.5), --n_boot (1000),
--level (0.95), --ci (t|expanded|percentile), --seed (0, of the bootstrap), --plots.
A missing, foreign or corrupted results directory, the same directory given twice, or a
bad flag, exits 2 with one `error:` line on stderr, before anything is written; so does an
--out that holds anything but an analysis (the analysis replaces its directory whole) or
that another analysis is writing. The analysis is written into a hidden directory beside
--out and swapped in once complete (overparam/analysis/outdir.py): --out is at every moment
the previous analysis or the new complete one, what a killed analysis left is recovered or
removed by the next, and the analyses nested in it (comparisons) are kept. SIGINT and
SIGTERM, at any moment from the first import on, print one line on stderr and exit with
128 + the signal number, leaving --out as it was (or complete, where the signal came after
it was swapped in). From a notebook (this module re-exports the analysis's functions):

    from overparam import analyze
    q = analyze.per_run_quantities(overparam.load("results/default"))
    fits = analyze.fit_table(q)                  # DataFrame, one fit per row
    print(analyze.format_table(fits))
    analyze.power_law_fit(x, y, groups=seeds)    # -> Fit(exponent, prefactor, ci_low, ...)
    analyze.run_analysis(["results/gd", "results/sgd"])  # several sweeps, as the command line

The quantities, their definitions and predictions: overparam.analysis.quantities.QUANTITIES
(and the Definitions section of report.md); the fits: overparam.analysis.fits; the whole
pipeline: overparam.analysis.pipeline.run_analysis; the modules: overparam/analysis/.
"""

from __future__ import annotations

if __name__ == "__main__":  # before the slow imports: a signal from here on is one line
    from overparam import cli, interrupt

    interrupt.install(once=True, line=cli.analysis_interrupted)

import os
import signal
import sys
from pathlib import Path

from overparam import store

if __name__ == "__main__":
    store.crash_point("import")  # test hook: while the analysis's modules are imported

from overparam.analysis.bounds import radius_bounds
from overparam.analysis.curves import CURVES, plot_curves
from overparam.analysis.figures import write_figures
from overparam.analysis.fits import (
    CI_METHODS,
    FIT_COLUMNS,
    Fit,
    bound_fit_table,
    fit_table,
    format_prediction,
    median_interval,
    power_law_fit,
    sweeps_fit_table,
)
from overparam.analysis.generalization import plot_bound
from overparam.analysis.groups import SWEEP, SWEPT_COLUMNS, group_label, sweep_labels
from overparam.analysis.outdir import OutputError
from overparam.analysis.per_run import per_run_quantities, run_settings
from overparam.analysis.pipeline import check_distinct, output_dir, run_analysis
from overparam.analysis.quantities import (
    QUANTITIES,
    QUANTITY_BY_NAME,
    Quantity,
    QuantityOptions,
    predicted_exponent,
)
from overparam.analysis.rates import censored_counts, rate_vs_theory
from overparam.analysis.report import write_report
from overparam.analysis.scaling import plot_fit
from overparam.analysis.tables import format_table, markdown_table
from overparam.analysis.variables import X_VARIABLE_BY_NAME, X_VARIABLES, XVariable
from overparam.cli import analysis_interrupted, fail, one_line

__all__ = ["CI_METHODS", "CURVES", "FIT_COLUMNS", "QUANTITIES", "QUANTITY_BY_NAME", "SWEEP",
           "SWEPT_COLUMNS", "X_VARIABLES", "X_VARIABLE_BY_NAME", "Fit", "OutputError",
           "Quantity", "QuantityOptions", "XVariable", "bound_fit_table", "censored_counts",
           "check_distinct", "fit_table", "format_prediction", "format_table", "group_label",
           "markdown_table", "median_interval", "output_dir", "per_run_quantities",
           "plot_bound", "plot_curves", "plot_fit", "power_law_fit", "predicted_exponent",
           "radius_bounds", "rate_vs_theory", "run", "run_analysis", "run_settings",
           "sweep_labels", "sweeps_fit_table", "write_figures", "write_report"]

PRINTED_ROWS = 80  # rows of the table the command line prints


def _define_flags():
    from absl import flags

    f = flags
    return dict(
        results=f.DEFINE_multi_string(
            "results", None, "Results directory of a finished sweep; repeat it to analyze "
            "several side by side."),
        out=f.DEFINE_string("out", None, "Output directory (default RESULTS/analysis; with "
                            "several --results, FIRST/analysis/compare_<names>)."),
        loss_threshold=f.DEFINE_float(
            "loss_threshold", 1e-3, "steps_to_loss_threshold: first step with loss <= this "
            "times the run's initial loss."),
        tail_fraction=f.DEFINE_float(
            "tail_fraction", 0.5, "convergence_rate: fit ln(loss) over this last fraction of "
            "the recorded steps."),
        eos_fraction=f.DEFINE_float(
            "eos_fraction", 0.95, "steps_to_eos: first step with sharpness >= this times "
            "2 / eta, the stability limit (0.95: 1.9 / eta)."),
        n_boot=f.DEFINE_integer("n_boot", 1000, "Bootstrap resamples of the seeds per fit."),
        level=f.DEFINE_float("level", 0.95, "Confidence level of the intervals."),
        ci=f.DEFINE_enum("ci", "t", list(CI_METHODS), "Bootstrap interval (see "
                         "overparam.analyze.power_law_fit)."),
        seed=f.DEFINE_integer("seed", 0, "Seed of the bootstrap's random draws."),
        plots=f.DEFINE_bool("plots", True, "Write the figures."),
    )


def _check_flags(v: dict) -> None:
    if not v["results"]:
        fail("--results: required, e.g. --results=results/default")
    if any(not p for p in v["results"]):
        fail("--results: an empty directory name")
    try:
        check_distinct(v["results"])
    except ValueError as e:
        fail(one_line(e))
    if not v["loss_threshold"] > 0:
        fail(f"--loss_threshold: must be > 0, got {v['loss_threshold']}")
    if not 0 < v["tail_fraction"] <= 1:
        fail(f"--tail_fraction: must be in (0, 1], got {v['tail_fraction']}")
    if not v["eos_fraction"] > 0:
        fail(f"--eos_fraction: must be > 0, got {v['eos_fraction']}")
    if v["n_boot"] < 1:
        fail(f"--n_boot: must be >= 1, got {v['n_boot']}")
    if not 0 < v["level"] < 1:
        fail(f"--level: must be in (0, 1), got {v['level']}")


def _status(code) -> int:
    """The exit status of SystemExit(code)."""
    return 0 if code is None else code if isinstance(code, int) else 1


def run(argv: list[str] | None = None) -> None:
    """Entry point of `python -m overparam.analyze`; ends the process: exit status 0, 2 for
    bad input (one `error:` line), 128 + the signal number for SIGINT or SIGTERM (one line,
    `analysis_interrupted`)."""
    from absl import app, flags

    from overparam import interrupt

    holders = _define_flags()

    def parse(args):
        try:
            rest = flags.FLAGS(args)
        except flags.Error as e:
            fail(one_line(e))
        if len(rest) > 1:
            fail(f"unexpected argument {rest[1]!r}; give flags as --name=value, e.g. "
                 "--results=results/default")
        return rest

    def main(_):
        v = {k: h.value for k, h in holders.items()}
        _check_flags(v)
        try:
            fits = run_analysis(v["results"], out=v["out"],
                                loss_threshold=v["loss_threshold"],
                                tail_fraction=v["tail_fraction"],
                                eos_fraction=v["eos_fraction"], n_boot=v["n_boot"],
                                level=v["level"], ci=v["ci"], seed=v["seed"],
                                plots=v["plots"])
        except (store.ResultsError, OutputError) as e:
            fail(one_line(e))
        except OSError as e:
            fail(f"{e.filename}: {e.strerror}" if e.filename else f"analysis failed: {e}")
        store.crash_point("analyzed")  # test hook: the directory is complete, nothing printed
        out = Path(fits.attrs["out"])
        for path in fits.attrs["partial"]:
            print(f"partial: {path} is still running (or interrupted); analyzed: the runs "
                  "of its finished batches")
        print(format_table(fits, max_rows=PRINTED_ROWS))
        print(f"\nreport: {out / 'report.md'}   tables: {out / 'fits.csv'}, "
              f"{out / 'per_run.parquet'}")

    # Signals raise interrupt.Interrupted (installed above when run as a program, or
    # here): the analysis removes what it wrote and the nested `try` takes it, wherever it
    # comes; once past the work a signal ends the process at once with its line.
    if not interrupt.installed():
        interrupt.install(once=True, line=analysis_interrupted)
    code, signum = 0, None
    try:
        try:
            app.run(main, argv=argv, flags_parser=parse)
        except SystemExit as e:
            code = _status(e.code)
        signum = interrupt.received()  # one that a library caught and dropped, if any
        if signum is None:
            interrupt.exit_on_signal(analysis_interrupted)
    except (interrupt.Interrupted, KeyboardInterrupt) as e:
        signum = getattr(e, "signum", signal.SIGINT)
    if signum is not None:
        interrupt.say(analysis_interrupted(signum))
        code = 128 + signum
    # No interpreter shutdown: a signal there could not be answered with its line.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
