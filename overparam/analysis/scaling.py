"""The scaling figures: each fitted quantity against a swept variable, log-log, one panel
per group (`plot_fit`).

Owns what a scaling panel draws for each sweep x layer (`_Series`: the runs, the per-x
medians with their seed-bootstrap intervals, the fit with the interval of its exponent as
a band, the theory's slopes, Du et al.'s absolute bound, the censored and off-axis runs as
counted triangles) and the figure legend that says so. Titles, axis labels and theory
slopes come from the registries (`quantities`, `variables`) and the fit table (`fits`);
the medians are `fits.median_interval`; the bounds are `bounds.radius_bounds`. Style and
layout: `style`. Returns matplotlib Figures (no pyplot); writes no file.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd

from overparam.analysis.fits import format_prediction, median_interval
from overparam.analysis.groups import SWEEP, SWEPT_COLUMNS, group_label, varying_within
from overparam.analysis.per_run import value_kind
from overparam.analysis.quantities import QUANTITY_BY_NAME, QuantityOptions
from overparam.analysis.style import (
    BOUND_COLOR,
    FONT_PT,
    MAX_PANELS,
    THEORY_COLOR,
    Style,
    constant_label,
    count_legend_lines,
    figure_legend,
    log_limits,
    log_x_ticks,
    log_y_ticks,
    minus,
    new_figure,
    panel_title,
    panels_of,
    paper_rc,
    power_text,
    rows_of,
    set_height,
    shifted,
    styles_of,
    suptitle,
    wrap_title,
    wrap_ylabel,
)
from overparam.analysis.variables import X_VARIABLE_BY_NAME


def plot_fit(per_run: pd.DataFrame, fits: pd.DataFrame, quantity: str, x: str = "width", *,
             options: QuantityOptions | None = None, bounds: pd.DataFrame | None = None,
             n_boot: int = 1000, seed: int = 0):
    """matplotlib Figure of `quantity` against `x` on log-log axes, one panel per group of
    the other settings that vary within a sweep. In each panel, for each layer (colours)
    and sweep (markers and line styles; several when per_run and fits have a SWEEP
    column):

      - every run (small points, one per seed);
      - the median over seeds at each x, with its seed-bootstrap interval at the fits'
        level (`median_interval`, n_boot resamples from `seed`; error bars);
      - the fitted power law, and the confidence interval of its exponent as a band: the
        lines through the fit's centre (the geometric mean of the fitted x, where the
        least-squares line passes through the mean of log y) with the interval's slopes;
      - the theory's slope where it predicts one (gray; dashed, dotted for the other end of
        an interval): a slope only, drawn through the fit's centre, as its label says;
      - `bounds` (`bounds.radius_bounds`: run_id [and SWEEP], quantity, layer, bound):
        the median over seeds of the theory's absolute bound at each x (black, dash-dot);
      - runs whose value is censored (never got there within the recorded steps) as open
        triangles at the top of the axes, and values <= 0 or undefined as open triangles
        at the bottom, each with its count beside; both are left out of the fits and
        medians count censored ones as above every observed value.

    Diverged runs are counted in the panel's title. per_run: `per_run_quantities`, with
    `options` (None: the defaults) filling in the axis label; fits: `fit_table`."""
    with paper_rc():
        return _plot_fit(per_run, fits, quantity, x, options or QuantityOptions(), bounds,
                         n_boot, seed)


def _plot_fit(per_run, fits, quantity, x, options, bounds, n_boot, seed):
    q, xv = QUANTITY_BY_NAME[quantity], X_VARIABLE_BY_NAME[x]
    sub = per_run[per_run.quantity == quantity]
    sub = sub.assign(_kind=value_kind(sub))
    fq = fits[(fits.quantity == quantity) & (fits.x == x)]
    level = float(fq.level.iloc[0]) if len(fq) else 0.95
    shown = [k for k in varying_within(sub, SWEPT_COLUMNS) if k != x]
    panels = panels_of(sub, shown)
    layers = sorted(sub.layer.dropna().unique()) or [pd.NA]
    styles = styles_of(sub, layers)
    if bounds is not None and len(bounds):
        bounds = bounds[bounds.quantity == quantity]
    n_shown = min(len(panels), MAX_PANELS)
    fig, axes = new_figure(n_shown)
    panel_lines = 0
    seen: dict[str, object] = {}  # figure legend: label -> handle, in order
    kinds_seen = set()
    for ax, (key, grp) in zip(axes, panels):
        notes, drawn, fit_handles = [], [], []
        present = [s for s in styles if len(rows_of(grp, s))]  # e.g. no layer 3 at depth 2
        for j, style in enumerate(present):
            g = rows_of(grp, style)
            fit = _match(rows_of(fq, style._replace(layer=pd.NA)), key, style.layer)
            shift = 6.0 * (j - (len(present) - 1) / 2)  # points: series side by side
            panel = _Series(ax, g, fit, xv, style, level, n_boot, seed,
                            _bounds_of(bounds, g, style), shift)
            notes.append(panel.note(style))
            drawn.append(panel)
            if panel.fit_line is not None:
                fit_handles.append(panel.fit_line)
        notes = [n for n in dict.fromkeys(notes) if n]
        ax.set_title(panel_title(group_label(key, shown) if shown else "", n_shown)
                     + (f"\n({'; '.join(notes)})" if notes else ""), fontsize=FONT_PT)
        if not any(p.has_points for p in drawn):  # all diverged, censored, or <= 0
            ax.set_xticks([])
            ax.set_yticks([])
            counts = pd.Series([k for p in drawn for k in p.rows._kind]).value_counts()
            why = "; ".join(f"{counts[k]} {_KIND_TEXT[k](q)}" for k in _KIND_TEXT
                            if k in counts)
            ax.text(0.5, 0.5, "\n".join(textwrap.wrap("no finite value > 0"
                                                      + (f": {why}" if why else ""), 28)),
                    ha="center", va="center", transform=ax.transAxes, color="0.3",
                    fontsize=FONT_PT)
            continue
        kinds_seen |= {"points"} | {k for p in drawn for k in p.rows._kind}
        kinds_seen |= {"fit"} if fit_handles else set()
        ax.set_xscale("log")
        ax.set_yscale("log")
        log_x_ticks(ax, grp[x].dropna())
        lo, hi = log_limits([v for p in drawn for v in p.yvalues])
        above = any(p.censored_counts("censored") for p in drawn)
        below = any(p.censored_counts("off_axis") for p in drawn)
        span = math.log10(hi / lo)
        ax.set_ylim(lo / 10 ** (0.14 * span * below), hi * 10 ** (0.14 * span * above))
        for j, panel in enumerate(drawn):
            if panel.finish(j):
                kinds_seen.add("medians")
        log_y_ticks(ax)
        ax.set_xlabel(xv.axis)
        ax.set_ylabel(wrap_ylabel(q.text("label", options), n_shown))
        ax.grid(True, which="major", alpha=0.25, lw=0.5)
        for h in ax.get_lines():
            label = h.get_label()
            if label.startswith(("theory", "Du et al.")):
                seen.setdefault(label, h)
        if fit_handles:  # below the axes, clear of the tick labels and the axis label
            ax.legend(handles=fit_handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      borderaxespad=4.2, fontsize=FONT_PT, handlelength=1.8)
            panel_lines = max(panel_lines, count_legend_lines(
                [h.get_label() for h in fit_handles], 1))
    handles, labels = _fit_legend(styles, level, xv.symbol, q, kinds_seen, seen)
    lines = wrap_title(fig, f"{q.title} against {xv.title}", constant_label(sub, [x]),
                         len(panels))
    ncols = figure_legend(fig, handles, labels)
    suptitle(fig, lines)
    set_height(fig, n_shown, panel_lines=panel_lines,
                legend_lines=count_legend_lines(labels, ncols), title_lines=len(lines))
    return fig


_KIND_TEXT = {  # kind -> what the legend and notes call it (q: the Quantity)
    "censored": lambda q: q.censored or "censored",
    "off_axis": lambda q: "\N{LESS-THAN OR EQUAL TO} 0 or undefined",
}


def _bounds_of(bounds, g: pd.DataFrame, style: Style) -> pd.DataFrame | None:
    """The bounds of the runs of `g` (non-diverged), with their x values."""
    if bounds is None or not len(bounds):
        return None
    on = ["run_id"] + ([SWEEP] if SWEEP in bounds and SWEEP in g else [])
    rows = g[g.status == "ok"][on + list(dict.fromkeys(["width", *SWEPT_COLUMNS]))]
    b = bounds
    if style.layer is not pd.NA:
        b = b[b.layer == style.layer]
    out = rows.merge(b[on + ["bound"]], on=on)
    return out if len(out) else None


class _Series:
    """One sweep x layer in one scaling panel: draws points, fit, band, theory and bounds
    at once; medians and censored markers once the axes' limits are set (`finish`)."""

    def __init__(self, ax, g, fit, xv, style: Style, level, n_boot, seed, bounds,
                 shift: float = 0.0):
        self.ax, self.rows, self.fit, self.style, self.x = ax, g, fit, style, xv.name
        self.fit_line, self.shift = None, shift
        x = xv.name
        ok = g[g._kind == "fitted"]
        self.has_points = len(ok) > 0
        self.yvalues = list(ok.value)
        # The runs 4 points left of their median, so that its error bar does not hide them.
        ax.scatter(ok[x], ok.value, s=10, alpha=0.6, color=style.color, lw=0,
                   marker=style.marker, label="_runs", transform=shifted(ax, shift - 4),
                   zorder=2.5)
        # Medians over seeds: censored values above every observed one, undefined ones out.
        values = g.value.where(g._kind != "censored", np.inf).where(g.status == "ok")
        self.medians = []
        for xval, v in values.groupby(g[x], sort=True):
            med, lo, hi = median_interval(v.to_numpy(float), n_boot=n_boot, level=level,
                                          seed=seed)
            self.medians.append((xval, med, lo, hi))
            self.yvalues += [med, lo, hi]
        if fit is not None and np.isfinite(fit.exponent) and self.has_points:
            self._fit(ok, xv.symbol, level)
        if bounds is not None:
            med = bounds.groupby(x).bound.median()
            self.yvalues += list(med.values)
            ax.plot(med.index, med.values, color=BOUND_COLOR, ls="-.", lw=1.0,
                    marker=style.marker, ms=3, mfc=BOUND_COLOR,
                    label="Du et al. bound $R'=4\\sqrt{n}\\,\\|y-u(0)\\|/(\\sqrt{m}\\,"
                          "\\lambda_0)$,\nmedian over seeds (absolute; THEORY.md section 1)")

    def _fit(self, ok, symbol, level):
        ax, fit, st = self.ax, self.fit, self.style
        xs = np.geomspace(ok[self.x].min(), ok[self.x].max(), 50)
        x0 = math.exp(np.log(ok[self.x].to_numpy(float)).mean())  # the fit's centre
        y0 = fit.prefactor * x0 ** fit.exponent
        ys = fit.prefactor * xs ** fit.exponent
        prefix = f"{st.short}: " if st.short else ""
        ci = (minus(f"\n{100 * level:.0f}% CI [{fit.ci_low:.3f}, {fit.ci_high:.3f}]")
              if np.isfinite(fit.ci_low) else "")
        (self.fit_line,) = ax.plot(xs, ys, color=st.color, ls=st.linestyle, lw=1.4,
                                   label=f"{prefix}fit " + r"$\propto$ "
                                   + power_text(symbol, fit.exponent) + ci)
        self.yvalues += [ys[0], ys[-1]]
        if np.isfinite(fit.ci_low):
            band = np.stack([y0 * (xs / x0) ** fit.ci_low, y0 * (xs / x0) ** fit.ci_high])
            ax.fill_between(xs, band.min(0), band.max(0), color=st.color, alpha=0.15, lw=0,
                            label="_band")
        if np.isfinite(fit.predicted_low):
            slopes = [fit.predicted_low] + ([fit.predicted_high]
                                            if fit.predicted_high != fit.predicted_low else [])
            for p, style in zip(slopes, ("--", ":")):
                text = minus(format_prediction(p, p))
                ys = y0 * (xs / x0) ** p
                ax.plot(xs, ys, style, color=THEORY_COLOR, lw=1,
                        label=rf"theory: slope ${symbol}^{{{text}}}$ only, drawn"
                              f"\nthrough the fit at {symbol} = {x0:.3g}")
                self.yvalues += [ys[0], ys[-1]]

    def note(self, style: Style) -> str:
        """The title's note of the runs left out: diverged ones (the fit's count)."""
        if self.fit is None or not self.fit.n_diverged:
            return ""
        return (f"{style.short}: " if style.short else "") + f"{self.fit.n_diverged} diverged"

    def censored_counts(self, kind: str) -> dict:
        """{x: runs of `kind`} at each x with any."""
        g = self.rows
        return g[g._kind == kind].groupby(self.x).size().to_dict()

    def finish(self, j: int) -> bool:
        """Error bars of the medians (clipped to the axes) and the censored markers, the
        j-th series of the panel stacked j steps in from the edge. Returns whether any
        median was drawn."""
        import matplotlib.transforms as mtransforms

        ax, st = self.ax, self.style
        bottom, top = ax.get_ylim()
        pts = []
        for xval, m, lo, hi in self.medians:
            if not (np.isfinite(m) and m > 0):  # censored or <= 0: the triangles show it
                continue
            lo = m if np.isnan(lo) else min(max(lo, bottom), m)  # <= 0: to the bottom
            hi = m if np.isnan(hi) else max(min(hi, top), m)     # +inf: to the top
            pts.append((xval, m, lo, hi))
        if pts:
            xs, ms, los, his = map(np.asarray, zip(*pts))
            ax.errorbar(xs, ms, yerr=[ms - los, his - ms], fmt=st.marker, ms=4.5,
                        mfc="white", mec=st.color, mew=1.2, ecolor=st.color, elinewidth=1.0,
                        capsize=2, label="_medians", zorder=3,
                        transform=shifted(ax, self.shift))
        blend = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
        for kind, y0, dy, marker in (("censored", 0.955, -0.075, "^"),
                                     ("off_axis", 0.045, 0.075, "v")):
            for xval, count in self.censored_counts(kind).items():
                y = y0 + dy * j
                ax.plot([xval], [y], marker=marker, ls="", ms=5, mfc="none", mec=st.color,
                        mew=1.1, transform=blend, clip_on=False, label=f"_{kind}")
                ax.annotate(str(count), (xval, y), xycoords=blend, xytext=(4.5, 0),
                            textcoords="offset points", fontsize=FONT_PT, va="center",
                            color=st.color)
        return bool(pts)


def _fit_legend(styles: list[Style], level: float, symbol: str, q, kinds: set,
                seen: dict) -> tuple[list, list[str]]:
    """The figure legend of a scaling figure: what points, error bars, lines, bands and
    triangles mean, the theory and bound lines drawn, and the sweeps and layers."""
    from matplotlib.collections import LineCollection
    from matplotlib.container import ErrorbarContainer
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    c = styles[0].color if len(styles) == 1 else "0.3"
    m = styles[0].marker if len(styles) == 1 else "o"
    pct = f"{100 * level:.0f}%"
    median = Line2D([], [], ls="", marker=m, mfc="white", mec=c, mew=1.2, ms=4.5)
    entries = [
        (Line2D([], [], ls="", marker=m, ms=3.5, color=c, alpha=0.6, mew=0),
         "runs, one point per seed", "points"),
        (ErrorbarContainer((median, (), (LineCollection([], colors=c),)), has_yerr=True),
         f"median over seeds at each {symbol},\n{pct} bootstrap CI (seeds resampled)",
         "medians"),
        ((Patch(color=c, alpha=0.15, lw=0), Line2D([], [], color=c, lw=1.4)),
         f"least-squares fit (line); {pct} CI of its exponent\n"
         f"(band, pivoting at the fit's centre)", "fit"),
    ]
    entries = [(h, label) for h, label, kind in entries if kind in kinds]  # what is drawn
    entries += [(h, label) for label, h in seen.items()]
    for kind, marker, where in (("censored", "^", "top"), ("off_axis", "v", "bottom")):
        if kind in kinds:
            entries.append((Line2D([], [], ls="", marker=marker, ms=5, mfc="none", mec=c,
                                   mew=1.1),
                            f"{_KIND_TEXT[kind](q)}: at the {where},\n"
                            "count beside; left out of the fit"))
    if len(styles) > 1:
        entries += [(Line2D([], [], color=s.color, marker=s.marker, ls=s.linestyle, ms=4,
                            mfc="white"), s.name) for s in styles]
    return [h for h, _ in entries], [label for _, label in entries]


def _match(fq: pd.DataFrame, key: dict, layer):
    """The row of fits `fq` for the group `key` (and layer), or None."""
    m = np.ones(len(fq), bool)
    for k, v in key.items():
        col = fq[k]
        m &= (col.isna() if pd.isna(v) else (col == v).fillna(False)).to_numpy(bool)
    if layer is not pd.NA:
        m &= (fq.layer == layer).fillna(False).to_numpy(bool)
    rows = fq[m]
    return next(rows.itertuples(), None) if len(rows) == 1 else None

