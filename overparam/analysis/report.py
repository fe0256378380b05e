"""report.md: the prose of the analysis, with its tables and figures (`write_report`).

Owns the text of report.md: the summary of each sweep, the fit table's explanation, the
quantities' definitions (read from QUANTITIES), the censored runs, the convergence rates
against the kernel's, the test error against Arora et al.'s measure, what the figures draw
(with their sizes and fonts read from `style`, where they are defined) and the figures'
links. Computes no quantity, fit or figure itself: it is given them (`pipeline`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from overparam import store
from overparam.analysis.bounds import du_theorem_runs
from overparam.analysis.quantities import QUANTITIES, QuantityOptions
from overparam.analysis.style import COLUMN_WIDTH_IN, FONT_PT, PAGE_WIDTH_IN, PNG_DPI
from overparam.analysis.tables import format_table, markdown_frame, markdown_table


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
    """What the figures draw, as they draw it (scaling.plot_fit and curves.plot_curves)."""
    level = round(100 * fit_options["level"])
    du = any(du_theorem_runs(r.runs).any() for r in results)
    censoring = [q for q in QUANTITIES if q.censored and q.name not in skipped]
    lines = [
        "## What the figures show", "",
        f"Each figure is a PNG ({PNG_DPI} dpi, linked below) and a PDF of the same name "
        "beside it in `figures/` (vector, fonts embedded), sized for a paper: one panel is "
        f"a column wide ({COLUMN_WIDTH_IN:g} in), several the text width ({PAGE_WIDTH_IN:g} "
        f"in); all text is {FONT_PT:g} pt or larger.", "",
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
                  markdown_frame(censored.astype(object).where(censored.notna(), "-"))]
    if not rates.empty:
        lines += ["", "## Linear convergence against the kernel", "",
                  "Median over seeds of the fitted rate -d ln(loss)/dt and of "
                  "-2 ln(1 - eta lambda_0), lambda_0 = lambda_min(H^inf) of each run's "
                  "training set: the rate of the slowest eigendirection (THEORY.md section "
                  "1). A ratio >= 1 converges at least as fast as that.", "",
                  markdown_frame(rates)]
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
                  markdown_frame(bound.drop(columns=["level", "n_boot"]).astype(object).where(
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
