"""The generalization figure: each run's final test error against Arora et al.'s
complexity measure, one panel per group of `fits.bound_fit_table` (`plot_bound`).

Style and layout: `style`. Returns a matplotlib Figure (no pyplot); writes no file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from overparam.analysis.fits import BOUND_QUANTITY
from overparam.analysis.groups import SWEPT_COLUMNS, group_label, varying_within
from overparam.analysis.style import (
    BOUND_COLOR,
    FONT_PT,
    MARKERS,
    MAX_PANELS,
    PALETTE,
    constant_label,
    count_legend_lines,
    figure_legend,
    minus,
    new_figure,
    panel_title,
    panels_of,
    paper_rc,
    set_height,
    suptitle,
    wrap_title,
    wrap_ylabel,
)


def plot_bound(per_run: pd.DataFrame, bound_fits: pd.DataFrame):
    """matplotlib Figure of each run's final test error against Arora et al.'s measure
    sqrt(2 y^T (H^inf)^-1 y / n) (linear axes from 0; the test error's own range), one
    panel per group of
    `fits.bound_fit_table`: the runs (colour: the digits task, marker: n), the fitted line
    with its slope's interval, and the line test error = measure (dashed), below which
    Arora et al.'s theorem puts every run up to a lower-order term (THEORY.md section 8).
    per_run: `per_run_quantities`; bound_fits: `fits.bound_fit_table`."""
    with paper_rc():
        return _plot_bound(per_run, bound_fits)


def _plot_bound(per_run: pd.DataFrame, bound_fits: pd.DataFrame):
    from matplotlib.lines import Line2D

    rows = per_run[(per_run.quantity == BOUND_QUANTITY) & (per_run.status == "ok")]
    rows = rows[np.isfinite(rows.value.astype(float)) & np.isfinite(rows.arora_bound)]
    keys = [s for s in SWEPT_COLUMNS if s not in ("n", "digits_task")]
    shown = varying_within(rows, keys)
    panels = panels_of(rows, shown)
    tasks = sorted(rows.digits_task.unique(), key=str)
    colors = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(tasks)}
    sizes = sorted(rows.n.unique())
    markers = {n: MARKERS[i % len(MARKERS)] for i, n in enumerate(sizes)}
    n_shown = min(len(panels), MAX_PANELS)
    fig, axes = new_figure(n_shown)
    for ax, (key, g) in zip(axes, panels):
        for (task, n), pts in g.groupby(["digits_task", "n"], sort=True):
            ax.scatter(pts.arora_bound, pts.value, s=12, color=colors[task],
                       marker=markers[n], alpha=0.75, lw=0)
        right = 1.05 * max(float(g.arora_bound.max()), 1e-12)
        top = 1.15 * max(float(g.value.max()), 1e-3)
        ax.plot([0, right], [0, right], color=BOUND_COLOR, ls="--", lw=1.0)
        fit = bound_fits[_matching(bound_fits, key)]
        title = panel_title(group_label(key, shown) if shown else "", n_shown)
        if len(fit) and np.isfinite(fit.slope.iloc[0]):
            f = fit.iloc[0]
            xs = np.array([g.arora_bound.min(), g.arora_bound.max()])
            ax.plot(xs, f.intercept + f.slope * xs, color="0.2", lw=1.3)
            ci = (f" [{f.slope_low:.2g}, {f.slope_high:.2g}]"
                  if np.isfinite(f.slope_low) else "")
            title += ("\n" if title else "") + minus(
                f"slope {f.slope:.3g}{ci}\nrank corr. {f.spearman:.2f}\n"
                f"{100 * f.below_bound:.0f}% \N{LESS-THAN OR EQUAL TO} measure")
        ax.set_title(title, fontsize=FONT_PT)
        ax.set_xlim(0, right)
        ax.set_ylim(0, top)
        ax.set_xlabel(r"$\sqrt{2\,y^\top (H^\infty)^{-1} y\,/\,n}$")
        ax.set_ylabel(wrap_ylabel("final test error", n_shown))
        ax.grid(True, which="major", alpha=0.25, lw=0.5)
    entries = [(Line2D([], [], color=colors[t], marker="o", ls="", ms=4),
                f"task {t}" if t else "synthetic labels") for t in tasks]
    entries += [(Line2D([], [], color="0.3", marker=markers[n], ls="", ms=4), f"n = {n}")
                for n in sizes]
    entries += [(Line2D([], [], color="0.2", lw=1.3), "least-squares line (title: its slope,\n"
                 "seed-bootstrap interval; Spearman's\nrank correlation)"),
                (Line2D([], [], color=BOUND_COLOR, ls="--", lw=1.0),
                 "test error = measure: Arora et al.'s\nbound, lower-order term aside")]
    lines = wrap_title(fig, "Test error against Arora et al.'s complexity measure",
                         constant_label(rows, ["n", "digits_task"]), len(panels))
    ncols = figure_legend(fig, [h for h, _ in entries], [lab for _, lab in entries])
    suptitle(fig, lines)
    set_height(fig, n_shown, panel_lines=0,
                legend_lines=count_legend_lines([lab for _, lab in entries], ncols),
                title_lines=len(lines))
    return fig


def _matching(frame: pd.DataFrame, key: dict) -> np.ndarray:
    """The rows of `frame` with the settings `key` (a missing value matches a missing one)."""
    mask = np.ones(len(frame), bool)
    for k, v in key.items():
        mask &= (frame[k].isna() if pd.isna(v) else frame[k] == v).to_numpy(bool)
    return mask

