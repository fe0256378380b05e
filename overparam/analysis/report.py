"""The analysis of a sweep end to end (`analyze`), and its tables and report.

`analyze(path)` writes into path/analysis/ (or `out`):

  report.md         summary, the fit table, the quantities' definitions, the convergence
                    rates against the kernel's, the figures (relative links)
  fits.csv          the fit table (`fits.fit_table`): one row per fit
  per_run.parquet   the per-run table (`quantities.per_run_quantities`): the fitted values
  figures/*.png     `figures.write_figures`

Owns the text of the tables and of report.md, the comparison of the convergence rates
with theory's (`rate_vs_theory`), and the order in which the files are written. Computes
no quantity, fit or figure itself: it calls `quantities`, `fits` and `figures`, and reads
their registries for the definitions.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd

from overparam import store, theory
from overparam.analysis.figures import write_figures
from overparam.analysis.fits import fit_table
from overparam.analysis.quantities import (
    QUANTITIES,
    SETTINGS,
    QuantityOptions,
    group_label,
    per_run_quantities,
    varying,
)

# ----------------------------------------------------------------------------- fit table text

def _exponent_text(row) -> str:
    if not np.isfinite(row.exponent):
        return "-"
    if not np.isfinite(row.ci_low):
        return f"{row.exponent:+.3f}"
    return f"{row.exponent:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"


def _table_rows(fits: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    level = int(round(100 * fits.level.iloc[0])) if len(fits) else 95
    header = ["quantity", "vs", "group", f"exponent [{level}% CI]", "predicted", "runs",
              "excluded", "diverged"]
    rows = [[r.quantity, r.x, r.group, _exponent_text(r), r.predicted or "-", str(r.n_runs),
             str(r.n_excluded), str(r.n_diverged)] for r in fits.itertuples()]
    return header, rows


def format_table(fits: pd.DataFrame, *, max_rows: int | None = None) -> str:
    """The short printed table: quantity, vs, group, exponent [CI], predicted, runs,
    excluded (values <= 0 or non-finite), diverged; at most max_rows rows (None: all)."""
    if fits.empty:
        return "no fits: no swept width, n or depth with two or more values and finite results"
    more = 0 if max_rows is None else max(len(fits) - max_rows, 0)
    header, rows = _table_rows(fits.iloc[: len(fits) - more])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(header)]
    right = {3, 5, 6, 7}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    text = "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
    return text + (f"\n... and {more} more rows (all in fits.csv and report.md)" if more else "")


def markdown_table(fits: pd.DataFrame) -> str:
    """The fit table as GitHub Markdown, with a column saying whether the CI meets theory."""
    header, rows = _table_rows(fits)
    header = header[:5] + ["meets theory"] + header[5:]
    yes = {True: "yes", False: "**no**"}
    rows = [r[:5] + [yes.get(c, "-") if c is not pd.NA else "-"] + r[5:]
            for r, c in zip(rows, fits.consistent)]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def _markdown(frame: pd.DataFrame) -> str:
    """A small DataFrame as a GitHub Markdown table (floats to 4 significant digits)."""
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- rates

def rate_vs_theory(per_run: pd.DataFrame) -> pd.DataFrame:
    """Fitted convergence rates against `theory.kernel_loss_rate`, -2 ln(1 - eta lambda_0),
    the rate of the slowest eigendirection of the infinite-width kernel (THEORY.md section
    1), for du networks of depth 1 trained by plain GD (no momentum) on the squared loss.
    Empty if there are none.

    One row per group of the other swept settings and width: group, width, runs, and the
    medians over seeds of rate, theory_rate, ratio = rate / theory_rate, lambda0.
    """
    rates = per_run[(per_run.quantity == "convergence_rate") & (per_run.status == "ok")
                    & (per_run.param == "du") & (per_run.depth == 1)
                    & (per_run.loss == "squared") & (per_run.optimizer == "gd")
                    & (per_run.momentum == 0.0)]
    if rates.empty:
        return pd.DataFrame()
    (reduction,) = rates.reduction.unique()  # a setting of the whole sweep
    kernel = theory.kernel_loss_rate(rates.lr, rates.lambda0, reduction=reduction, n=rates.n)
    frame = rates.assign(theory_rate=kernel, ratio=rates.value / kernel)
    shown = [k for k in varying(per_run, SETTINGS) if k != "width"]
    keys = [k for k in SETTINGS if k != "width"] + ["width"]
    rows = []
    for values, g in frame.groupby(keys, dropna=False, sort=True):
        key = dict(zip(keys, values))
        rows.append(dict(group=group_label(key, shown), width=key["width"], runs=len(g),
                         rate=g.value.median(), theory_rate=g.theory_rate.median(),
                         ratio=g.ratio.median(), lambda0=g.lambda0.median()))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- report.md

def _summary(results: store.Results) -> str:
    runs, c = results.runs, results.manifest["config"]
    parts = [f"{len(runs)} networks ({int((runs.status != 'ok').sum())} diverged)",
             f"{runs.seed.nunique()} seeds"]
    parts += [f"{k} {', '.join(map(str, sorted(runs[k].unique())))}"
              for k in ("width", "depth", "n")]
    for k in ("loss", "optimizer", "param", "lr", "lr_scaling", "batch_size", "steps", "d",
              "dataset", "labels", "reduction", "dtype"):
        v = c[k]
        parts.append(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}")
    return "; ".join(parts) + "."


def write_report(path: Path, results: store.Results, fits: pd.DataFrame,
                 figures: dict[str, list[str]], *, options: QuantityOptions,
                 fit_options: dict, skipped: list[str], rates: pd.DataFrame) -> None:
    """report.md: summary, fit table, definitions (of QUANTITIES but the `skipped` ones,
    with `options`), rates (`rate_vs_theory`), figures (links relative to path's folder).
    fit_options: the keyword arguments of `fit_table` (n_boot, level, ci, seed)."""
    level = round(100 * fit_options["level"])
    lines = [f"# Scaling analysis of `{results.path}`", "", _summary(results), "",
             f"Written by `python -m overparam.analyze --results={results.path}`. Beside "
             "this report: `fits.csv` (the table below with each group's settings, "
             "prefactors and standard errors), `per_run.parquet` (the fitted values: one row "
             "per run, quantity and layer), `figures/`.", "",
             "## Power-law fits", "",
             "Each row fits log y = log C + exponent * log x by least squares over every "
             "non-diverged run of the group (all seeds), x being the swept variable (`vs`); "
             "a group is one combination of the other swept settings (and the layer). "
             f"{level}% confidence interval: bootstrap over seeds ({fit_options['n_boot']} "
             "resamples of the seed ids with replacement, all runs of each drawn seed, "
             f"refit; interval '{fit_options['ci']}', rng seed {fit_options['seed']}; see "
             "`overparam.analyze.power_law_fit`). `excluded`: values <= 0 or non-finite, "
             "left out of the fit; `diverged`: runs left out. `predicted`: THEORY.md "
             "section 5 (an interval for flip fractions), for the width and the "
             "width-stable step size only; `meets theory`: the interval meets it.", "",
             markdown_table(fits) if not fits.empty else format_table(fits), ""]
    widths = results.runs.width[results.runs.status == "ok"]
    if len(widths) and widths.nunique() > 1 and widths.max() < 32 * widths.min():
        lines += [f"Note: the widths span {widths.max() / widths.min():g}x "
                  f"({widths.min()} to {widths.max()}); THEORY.md section 5 asks for at "
                  "least 32x before reading an exponent against the theory.", ""]
    lines += ["## Definitions", ""]
    lines += [f"- `{q.name}`: {q.text('definition', options)}" for q in QUANTITIES
              if q.name not in skipped]
    if skipped:
        lines += ["", "Not in these results (columns absent, or no finite value): "
                  + ", ".join(f"`{s}`" for s in skipped) + "."]
    if not rates.empty:
        lines += ["", "## Linear convergence against the kernel", "",
                  "Median over seeds of the fitted rate -d ln(loss)/dt and of "
                  "-2 ln(1 - eta lambda_0), lambda_0 = lambda_min(H^inf) of each run's "
                  "training set: the rate of the slowest eigendirection (THEORY.md section "
                  "1). A ratio >= 1 converges at least as fast as that.", "",
                  _markdown(rates)]
    for title, names in figures.items():
        if names:
            lines += ["", f"## {title}", ""]
            lines += [f"![{Path(n).stem}]({n})\n" for n in names]
    text = "\n".join(lines).rstrip() + "\n"
    store.atomic_write(path, lambda tmp: tmp.write_text(text))


# ----------------------------------------------------------------------------- analyze

def analyze(path: str | os.PathLike, *, out: str | os.PathLike | None = None,
            loss_threshold: float = 1e-3, tail_fraction: float = 0.5,
            rate_floor: float = 1e-10, n_boot: int = 1000, level: float = 0.95,
            ci: str = "t", seed: int = 0, plots: bool = True) -> pd.DataFrame:
    """Analyzes the sweep in `path` and writes into `out` (default path/analysis):
    report.md, fits.csv, per_run.parquet and figures/*.png (unless plots=False). Returns
    the fit table (`fit_table`). Arguments: `per_run_quantities` and `power_law_fit`.

    Raises overparam.ResultsError for a missing, foreign or corrupted results directory.
    """
    results = store.load(path)
    out = Path(path) / "analysis" if out is None else Path(out)
    options = QuantityOptions(loss_threshold, tail_fraction, rate_floor)
    fit_options = dict(n_boot=n_boot, level=level, ci=ci, seed=seed)
    per_run = per_run_quantities(results, **dataclasses.asdict(options))
    fits = fit_table(per_run, **fit_options)
    store.write_parquet(per_run, out / "per_run.parquet")
    store.atomic_write(out / "fits.csv", lambda tmp: fits.to_csv(tmp, index=False))
    figures = write_figures(out, results, per_run, fits, options=options) if plots else {}
    skipped = [q.name for q in QUANTITIES if q.name not in set(per_run.quantity)]
    write_report(out / "report.md", results, fits, figures, options=options,
                 fit_options=fit_options, skipped=skipped, rates=rate_vs_theory(per_run))
    return fits
