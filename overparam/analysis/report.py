"""The analysis of a sweep end to end (`analyze`), and its tables and report.

`analyze(path)` writes into path/analysis/ (or `out`):

  report.md         summary, the fit table, the quantities' definitions, the censored runs
                    per width, the convergence rates against the kernel's, the test error
                    against Arora et al.'s measure, what the figures draw, the figures
                    (relative links)
  fits.csv          the fit table (`fits.fit_table`): one row per fit
  generalization.csv  the test error against Arora et al.'s measure (`fits.bound_fit_table`),
                    where the sweep has test errors of +-1 labels
  per_run.parquet   the per-run table (`quantities.per_run_quantities`): the fitted values
  figures/*.png     `figures.write_figures` (and a .pdf of each beside it)

`analyze([path_a, path_b, ...])` analyzes several sweeps side by side: each is fitted on its
own, the tables gain a first column `sweep` (its label: `quantities.sweep_labels`), the
figures overlay the sweeps, and everything is written into `out`, by default
path_a/analysis/compare_<label a>_<label b>... (`output_dir`).

Everything is written into a hidden directory that replaces `out` once complete
(`outdir.building`), report.md last.

Owns the text of the tables and of report.md, the comparison of the convergence rates
with theory's (`rate_vs_theory`), and the order in which the files are written. Computes
no quantity, fit or figure itself: it calls `quantities`, `fits` and `figures`, and reads
their registries for the definitions.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from overparam import store, theory
from overparam.analysis import outdir
from overparam.analysis.figures import PNG_DPI, write_figures
from overparam.analysis.fits import bound_fit_table, fit_table, sweeps_fit_table
from overparam.analysis.quantities import (
    QUANTITIES,
    SETTINGS,
    SWEEP,
    QuantityOptions,
    du_theorem_runs,
    group_label,
    per_run_quantities,
    sweep_labels,
    value_kind,
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
    sweep = SWEEP in fits
    header = ["quantity", "vs", "group", f"exponent [{level}% CI]", "predicted", "runs",
              "excluded", "diverged"]
    rows = [[r.quantity, r.x, r.group, _exponent_text(r), r.predicted or "-", str(r.n_runs),
             str(r.n_excluded), str(r.n_diverged)] for r in fits.itertuples()]
    if sweep:
        header = [SWEEP, *header]
        rows = [[str(s), *r] for s, r in zip(fits[SWEEP], rows)]
    return header, rows


_RIGHT = ("exponent", "runs", "excluded", "diverged")  # right-aligned columns


def format_table(fits: pd.DataFrame, *, max_rows: int | None = None) -> str:
    """The short printed table: [sweep,] quantity, vs, group, exponent [CI], predicted,
    meets (whether the CI meets the prediction: yes / NO), runs, excluded (values <= 0
    or non-finite), diverged; at most max_rows rows (None: all)."""
    if fits.empty:
        return "no fits: no swept width, n or depth with two or more values and finite results"
    more = 0 if max_rows is None else max(len(fits) - max_rows, 0)
    header, rows = _with_verdict(fits.iloc[: len(fits) - more], "meets", {True: "yes",
                                                                         False: "NO"})
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(header)]
    right = {i for i, c in enumerate(header) if c.startswith(_RIGHT)}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    text = "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
    return text + (f"\n... and {more} more rows (all in fits.csv and report.md)" if more else "")


def _with_verdict(fits: pd.DataFrame, name: str, words: dict) -> tuple[list, list]:
    """`_table_rows` with a column `name` after `predicted`: whether each fit's interval
    meets the theory (fits.consistent), in `words`; '-' where there is no prediction."""
    header, rows = _table_rows(fits)
    at = header.index("predicted") + 1
    rows = [r[:at] + [words.get(c, "-") if c is not pd.NA else "-"] + r[at:]
            for r, c in zip(rows, fits.consistent)]
    return header[:at] + [name] + header[at:], rows


def markdown_table(fits: pd.DataFrame) -> str:
    """The fit table as GitHub Markdown, with a column saying whether the CI meets theory."""
    header, rows = _with_verdict(fits, "meets theory", {True: "yes", False: "**no**"})
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
    """`_rates` of each sweep (with a first column SWEEP when per_run has one)."""
    if SWEEP not in per_run:
        return _rates(per_run)
    frames = [_rates(g.drop(columns=SWEEP)).assign(**{SWEEP: s})
              for s, g in per_run.groupby(SWEEP, sort=False)]
    frames = [f for f in frames if len(f.columns) > 1]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out[[SWEEP, *[c for c in out if c != SWEEP]]]


def _rates(per_run: pd.DataFrame) -> pd.DataFrame:
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


# ----------------------------------------------------------------------------- censored

CENSORED_COLUMNS = ["quantity", "group", "layer", "width", "runs", "censored", "off_axis"]


def censored_counts(per_run: pd.DataFrame, x: str = "width") -> pd.DataFrame:
    """Per quantity, group (the other settings varying within a sweep), layer and value of
    `x`: the non-diverged runs, and how many of them are 'censored' (never got there
    within the recorded steps) and 'off_axis' (<= 0 or undefined), as
    `quantities.value_kind` calls them; only rows with any of either. Columns
    ([SWEEP,] CENSORED_COLUMNS, with `x` in place of width). The figures draw these runs as
    triangles with their counts; the fits leave them out (n_excluded)."""
    columns = ([SWEEP] if SWEEP in per_run else []) + [
        c if c != "width" else x for c in CENSORED_COLUMNS]
    if SWEEP in per_run:  # each sweep with its own groups, as in its fits
        frames = [censored_counts(g.drop(columns=SWEEP), x).assign(**{SWEEP: s})
                  for s, g in per_run.groupby(SWEEP, sort=False)]
        frames = [f for f in frames if len(f)]
        return (pd.concat(frames, ignore_index=True)[columns] if frames
                else pd.DataFrame(columns=columns))
    frame = per_run[per_run.status == "ok"]
    frame = frame.assign(_kind=value_kind(frame))
    if not frame._kind.isin(["censored", "off_axis"]).any():
        return pd.DataFrame(columns=columns)
    shown = [k for k in varying(per_run, SETTINGS) if k != x]
    keys = ["quantity", *shown, "layer", x]
    order = {q.name: i for i, q in enumerate(QUANTITIES)}
    rows = []
    for values, g in frame.groupby(keys, dropna=False, sort=False):
        key = dict(zip(keys, values))
        n = g._kind.value_counts()
        if not (n.get("censored", 0) or n.get("off_axis", 0)):
            continue
        rows.append({"quantity": key["quantity"], "group": group_label(key, shown),
                     "layer": key["layer"], x: key[x], "runs": len(g),
                     "censored": int(n.get("censored", 0)),
                     "off_axis": int(n.get("off_axis", 0)), "_q": order[key["quantity"]]})
    out = pd.DataFrame(rows).sort_values(["_q"], kind="stable").drop(columns="_q")
    out["layer"] = out["layer"].astype("Int64")
    return out[columns].reset_index(drop=True)


# ----------------------------------------------------------------------------- report.md

def _summary(results: store.Results) -> str:
    runs, c = results.runs, results.manifest["config"]
    parts = [f"{len(runs)} networks ({int((runs.status != 'ok').sum())} diverged)",
             f"{runs.seed.nunique()} seeds"]
    if results.partial:
        parts[0] = (f"**partial**: the sweep is {results.manifest['status']}; the "
                    f"{len(runs)} of its {results.manifest['num_runs']} networks whose batch "
                    f"is finished ({int((runs.status != 'ok').sum())} diverged)")
    parts += [f"{k} {', '.join(map(str, sorted(runs[k].unique())))}"
              for k in ("width", "depth", "n")]
    for k in ("loss", "optimizer", "param", "lr", "lr_scaling", "batch_size", "steps", "d",
              "dataset", "labels", "reduction", "dtype"):
        v = c[k]
        parts.append(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}")
    return "; ".join(parts) + "."


def _width_note(results: store.Results, label: str | None) -> list[str]:
    widths = results.runs.width[results.runs.status == "ok"]
    if not (len(widths) and widths.nunique() > 1 and widths.max() < 32 * widths.min()):
        return []
    of = f" of `{label}`" if label else ""
    return [f"Note: the widths{of} span {widths.max() / widths.min():g}x "
            f"({widths.min()} to {widths.max()}); THEORY.md section 5 asks for at "
            "least 32x before reading an exponent against the theory.", ""]


def _figures_text(results: list[store.Results], fit_options: dict, skipped: list[str],
                  several: bool) -> list[str]:
    """What the figures draw, as they draw it (figures.plot_fit and plot_curves)."""
    level = round(100 * fit_options["level"])
    du = any(du_theorem_runs(r.runs).any() for r in results)
    censoring = [q for q in QUANTITIES if q.censored and q.name not in skipped]
    lines = [
        "## What the figures show", "",
        f"Each figure is a PNG ({PNG_DPI} dpi, linked below) and a PDF of the same name "
        "beside it in `figures/` (vector, fonts embedded), sized for a paper: one panel is "
        "a column wide (3.3 in), several the text width (6.5 in); all text is 8 pt or "
        "larger.", "",
        "- Scaling figures (log-log): every non-diverged run with a value > 0 (small "
        "points, one per seed); the median over seeds at each value of x (open markers) "
        f"with its {level}% seed-bootstrap interval (error bars: {fit_options['n_boot']} "
        "resamples of the seeds with replacement, percentile interval of the resampled "
        f"medians, rng seed {fit_options['seed']}; `overparam.analysis.fits."
        "median_interval`); the fitted power law (line) and the confidence interval of "
        "its exponent as a band, drawn through the fit's centre (the geometric mean of the "
        "fitted x); the exponent and its interval in the legend below each panel.",
        "- Theory slopes (gray; dashed, dotted for the other end of an interval) are "
        "slopes only: THEORY.md section 5 predicts exponents, not prefactors, so each is "
        "drawn through the fit's centre, as its legend says.",
    ]
    if du:
        lines.append(
            "- Absolute bounds, for the runs in Du et al.'s setting (du, depth 1, squared "
            "loss, full-batch GD without momentum, output layer not trained; THEORY.md "
            "section 1): on the figure of `max_radius_rowmax` against the width, Du et "
            "al.'s R' = 4 sqrt(n) ||y - u(0)|| / (sqrt(m) lambda_0) (median over seeds; "
            "u(0) computed from each run's initial weights and training set, which the "
            "results do not record); on the loss curves, the medians over runs of loss(0) "
            "(1 - eta lambda_0 / 2)^t (Du et al.'s Theorem 4.1, dashed) and of loss(0) "
            "(1 - eta lambda_0)^(2t) (the kernel's slowest eigendirection, dotted). The "
            "theory gives no absolute bound for the other quantities: only slopes are "
            "drawn there.")
    else:
        lines.append(
            "- No absolute bound is drawn: the theory gives one (Du et al.'s R' and "
            "linear convergence, THEORY.md section 1) only for du networks of depth 1 "
            "trained by full-batch GD on the squared loss, and no run here is one.")
    if censoring:
        names = ", ".join(f"`{q.name}`" for q in censoring)
        lines.append(
            f"- Censored runs ({names}: never got there within the recorded steps) are "
            "open triangles at the top of the axes, values <= 0 or undefined open "
            "triangles at the bottom, each with its count beside; both are "
            "left out of the fits (`excluded`). Medians count censored runs as above "
            "every observed value (a median that is censored itself is not drawn); no "
            "width is left out of a figure. The counts are also in the table 'Censored and "
            "off-axis runs' when there are any.")
    lines.append(
        "- Training curves: the median over seeds (line) and the inter-quartile range "
        "(band) per width; the Gram change leaves out step 0 (zero up to round-off) "
        "and starts its y range at 10x that round-off or above; the sharpness has GD's "
        "stability limit 2/eta dashed.")
    lines.append(
        "- Generalization: each run's final test error against Arora et al.'s measure "
        "(linear axes from 0), coloured by task and marked by n, the least-squares line, "
        "and the line test error = measure (dashed).")
    if several:
        lines.append("- Sweeps share each figure, told apart by marker and line style, "
                     "named in the legend below the panels.")
    return lines + [""]


def write_report(path: Path, results: store.Results | Sequence[store.Results],
                 fits: pd.DataFrame, figures: dict[str, list[str]], *,
                 options: QuantityOptions, fit_options: dict, skipped: list[str],
                 rates: pd.DataFrame, censored: pd.DataFrame | None = None,
                 labels: Sequence[str] | None = None,
                 bound: pd.DataFrame | None = None,
                 directory: str | os.PathLike | None = None) -> None:
    """report.md: summary, fit table, definitions (of QUANTITIES but the `skipped` ones,
    with `options`), censored runs per width (`censored_counts`), rates
    (`rate_vs_theory`), the test error against Arora et al.'s measure (`bound`:
    `fits.bound_fit_table`), what the figures draw, the figures (links relative to path's
    folder). fit_options: the keyword arguments of `fit_table` (n_boot, level, ci, seed).
    Several sweeps: `results` a list, `labels` their labels (the tables' SWEEP column).
    directory: where the report says it was written (default: path's folder)."""
    written_to = Path(directory) if directory is not None else path.parent
    several = not isinstance(results, store.Results)
    runs_of = list(results) if several else [results]
    level = round(100 * fit_options["level"])
    command = "python -m overparam.analyze " + " ".join(
        f"--results={r.path}" for r in runs_of)
    if several:
        lines = ["# Comparison of sweeps " + ", ".join(f"`{lab}`" for lab in labels), "",
                 "Sweeps, with the labels of the tables' column `sweep` and of the "
                 "figures' legends:", ""]
        lines += [f"- `{lab}`: `{r.path}`. {_summary(r)}" for lab, r in zip(labels, runs_of)]
        lines += ["", f"Written by `{command}` into `{written_to}`. Each sweep is fitted "
                  "on its own; its groups are the settings that vary within it. Beside this "
                  "report: `fits.csv` (the table below with each group's settings, "
                  "prefactors and standard errors), `per_run.parquet` (the fitted values: "
                  "one row per sweep, run, quantity and layer), `figures/`.", ""]
    else:
        lines = [f"# Scaling analysis of `{results.path}`", "", _summary(results), "",
                 f"Written by `{command}` into `{written_to}`. Beside "
                 "this report: `fits.csv` (the table below with each group's settings, "
                 "prefactors and standard errors), `per_run.parquet` (the fitted values: one "
                 "row per run, quantity and layer), `figures/`.", ""]
    lines += ["## Power-law fits", "",
              "Each row fits log y = log C + exponent * log x by least squares over every "
              "non-diverged run of the group (all seeds), x being the swept variable (`vs`); "
              "a group is one combination of the other swept settings (and the layer). "
              f"{level}% confidence interval: bootstrap over seeds ({fit_options['n_boot']} "
              "resamples of the seed ids with replacement, all runs of each drawn seed, "
              f"refit; interval '{fit_options['ci']}', rng seed {fit_options['seed']}; see "
              "`overparam.analyze.power_law_fit`). `excluded`: values <= 0 or non-finite "
              + ("(censored runs among them: see below), " if censored is not None
                 and len(censored) else "")
              + "left out of the fit; `diverged`: runs left out. `predicted`: THEORY.md "
              "sections 5 and 6 (an interval for flip fractions): against the width with "
              "the width-stable step size (m^0 under mup), against the output scale for "
              "the centered model; `meets theory`: the interval meets it.", "",
              markdown_table(fits) if not fits.empty else format_table(fits), ""]
    for r, lab in zip(runs_of, labels if several else [None]):
        lines += _width_note(r, lab)
    lines += ["## Definitions", ""]
    lines += [f"- `{q.name}`: {q.text('definition', options)}" for q in QUANTITIES
              if q.name not in skipped]
    if skipped:
        lines += ["", "Not in these results (columns absent, or no finite value): "
                  + ", ".join(f"`{s}`" for s in skipped) + "."]
    if censored is not None and len(censored):
        lines += ["", "## Censored and off-axis runs", "",
                  "Non-diverged runs left out of the fits, per width: `censored`, runs that "
                  "never got there within the recorded steps ("
                  + "; ".join(f"`{q.name}`: {q.censored}" for q in QUANTITIES
                              if q.censored and q.name not in skipped)
                  + "); `off_axis`, values <= 0 or undefined. `runs`: the non-diverged runs "
                  "of the row."
                  + (" The scaling figures draw them as triangles with these counts."
                     if any(figures.values()) else ""), "",
                  _markdown(censored.astype(object).where(censored.notna(), "-"))]
    if not rates.empty:
        lines += ["", "## Linear convergence against the kernel", "",
                  "Median over seeds of the fitted rate -d ln(loss)/dt and of "
                  "-2 ln(1 - eta lambda_0), lambda_0 = lambda_min(H^inf) of each run's "
                  "training set: the rate of the slowest eigendirection (THEORY.md section "
                  "1). A ratio >= 1 converges at least as fast as that.", "",
                  _markdown(rates)]
    if bound is not None and len(bound):
        lines += ["", "## Generalization: test error against the kernel's complexity measure",
                  "", "Each run's final test error (+-1 labels) against sqrt(2 y^T (H^inf)^-1 "
                  "y / n) of its training set (runs.arora_bound), across the training set "
                  "sizes and digits tasks of each group: Arora, Du, Hu, Li & Wang 2019 bound "
                  "the population loss of Du's two-layer network by it, up to a term "
                  "O(sqrt(log(n / (lambda_0 delta)) / n)) (THEORY.md section 8; for other "
                  "parameterizations and depths the same expression with their analytic "
                  "kernel). `slope`: least squares of the test error on the measure, with a "
                  f"{level}% seed-bootstrap t interval; `spearman`: rank correlation; "
                  "`below_bound`: the fraction of runs whose test error is at most the "
                  "measure; `n_excluded`: runs without a finite test error or measure "
                  "(written to generalization.csv).", "",
                  _markdown(bound.drop(columns=["level", "n_boot"]).astype(object).where(
                      bound.drop(columns=["level", "n_boot"]).notna(), "-"))]
    if any(figures.values()):
        lines += [""] + _figures_text(runs_of, fit_options, skipped, several)
    for title, names in figures.items():
        if names:
            lines += ["", f"## {title}", ""]
            lines += [f"![{Path(n).stem}]({n}) ([PDF]({Path(n).with_suffix('.pdf')}))\n"
                      for n in names]
    text = "\n".join(lines).rstrip() + "\n"
    store.atomic_write(path, lambda tmp: tmp.write_text(text))


# ----------------------------------------------------------------------------- analyze

def _safe(label: str) -> str:
    return re.sub(r"[^\w.-]+", "-", label).strip("-.") or "sweep"


def output_dir(paths: Sequence[str | os.PathLike], labels: Sequence[str] | None = None,
               out: str | os.PathLike | None = None) -> Path:
    """Where `analyze` writes: `out` if given; else PATH/analysis for one sweep, and for
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


def analyze(path: str | os.PathLike | Sequence[str | os.PathLike], *,
            out: str | os.PathLike | None = None, loss_threshold: float = 1e-3,
            tail_fraction: float = 0.5, rate_floor: float = 1e-10,
            eos_fraction: float = 0.95, n_boot: int = 1000, level: float = 0.95, ci: str = "t",
            seed: int = 0, plots: bool = True) -> pd.DataFrame:
    """Analyzes the sweep in `path` and writes into `out` (default path/analysis):
    report.md, fits.csv, per_run.parquet and figures/*.png and *.pdf (unless plots=False).
    Returns the fit table (`fit_table`), with attrs['out'] the directory written.
    Arguments: `per_run_quantities` and `power_law_fit`.

    `path` a list of several sweeps: each fitted on its own, the tables with a first column
    SWEEP (`quantities.sweep_labels`), the figures shared, written into `output_dir` (by
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
        raise ValueError("analyze: no results directory given")
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
