"""The training curves: a column of the steps or layers table against the step, the
median over seeds and the inter-quartile range per width (`plot_curves`).

Owns CURVES, the columns drawn as curves (with their titles and axis labels), and what a
curves panel draws besides the runs: GD's stability limit 2/eta on the sharpness, and
the loss bounds of `bounds.loss_bounds` for the runs in Du et al.'s setting. Style and
layout: `style`. Returns matplotlib Figures (no pyplot); writes no file.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from overparam import store
from overparam.analysis.bounds import loss_bounds
from overparam.analysis.groups import SWEEP, SWEPT_COLUMNS, group_label, varying_within
from overparam.analysis.per_run import run_settings
from overparam.analysis.style import (
    BOUND_COLOR,
    FONT_PT,
    MAX_PANELS,
    Style,
    constant_label,
    count_legend_lines,
    figure_legend,
    log_limits,
    log_y_ticks,
    new_figure,
    panel_title,
    panels_of,
    paper_rc,
    rows_of,
    set_height,
    styles_of,
    suptitle,
    width_colors,
    wrap_title,
    wrap_ylabel,
)
from overparam.analysis.variables import X_VARIABLE_BY_NAME

CURVES = {  # column -> (table, title, axis label)
    "loss": ("steps", "Training loss", "training loss"),
    "radius_rowmax": ("layers", "Largest movement of one neuron",
                      r"$\max_r\,\|w_r(t)-w_r(0)\|_2$"),
    "radius_spectral": ("layers", "Spectral norm of the weight change",
                        r"$\|W_l(t)-W_l(0)\|_2$"),
    "flip_frac": ("layers", "Flipped ReLU patterns", "fraction of patterns flipped"),
    "gram_change": ("steps", "Change of the NTK Gram matrix", r"$\|H(t)-H(0)\|_2$"),
    "sharpness": ("steps", "Sharpness against the stability limit 2/eta",
                  r"sharpness $\lambda_{\max}(\nabla^2 L)$"),
    "test_error": ("steps", "Test error", "test error (held-out points)"),
    "lin_distance": ("steps", "Distance to the linearized twin",
                     r"$\|g(t)-g_{\mathrm{lin}}(t)\|_2$"),
    "inf_distance": ("steps", "Distance to the infinite-width trajectory",
                     r"$\|u(t)-u_\infty(t)\|_2$"),
    "kernel_alignment": ("steps", "Kernel-target alignment", r"$A(t)$"),
    "feature_change_rms": ("layers", "Feature movement (RMS of the change)",
                           r"RMS of $h_l(t)-h_l(0)$"),
}
LINEAR_CURVES = {"test_error", "kernel_alignment"}  # fractions that reach 0: a linear y axis from 0


def as_sweeps(results) -> dict:
    """{label: Results}; one Results is {None: it}."""
    return dict(results) if isinstance(results, Mapping) else {None: results}


def plot_curves(results: store.Results | Mapping[str, store.Results], column: str, *,
                x: str = "width"):
    """matplotlib Figure of `column` (of steps or layers, see CURVES) against the step, log
    y (linear from 0 for LINEAR_CURVES): for each value of `x` (colours) the median over
    seeds (line) and the inter-quartile range (band); one panel per group of the other
    settings that vary within a sweep (and layer). `results`: one sweep, or {label: Results}
    for several, overlaid in line styles.

    Diverged runs and values <= 0 (step 0 of a radius) are left out. Gram change: the
    first recorded step (step 0, where ||H(0) - H(0)|| is 0 up to round-off) is left out,
    and the y range starts no lower than 10 times the largest such round-off. Loss, for the
    runs in Du et al.'s setting (`bounds.du_theorem_runs`): the medians over the
    panel's runs of the bounds of `bounds.loss_bounds` (black; dashed: Du et al.'s
    Theorem 4.1, dotted: the kernel's slowest eigendirection). The y range is the data's."""
    with paper_rc():
        return _plot_curves(as_sweeps(results), column, x)


def _curve_frame(results: store.Results, column: str, table: str) -> tuple[pd.DataFrame,
                                                                             pd.DataFrame]:
    settings = run_settings(results.runs)
    settings = settings[settings.status == "ok"]
    frame = getattr(results, table)
    frame = frame[["run_id", "step", column] + (["layer"] if table == "layers" else [])]
    frame = frame[np.isfinite(frame[column])].rename(columns={column: "_y"})
    frame = frame.merge(settings, on="run_id")  # (the steps column 'loss' is a setting too)
    return frame, settings


def _plot_curves(sweeps: dict, column: str, x: str):
    table, title, label = CURVES[column]
    symbol = X_VARIABLE_BY_NAME[x].symbol
    frames, settings = [], []
    for name, r in sweeps.items():
        f, s = _curve_frame(r, column, table)
        if column == "loss":
            b = loss_bounds(r)
            f = f.merge(b, on=["run_id", "step"], how="left")
        if name is not None:
            f, s = f.assign(**{SWEEP: name}), s.assign(**{SWEEP: name})
        frames.append(f)
        settings.append(s)
    frame, settings = pd.concat(frames, ignore_index=True), pd.concat(settings)
    roundoff = None
    if column == "gram_change":  # step 0: H(0) - H(0), zero up to round-off
        first = frame.step == frame.groupby([c for c in ("run_id", SWEEP) if c in frame],
                                            dropna=False).step.transform("min")
        roundoff = float(frame._y[first].abs().max()) if first.any() else None
        frame = frame[~first]
    shown = [k for k in varying_within(settings, SWEPT_COLUMNS) if k != x]
    if table == "layers" and frame.layer.nunique() > 1:
        shown.append("layer")
    panels = panels_of(frame, shown)
    styles = styles_of(settings, [pd.NA])
    colors = width_colors(frame[x].unique())
    bounded = column == "loss" and frame.du_bound.notna().any()
    n_shown = min(len(panels), MAX_PANELS)
    fig, axes = new_figure(n_shown)
    for ax, (key, grp) in zip(axes, panels):
        ys = []
        for st in styles:
            g = rows_of(grp, st)
            for v in sorted(colors):
                ys += _plot_band(ax, g[g[x] == v], colors[v], st.linestyle,
                                 positive=column not in LINEAR_CURVES)
        if column in LINEAR_CURVES:
            ax.set_ylim(0, 1.05 * max(ys + [1e-3]))
        else:
            lo, hi = log_limits(ys)
            if roundoff is not None and roundoff > 0:
                lo = max(lo, 10 * roundoff)
            ax.set_yscale("log")
            ax.set_ylim(lo, hi)
        if column == "sharpness":
            ys += _plot_stability_limits(ax, grp, x, colors)
            lo, hi = log_limits(ys)
            ax.set_ylim(lo, hi)
        if bounded:
            for st in styles:
                _plot_loss_bounds(ax, rows_of(grp, st), st, len(styles) > 1)
        ax.set_xlabel("step t")
        ax.set_ylabel(wrap_ylabel(label, n_shown))
        ax.set_title(panel_title(group_label(key, shown) if shown else "", n_shown),
                     fontsize=FONT_PT)
        ax.grid(True, which="major", alpha=0.25, lw=0.5)
        if column not in LINEAR_CURVES:
            log_y_ticks(ax)
    subtitle = constant_label(settings, [x])
    if roundoff is not None:
        subtitle += f"; step 0 not drawn (0 up to round-off, at most {roundoff:.1e})"
    lines = wrap_title(fig, f"{title} during training, per {x}", subtitle, len(panels))
    handles, labels = _curve_legend(frame, colors, symbol, x, styles, bounded,
                                    limits=column == "sharpness")
    ncols = figure_legend(fig, handles, labels, wide_cols=3)
    suptitle(fig, lines)
    set_height(fig, n_shown, panel_lines=0, legend_lines=count_legend_lines(labels, ncols),
                title_lines=len(lines))
    return fig


def _curve_legend(frame, colors, symbol, x, styles, bounded, limits=False):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if len(styles) > 1:  # seeds per sweep: in the title
        entries = [(Line2D([], [], color=c, lw=1.4), f"{symbol} = {v:g}")
                   for v, c in colors.items()]
    else:
        seeds = frame.groupby(x).seed.nunique()
        entries = [(Line2D([], [], color=c, lw=1.4),
                    f"{symbol} = {v:g} ({seeds.get(v, 0)} seeds)") for v, c in colors.items()]
    entries.append(((Patch(color="0.3", alpha=0.2, lw=0), Line2D([], [], color="0.3")),
                    "median over seeds,\ninter-quartile range"))
    if len(styles) > 1:
        entries += [(Line2D([], [], color="0.2", ls=s.linestyle, marker=s.marker, ms=3.5,
                            markevery=[1]), s.name) for s in styles]
    if limits:
        entries.append((Line2D([], [], color="0.3", ls="--", lw=0.9),
                        "2/$\\eta$: GD's stability limit\n(in each line's colour)"))
    if bounded:
        entries += [
            (Line2D([], [], color=BOUND_COLOR, ls="--", lw=1.0),
             "Du et al. Thm 4.1 bound\n$L(0)\\,(1-\\eta\\lambda_0/2)^t$"),
            (Line2D([], [], color=BOUND_COLOR, ls=":", lw=1.2),
             "kernel, slowest mode\n$L(0)\\,(1-\\eta\\lambda_0)^{2t}$"),
        ]
    return [h for h, _ in entries], [label for _, label in entries]


def _plot_band(ax, g: pd.DataFrame, color, linestyle, positive: bool = True) -> list[float]:
    """Median line and inter-quartile band of `g` over its runs (positive: only where they
    are > 0, for a log axis); returns the values drawn."""
    wide = g.pivot_table(index="step", columns="run_id", values="_y", dropna=False)
    if wide.empty:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # steps with no finite value
        q25, q50, q75 = np.nanquantile(wide.to_numpy(), [0.25, 0.5, 0.75], axis=1)
    pos = q50 > 0 if positive else np.isfinite(q50)
    ax.plot(wide.index[pos], q50[pos], color=color, lw=1.3, ls=linestyle,
            label=f"_{wide.shape[1]} seeds")
    band = pos & (q25 > 0) if positive else pos & np.isfinite(q25)
    ax.fill_between(wide.index[band], q25[band], q75[band], color=color, alpha=0.18, lw=0)
    return list(q50[pos]) + list(q25[band]) + list(q75[band])


def _plot_stability_limits(ax, g: pd.DataFrame, x: str, colors: dict) -> list[float]:
    """Dashed lines at 2 / eta, gradient descent's stability limit on a quadratic, one per
    value of `x` in its colour (eta: the median step size of its runs in the panel; the
    same for every width unless lr_scaling scales it); returns the levels drawn."""
    levels = []
    for v, color in colors.items():
        eta = g.lr[g[x] == v].median()
        if np.isfinite(eta) and eta > 0:
            ax.axhline(2.0 / eta, color=color, ls="--", lw=0.9, label="_2/eta")
            levels.append(2.0 / eta)
    return levels


def _plot_loss_bounds(ax, g: pd.DataFrame, style: Style, several: bool) -> None:
    """The medians over the runs of `g` of the loss bounds at each step (black)."""
    b = g.dropna(subset=["du_bound"])
    if b.empty:
        return
    med = b.groupby("step")[["du_bound", "kernel"]].median()
    extra = dict(marker=style.marker, ms=3, markevery=0.2) if several else {}
    ax.plot(med.index, med.du_bound, color=BOUND_COLOR, ls="--", lw=1.0, label="_du_bound",
            **extra)
    ax.plot(med.index, med.kernel, color=BOUND_COLOR, ls=":", lw=1.2, label="_kernel",
            **extra)

