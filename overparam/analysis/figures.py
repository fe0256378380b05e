"""The analysis's figures: each fitted quantity against a swept variable, and training curves,
sized and styled for a paper.

Owns the plots (matplotlib Figures, no pyplot: no global state, no windows) and the files
under figures/: each figure as NAME.png (PNG_DPI) and NAME.pdf (vector) side by side.
Titles, axis labels and theory slopes come from the registries of `quantities` and from
the fit table of `fits`; the per-width medians and their intervals are
`fits.median_interval`; the absolute bounds are `quantities.radius_bounds` and
`quantities.loss_bounds`. This module never computes a quantity, fits or predicts, and
writes nothing but figures/*.png and figures/*.pdf.

Style (paper figures): one panel is COLUMN_WIDTH_IN wide (a column of a two-column
paper), several panels PAGE_WIDTH_IN (the full text width); every text is at least
FONT_PT points (RC, applied with matplotlib.rc_context around each figure and its saving,
so nothing leaks into the caller's rcParams); legends sit outside the axes (a figure
legend below the panels for what every panel shares, and below each scaling panel a
legend of its own fits); colours stay dark enough to read on white (PALETTE for layers and
sweeps, WIDTH_COLORMAP truncated before its light end for widths). Several sweeps are told
apart by marker and line style (MARKERS, LINESTYLES), named in the figure legend.
"""

from __future__ import annotations

import logging
import math
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from overparam import store
from overparam.analysis.fits import BOUND_QUANTITY, format_prediction, median_interval
from overparam.analysis.quantities import (
    QUANTITY,
    SETTINGS,
    SHORT_NAMES,
    SWEEP,
    X_VARIABLE,
    QuantityOptions,
    between_sweeps,
    group_label,
    loss_bounds,
    radius_bounds,
    run_settings,
    value_kind,
    varying_within,
)

MAX_PANELS = 12  # panels per figure; further groups are in fits.csv and the table

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
}
LINEAR_CURVES = {"test_error"}  # fractions that reach 0: a linear y axis from 0

COLUMN_WIDTH_IN = 3.3  # one column of a two-column paper
PAGE_WIDTH_IN = 6.5    # the text width of a page
FONT_PT = 8            # every text of every figure: at least this
TITLE_PT = 9
PNG_DPI = 200
RC = {
    "font.size": FONT_PT, "axes.titlesize": FONT_PT, "axes.labelsize": FONT_PT,
    "xtick.labelsize": FONT_PT, "ytick.labelsize": FONT_PT, "legend.fontsize": FONT_PT,
    "legend.title_fontsize": FONT_PT, "figure.titlesize": TITLE_PT,
    "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
    "xtick.minor.width": 0.5, "ytick.minor.width": 0.5, "lines.linewidth": 1.2,
    "legend.frameon": False, "legend.handlelength": 1.8, "legend.borderaxespad": 0.3,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text in a paper's toolchain
    "savefig.dpi": PNG_DPI,
}
# Layers and sweeps: Okabe & Ito's colour-blind safe palette without its light colours
# (yellow, sky blue, orange); every one has relative luminance <= 0.3 (contrast >= 3:1
# on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#8C564B", "#9467BD")
MARKERS = ("o", "s", "D", "^", "v", "P")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 1)))
WIDTH_COLORMAP = ("plasma", 0.0, 0.68)  # name, first and last fraction used (no light end)
THEORY_COLOR = "0.35"  # theory slopes: gray
BOUND_COLOR = "black"  # absolute bounds


# ----------------------------------------------------------------------------- layout

def _rc():
    import matplotlib

    return matplotlib.rc_context(RC)


def _grid(n_panels: int) -> tuple[int, int, float]:
    """(rows, columns, figure width in inches): one panel a column wide, 2 or 4 panels in
    two columns and more in three, the full text width."""
    if n_panels <= 1:
        return 1, 1, COLUMN_WIDTH_IN
    cols = 2 if n_panels in (2, 4) else 3
    return math.ceil(n_panels / cols), cols, PAGE_WIDTH_IN


def _figure(n_panels: int):
    """A constrained-layout Figure with n_panels axes (its height: `_set_height`)."""
    from matplotlib.figure import Figure

    rows, cols, width = _grid(n_panels)
    fig = Figure(figsize=(width, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    for ax in axes[:n_panels]:
        ax.tick_params(labelsize=FONT_PT, which="both")
    return fig, axes[:n_panels]


def _set_height(fig, n_panels: int, *, panel_lines: int, legend_lines: int,
                title_lines: int) -> None:
    """Makes `fig` tall enough for each panel's axes, ticks, labels, a title and a legend
    of `panel_lines` lines below it, a figure legend of `legend_lines` lines and a
    suptitle of `title_lines` lines (8-pt lines)."""
    rows, cols, width = _grid(n_panels)
    line = 1.25 * FONT_PT / 72  # inches per line of text
    axes_h = _axis_height(n_panels)
    panel_h = axes_h + 0.5 + 2 * line + (panel_lines * line + 0.15 if panel_lines else 0)
    fig.set_size_inches(width, rows * panel_h + (title_lines + legend_lines) * line + 0.25)


def _axis_height(n_panels: int) -> float:
    """The axes' height in inches (`_set_height`)."""
    cols = _grid(n_panels)[1]
    return 2.0 if cols == 1 else 1.7 if cols == 2 else 1.55


def _ylabel(text: str, n_panels: int) -> str:
    """`text` wrapped onto lines no longer than the axes are tall (plain text only; a
    mathtext label is one formula, kept whole)."""
    chars = int(_axis_height(n_panels) * 72 / (0.55 * FONT_PT))
    return text if "$" in text or len(text) <= chars else "\n".join(textwrap.wrap(text, chars))


def _panel_title(text: str, n_panels: int) -> str:
    """A panel's group label on lines no wider than the panel, broken after commas."""
    width = _grid(n_panels)[2] / _grid(n_panels)[1]
    chars = int(width * 72 / (0.7 * FONT_PT)) - 3  # centred over the axes, not the column
    return "\n".join(textwrap.wrap(text, chars, break_long_words=False))


def _log_ticks(ax, values) -> None:
    """Major ticks of a log x axis at the swept values, labelled plainly (64, 256, ...)."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    values = sorted(set(float(v) for v in values))
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{v:g}" for v in values]))
    ax.xaxis.set_minor_locator(NullLocator())


def _log_y_ticks(ax) -> None:
    """A log y axis spanning under two decades: ticks at 1, 2 and 5 x 10^k, labelled
    plainly (0.2, 0.5, 1) rather than as minor 'a x 10^k' labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_ylim()
    if hi / lo >= 100:
        return
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _shifted(ax, points: float):
    """ax.transData moved `points` to the right: series side by side at one x."""
    import matplotlib.transforms as mtransforms

    return ax.transData + mtransforms.ScaledTranslation(points / 72, 0,
                                                        ax.figure.dpi_scale_trans)


def _panels(frame: pd.DataFrame, keys: list[str]) -> list[tuple[dict, pd.DataFrame]]:
    """(group values, rows) for each group of `keys`, numbers (also lr '0.1' < '2') first."""
    if not keys:
        return [({}, frame)]
    groups = [(dict(zip(keys, v if isinstance(v, tuple) else (v,))), g)
              for v, g in frame.groupby(keys, dropna=False, sort=False)]
    return sorted(groups, key=lambda kg: [_sort_key(v) for v in kg[0].values()])


def _sort_key(value) -> tuple:
    if pd.isna(value):
        return (2, 0.0, "")
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _constant_label(frame: pd.DataFrame, exclude: Sequence[str]) -> str:
    """The settings shared by every run of `frame`, e.g. 'param=du, loss=squared, lr=0.1'."""
    order = ("arch", "param", "loss", "optimizer", "lr_config", "output_scale", "batch_size",
             "depth", "n", "width")
    parts = [f"{SHORT_NAMES.get(k, k)}={frame[k].iloc[0]}" for k in order
             if k not in exclude and frame[k].nunique(dropna=False) == 1
             and not pd.isna(frame[k].iloc[0])
             and not (k == "output_scale" and frame[k].iloc[0] == 1.0)  # unscaled: unsaid
             and not (k == "arch" and frame[k].iloc[0] == "mlp")]
    if SWEEP in frame and frame[SWEEP].nunique() > 1:
        seeds = frame.groupby(SWEEP, sort=False).seed.nunique()
        return ", ".join(parts + ["seeds: " + ", ".join(f"{k} {v}" for k, v in seeds.items())])
    seeds = frame.seed.nunique()
    return ", ".join(parts + ([f"{seeds} seeds"] if seeds else []))


def _title_lines(fig, title: str, subtitle: str, n_panels: int) -> list[str]:
    if n_panels > MAX_PANELS:
        subtitle += f" (first {MAX_PANELS} of {n_panels} groups shown; all in fits.csv)"
    chars = int(fig.get_figwidth() * 72 / (0.6 * TITLE_PT))
    return textwrap.wrap(title, chars) + textwrap.wrap(subtitle, chars)


def _suptitle(fig, lines: list[str]) -> None:
    fig.suptitle("\n".join(lines), fontsize=TITLE_PT)


def _figure_legend(fig, handles: list, labels: list[str], *, wide_cols: int = 2) -> int:
    """The legend every panel shares, below all panels (outside every axes); returns its
    number of columns."""
    ncols = 1 if fig.get_figwidth() <= COLUMN_WIDTH_IN + 0.1 else wide_cols
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols,
                   fontsize=FONT_PT, handlelength=2.2)
    return ncols


def _legend_lines(labels: Sequence[str], ncols: int) -> int:
    lines = [lab.count("\n") + 1 for lab in labels]
    rows = [max(lines[i:i + ncols]) for i in range(0, len(lines), ncols)]
    return sum(rows)


def _power(symbol: str, exponent: float, digits: int = 3) -> str:
    return rf"${symbol}^{{{exponent:.{digits}f}}}$".replace("-", "\N{MINUS SIGN}")


def _minus(text: str) -> str:
    return text.replace("-", "\N{MINUS SIGN}")


def width_colors(values: Sequence) -> dict:
    """{value: colour} for the sorted distinct `values` (widths) along WIDTH_COLORMAP."""
    from matplotlib import colormaps

    name, lo, hi = WIDTH_COLORMAP
    cmap = colormaps[name]
    values = sorted(set(values))
    step = (hi - lo) / max(len(values) - 1, 1)
    return {v: cmap(lo + step * i) for i, v in enumerate(values)}


class Style(NamedTuple):
    """How one sweep x layer is drawn in a panel; its name in the figure legend (with the
    settings that tell the sweeps apart) and its short name in titles and panel legends
    (the sweep's label, the layer); both '' if it is alone."""

    sweep: object
    layer: object
    color: str
    marker: str
    linestyle: object
    name: str
    short: str


def _styles(frame: pd.DataFrame, layers: list) -> list[Style]:
    """One Style per sweep x layer: colours by layer (by sweep with one layer), markers
    and line styles by sweep; names with the settings that tell the sweeps apart."""
    sweeps = list(dict.fromkeys(frame[SWEEP])) if SWEEP in frame else [None]
    apart = between_sweeps(frame, SETTINGS)
    out = []
    for i, sweep in enumerate(sweeps):
        name = short = ""
        if sweep is not None and len(sweeps) > 1:
            rows = frame[frame[SWEEP] == sweep]
            settings = group_label(rows.iloc[0].to_dict(), apart) if apart else ""
            name, short = f"{sweep}" + (f" ({settings})" if settings else ""), f"{sweep}"
        for j, layer in enumerate(layers):
            color = PALETTE[(j if len(layers) > 1 else i) % len(PALETTE)]
            layer_name = "" if len(layers) == 1 else f"layer {layer}"
            out.append(Style(sweep, layer, color, MARKERS[i % len(MARKERS)],
                             LINESTYLES[i % len(LINESTYLES)],
                             ", ".join(p for p in (name, layer_name) if p),
                             ", ".join(p for p in (short, layer_name) if p)))
    return out


def _rows(frame: pd.DataFrame, style: Style) -> pd.DataFrame:
    if style.sweep is not None:
        frame = frame[frame[SWEEP] == style.sweep]
    if style.layer is not pd.NA:
        frame = frame[frame.layer == style.layer]
    return frame


# ----------------------------------------------------------------------------- scaling

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
      - `bounds` (`quantities.radius_bounds`: run_id [and SWEEP], quantity, layer, bound):
        the median over seeds of the theory's absolute bound at each x (black, dash-dot);
      - runs whose value is censored (never got there within the recorded steps) as open
        triangles at the top of the axes, and values <= 0 or undefined as open triangles
        at the bottom, each with its count beside; both are left out of the fits and
        medians count censored ones as above every observed value.

    Diverged runs are counted in the panel's title. per_run: `per_run_quantities`, with
    `options` (None: the defaults) filling in the axis label; fits: `fit_table`."""
    with _rc():
        return _plot_fit(per_run, fits, quantity, x, options or QuantityOptions(), bounds,
                         n_boot, seed)


def _plot_fit(per_run, fits, quantity, x, options, bounds, n_boot, seed):
    q, xv = QUANTITY[quantity], X_VARIABLE[x]
    sub = per_run[per_run.quantity == quantity]
    sub = sub.assign(_kind=value_kind(sub))
    fq = fits[(fits.quantity == quantity) & (fits.x == x)]
    level = float(fq.level.iloc[0]) if len(fq) else 0.95
    shown = [k for k in varying_within(sub, SETTINGS) if k != x]
    panels = _panels(sub, shown)
    layers = sorted(sub.layer.dropna().unique()) or [pd.NA]
    styles = _styles(sub, layers)
    if bounds is not None and len(bounds):
        bounds = bounds[bounds.quantity == quantity]
    n_shown = min(len(panels), MAX_PANELS)
    fig, axes = _figure(n_shown)
    panel_lines = 0
    seen: dict[str, object] = {}  # figure legend: label -> handle, in order
    kinds_seen = set()
    for ax, (key, grp) in zip(axes, panels):
        notes, drawn, fit_handles = [], [], []
        present = [s for s in styles if len(_rows(grp, s))]  # e.g. no layer 3 at depth 2
        for j, style in enumerate(present):
            g = _rows(grp, style)
            fit = _match(_rows(fq, style._replace(layer=pd.NA)), key, style.layer)
            shift = 6.0 * (j - (len(present) - 1) / 2)  # points: series side by side
            panel = _Series(ax, g, fit, xv, style, level, n_boot, seed,
                            _bounds_of(bounds, g, style), shift)
            notes.append(panel.note(style))
            drawn.append(panel)
            if panel.fit_line is not None:
                fit_handles.append(panel.fit_line)
        notes = [n for n in dict.fromkeys(notes) if n]
        ax.set_title(_panel_title(group_label(key, shown) if shown else "", n_shown)
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
        _log_ticks(ax, grp[x].dropna())
        lo, hi = _limits([v for p in drawn for v in p.yvalues])
        above = any(p.censored_counts("censored") for p in drawn)
        below = any(p.censored_counts("off_axis") for p in drawn)
        span = math.log10(hi / lo)
        ax.set_ylim(lo / 10 ** (0.14 * span * below), hi * 10 ** (0.14 * span * above))
        for j, panel in enumerate(drawn):
            if panel.finish(j):
                kinds_seen.add("medians")
        _log_y_ticks(ax)
        ax.set_xlabel(xv.axis)
        ax.set_ylabel(_ylabel(q.text("label", options), n_shown))
        ax.grid(True, which="major", alpha=0.25, lw=0.5)
        for h in ax.get_lines():
            label = h.get_label()
            if label.startswith(("theory", "Du et al.")):
                seen.setdefault(label, h)
        if fit_handles:  # below the axes, clear of the tick labels and the axis label
            ax.legend(handles=fit_handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      borderaxespad=4.2, fontsize=FONT_PT, handlelength=1.8)
            panel_lines = max(panel_lines, _legend_lines(
                [h.get_label() for h in fit_handles], 1))
    handles, labels = _fit_legend(styles, level, xv.symbol, q, kinds_seen, seen)
    lines = _title_lines(fig, f"{q.title} against {xv.title}", _constant_label(sub, [x]),
                         len(panels))
    ncols = _figure_legend(fig, handles, labels)
    _suptitle(fig, lines)
    _set_height(fig, n_shown, panel_lines=panel_lines,
                legend_lines=_legend_lines(labels, ncols), title_lines=len(lines))
    return fig


_KIND_TEXT = {  # kind -> what the legend and notes call it (q: the Quantity)
    "censored": lambda q: q.censored or "censored",
    "off_axis": lambda q: "\N{LESS-THAN OR EQUAL TO} 0 or undefined",
}


def _limits(values: list[float]) -> tuple[float, float]:
    v = np.asarray([u for u in values if np.isfinite(u) and u > 0], float)
    if not len(v):
        return 0.1, 10.0
    lo, hi = v.min(), v.max()
    if hi <= lo * 1.0001:
        lo, hi = lo / 2, hi * 2
    pad = 10 ** (0.06 * math.log10(hi / lo))
    return lo / pad, hi * pad


def _bounds_of(bounds, g: pd.DataFrame, style: Style) -> pd.DataFrame | None:
    """The bounds of the runs of `g` (non-diverged), with their x values."""
    if bounds is None or not len(bounds):
        return None
    on = ["run_id"] + ([SWEEP] if SWEEP in bounds and SWEEP in g else [])
    rows = g[g.status == "ok"][on + list(dict.fromkeys(["width", *SETTINGS]))]
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
                   marker=style.marker, label="_runs", transform=_shifted(ax, shift - 4),
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
        ci = (_minus(f"\n{100 * level:.0f}% CI [{fit.ci_low:.3f}, {fit.ci_high:.3f}]")
              if np.isfinite(fit.ci_low) else "")
        (self.fit_line,) = ax.plot(xs, ys, color=st.color, ls=st.linestyle, lw=1.4,
                                   label=f"{prefix}fit " + r"$\propto$ "
                                   + _power(symbol, fit.exponent) + ci)
        self.yvalues += [ys[0], ys[-1]]
        if np.isfinite(fit.ci_low):
            band = np.stack([y0 * (xs / x0) ** fit.ci_low, y0 * (xs / x0) ** fit.ci_high])
            ax.fill_between(xs, band.min(0), band.max(0), color=st.color, alpha=0.15, lw=0,
                            label="_band")
        if np.isfinite(fit.predicted_low):
            slopes = [fit.predicted_low] + ([fit.predicted_high]
                                            if fit.predicted_high != fit.predicted_low else [])
            for p, style in zip(slopes, ("--", ":")):
                text = _minus(format_prediction(p, p))
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
                        transform=_shifted(ax, self.shift))
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


# ----------------------------------------------------------------------------- generalization

def plot_bound(per_run: pd.DataFrame, bound_fits: pd.DataFrame):
    """matplotlib Figure of each run's final test error against Arora et al.'s measure
    sqrt(2 y^T (H^inf)^-1 y / n) (linear axes from 0; the test error's own range), one
    panel per group of
    `fits.bound_fit_table`: the runs (colour: the digits task, marker: n), the fitted line
    with its slope's interval, and the line test error = measure (dashed), below which
    Arora et al.'s theorem puts every run up to a lower-order term (THEORY.md section 8).
    per_run: `per_run_quantities`; bound_fits: `fits.bound_fit_table`."""
    with _rc():
        return _plot_bound(per_run, bound_fits)


def _plot_bound(per_run: pd.DataFrame, bound_fits: pd.DataFrame):
    from matplotlib.lines import Line2D

    rows = per_run[(per_run.quantity == BOUND_QUANTITY) & (per_run.status == "ok")]
    rows = rows[np.isfinite(rows.value.astype(float)) & np.isfinite(rows.arora_bound)]
    keys = [s for s in SETTINGS if s not in ("n", "digits_task")]
    shown = varying_within(rows, keys)
    panels = _panels(rows, shown)
    tasks = sorted(rows.digits_task.unique(), key=str)
    colors = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(tasks)}
    sizes = sorted(rows.n.unique())
    markers = {n: MARKERS[i % len(MARKERS)] for i, n in enumerate(sizes)}
    n_shown = min(len(panels), MAX_PANELS)
    fig, axes = _figure(n_shown)
    for ax, (key, g) in zip(axes, panels):
        for (task, n), pts in g.groupby(["digits_task", "n"], sort=True):
            ax.scatter(pts.arora_bound, pts.value, s=12, color=colors[task],
                       marker=markers[n], alpha=0.75, lw=0)
        right = 1.05 * max(float(g.arora_bound.max()), 1e-12)
        top = 1.15 * max(float(g.value.max()), 1e-3)
        ax.plot([0, right], [0, right], color=BOUND_COLOR, ls="--", lw=1.0)
        fit = bound_fits[_matching(bound_fits, key)]
        title = _panel_title(group_label(key, shown) if shown else "", n_shown)
        if len(fit) and np.isfinite(fit.slope.iloc[0]):
            f = fit.iloc[0]
            xs = np.array([g.arora_bound.min(), g.arora_bound.max()])
            ax.plot(xs, f.intercept + f.slope * xs, color="0.2", lw=1.3)
            ci = (f" [{f.slope_low:.2g}, {f.slope_high:.2g}]"
                  if np.isfinite(f.slope_low) else "")
            title += ("\n" if title else "") + _minus(
                f"slope {f.slope:.3g}{ci}\nrank corr. {f.spearman:.2f}\n"
                f"{100 * f.below_bound:.0f}% \N{LESS-THAN OR EQUAL TO} measure")
        ax.set_title(title, fontsize=FONT_PT)
        ax.set_xlim(0, right)
        ax.set_ylim(0, top)
        ax.set_xlabel(r"$\sqrt{2\,y^\top (H^\infty)^{-1} y\,/\,n}$")
        ax.set_ylabel(_ylabel("final test error", n_shown))
        ax.grid(True, which="major", alpha=0.25, lw=0.5)
    entries = [(Line2D([], [], color=colors[t], marker="o", ls="", ms=4),
                f"task {t}" if t else "synthetic labels") for t in tasks]
    entries += [(Line2D([], [], color="0.3", marker=markers[n], ls="", ms=4), f"n = {n}")
                for n in sizes]
    entries += [(Line2D([], [], color="0.2", lw=1.3), "least-squares line (title: its slope,\n"
                 "seed-bootstrap interval; Spearman's\nrank correlation)"),
                (Line2D([], [], color=BOUND_COLOR, ls="--", lw=1.0),
                 "test error = measure: Arora et al.'s\nbound, lower-order term aside")]
    lines = _title_lines(fig, "Test error against Arora et al.'s complexity measure",
                         _constant_label(rows, ["n", "digits_task"]), len(panels))
    ncols = _figure_legend(fig, [h for h, _ in entries], [lab for _, lab in entries])
    _suptitle(fig, lines)
    _set_height(fig, n_shown, panel_lines=0,
                legend_lines=_legend_lines([lab for _, lab in entries], ncols),
                title_lines=len(lines))
    return fig


def _matching(frame: pd.DataFrame, key: dict) -> np.ndarray:
    """The rows of `frame` with the settings `key` (a missing value matches a missing one)."""
    mask = np.ones(len(frame), bool)
    for k, v in key.items():
        mask &= (frame[k].isna() if pd.isna(v) else frame[k] == v).to_numpy(bool)
    return mask


# ----------------------------------------------------------------------------- curves

def _as_sweeps(results) -> dict:
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
    runs in Du et al.'s setting (`quantities.du_theorem_runs`): the medians over the
    panel's runs of the bounds of `quantities.loss_bounds` (black; dashed: Du et al.'s
    Theorem 4.1, dotted: the kernel's slowest eigendirection). The y range is the data's."""
    with _rc():
        return _plot_curves(_as_sweeps(results), column, x)


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
    symbol = X_VARIABLE[x].symbol
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
    shown = [k for k in varying_within(settings, SETTINGS) if k != x]
    if table == "layers" and frame.layer.nunique() > 1:
        shown.append("layer")
    panels = _panels(frame, shown)
    styles = _styles(settings, [pd.NA])
    colors = width_colors(frame[x].unique())
    bounded = column == "loss" and frame.du_bound.notna().any()
    n_shown = min(len(panels), MAX_PANELS)
    fig, axes = _figure(n_shown)
    for ax, (key, grp) in zip(axes, panels):
        ys = []
        for st in styles:
            g = _rows(grp, st)
            for v in sorted(colors):
                ys += _plot_band(ax, g[g[x] == v], colors[v], st.linestyle,
                                 positive=column not in LINEAR_CURVES)
        if column in LINEAR_CURVES:
            ax.set_ylim(0, 1.05 * max(ys + [1e-3]))
        else:
            lo, hi = _limits(ys)
            if roundoff is not None and roundoff > 0:
                lo = max(lo, 10 * roundoff)
            ax.set_yscale("log")
            ax.set_ylim(lo, hi)
        if column == "sharpness":
            ys += _plot_stability_limits(ax, grp, x, colors)
            lo, hi = _limits(ys)
            ax.set_ylim(lo, hi)
        if bounded:
            for st in styles:
                _plot_loss_bounds(ax, _rows(grp, st), st, len(styles) > 1)
        ax.set_xlabel("step t")
        ax.set_ylabel(_ylabel(label, n_shown))
        ax.set_title(_panel_title(group_label(key, shown) if shown else "", n_shown),
                     fontsize=FONT_PT)
        ax.grid(True, which="major", alpha=0.25, lw=0.5)
        if column not in LINEAR_CURVES:
            _log_y_ticks(ax)
    subtitle = _constant_label(settings, [x])
    if roundoff is not None:
        subtitle += f"; step 0 not drawn (0 up to round-off, at most {roundoff:.1e})"
    lines = _title_lines(fig, f"{title} during training, per {x}", subtitle, len(panels))
    handles, labels = _curve_legend(frame, colors, symbol, x, styles, bounded,
                                    limits=column == "sharpness")
    ncols = _figure_legend(fig, handles, labels, wide_cols=3)
    _suptitle(fig, lines)
    _set_height(fig, n_shown, panel_lines=0, legend_lines=_legend_lines(labels, ncols),
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


# ----------------------------------------------------------------------------- files

def _save(fig, path: Path) -> None:
    """`path` (.png, PNG_DPI) and the same name .pdf beside it (no creation date: the same
    figure gives the same bytes). fontTools, which embeds the fonts, warns about the dates
    inside DejaVu's font files, harmlessly; its logger is quieted for the call only."""
    fonttools = logging.getLogger("fontTools")
    level = fonttools.level
    fonttools.setLevel(logging.ERROR)
    try:
        with _rc():
            store.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=PNG_DPI))
            store.atomic_write(path.with_suffix(".pdf"), lambda tmp: fig.savefig(
                tmp, format="pdf", metadata={"CreationDate": None}))
    finally:
        fonttools.setLevel(level)


def write_figures(out: Path, results: store.Results | Mapping[str, store.Results],
                  per_run: pd.DataFrame, fits: pd.DataFrame, *, options: QuantityOptions,
                  n_boot: int = 1000, seed: int = 0,
                  bound_fits: pd.DataFrame | None = None) -> dict[str, list[str]]:
    """figures/NAME.png and figures/NAME.pdf under `out`: one per fitted quantity and swept
    variable, the training curves, and the test error against Arora et al.'s measure
    (`plot_bound`, where `bound_fits` has a row; one sweep). `results`: one sweep, or
    {label: Results} for several (per_run and fits then have a SWEEP column; the sweeps
    share each figure). Removes figures of an earlier analysis that no longer apply.
    Returns {section title: [PNG paths relative to out]}."""
    sweeps = _as_sweeps(results)
    fig_dir = out / "figures"
    written: dict[str, list[str]] = {"Scaling": [], "Training curves": [],
                                     "Generalization": []}
    for quantity, x in dict.fromkeys(zip(fits.quantity, fits.x)):
        if not np.isfinite(fits.exponent[(fits.quantity == quantity) & (fits.x == x)]).any():
            continue
        bounds = _radius_bounds(sweeps) if (quantity, x) == ("max_radius_rowmax",
                                                             "width") else None
        name = f"fit_{quantity}_vs_{x}.png"
        fig = plot_fit(per_run, fits, quantity, x, options=options, bounds=bounds,
                       n_boot=n_boot, seed=seed)
        _save(fig, fig_dir / name)
        written["Scaling"].append(f"figures/{name}")
    for column, (table, _, _) in CURVES.items():
        if not any(_has_curve(r, table, column) for r in sweeps.values()):
            continue
        name = f"curves_{column}.png"
        _save(plot_curves(results, column), fig_dir / name)
        written["Training curves"].append(f"figures/{name}")
    if bound_fits is not None and len(bound_fits) and SWEEP not in per_run:
        name = f"fit_{BOUND_QUANTITY}_vs_arora_bound.png"
        _save(plot_bound(per_run, bound_fits), fig_dir / name)
        written["Generalization"].append(f"figures/{name}")
    keep = {Path(n).name for names in written.values() for n in names}
    keep |= {Path(n).with_suffix(".pdf").name for n in keep}
    for stale in [*fig_dir.glob("*.png"), *fig_dir.glob("*.pdf")]:
        if stale.name not in keep:
            stale.unlink()
    return written


def _has_curve(results: store.Results, table: str, column: str) -> bool:
    ok_ids = results.runs.run_id[results.runs.status == "ok"]
    frame = getattr(results, table)
    values = frame[column][frame.run_id.isin(ok_ids)]
    return bool((np.isfinite(values) & (values > 0)).any())


def _radius_bounds(sweeps: dict) -> pd.DataFrame | None:
    frames = [radius_bounds(r).assign(**({SWEEP: name} if name is not None else {}))
              for name, r in sweeps.items()]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None

