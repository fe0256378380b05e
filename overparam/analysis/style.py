"""Style and layout of the analysis's figures: the one place where figure sizes, fonts,
colours, markers and line styles are defined, and the helpers every figure is laid out
with.

Style (paper figures): one panel is COLUMN_WIDTH_IN wide (a column of a two-column
paper), several panels PAGE_WIDTH_IN (the full text width); every text is at least
FONT_PT points (RC, applied with matplotlib.rc_context around each figure and its saving,
`paper_rc`, so nothing leaks into the caller's rcParams); PNGs at PNG_DPI; legends sit
outside the axes (a figure legend below the panels for what every panel shares, and below
each scaling panel a legend of its own fits); colours stay dark enough to read on white
(PALETTE for layers and sweeps, WIDTH_COLORMAP truncated before its light end for widths).
Several sweeps are told apart by marker and line style (MARKERS, LINESTYLES), named in the
figure legend (`Style`, `styles_of`). At most MAX_PANELS panels per figure.

Layout: the grid of panels and the figure's height (`grid_of`, `new_figure`,
`set_height`), wrapped labels and titles, ticks of log axes, the panels of a frame's
groups (`panels_of`), the figure legend. Knows nothing of quantities or fits; draws no
data and writes no file.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from overparam.analysis.groups import SHORT_NAMES, SWEEP, SWEPT_COLUMNS, between_sweeps, group_label

MAX_PANELS = 12  # panels per figure; further groups are in fits.csv and the table

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

def paper_rc():
    """matplotlib.rc_context(RC): the paper style around one figure's drawing or saving."""
    import matplotlib

    return matplotlib.rc_context(RC)


def grid_of(n_panels: int) -> tuple[int, int, float]:
    """(rows, columns, figure width in inches): one panel a column wide, 2 or 4 panels in
    two columns and more in three, the full text width."""
    if n_panels <= 1:
        return 1, 1, COLUMN_WIDTH_IN
    cols = 2 if n_panels in (2, 4) else 3
    return math.ceil(n_panels / cols), cols, PAGE_WIDTH_IN


def new_figure(n_panels: int):
    """A constrained-layout Figure with n_panels axes (its height: `set_height`)."""
    from matplotlib.figure import Figure

    rows, cols, width = grid_of(n_panels)
    fig = Figure(figsize=(width, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    for ax in axes[:n_panels]:
        ax.tick_params(labelsize=FONT_PT, which="both")
    return fig, axes[:n_panels]


def set_height(fig, n_panels: int, *, panel_lines: int, legend_lines: int,
                title_lines: int) -> None:
    """Makes `fig` tall enough for each panel's axes, ticks, labels, a title and a legend
    of `panel_lines` lines below it, a figure legend of `legend_lines` lines and a
    suptitle of `title_lines` lines (8-pt lines)."""
    rows, cols, width = grid_of(n_panels)
    line = 1.25 * FONT_PT / 72  # inches per line of text
    axes_h = axis_height(n_panels)
    panel_h = axes_h + 0.5 + 2 * line + (panel_lines * line + 0.15 if panel_lines else 0)
    fig.set_size_inches(width, rows * panel_h + (title_lines + legend_lines) * line + 0.25)


def axis_height(n_panels: int) -> float:
    """The axes' height in inches (`set_height`)."""
    cols = grid_of(n_panels)[1]
    return 2.0 if cols == 1 else 1.7 if cols == 2 else 1.55


def wrap_ylabel(text: str, n_panels: int) -> str:
    """`text` wrapped onto lines no longer than the axes are tall (plain text only; a
    mathtext label is one formula, kept whole)."""
    chars = int(axis_height(n_panels) * 72 / (0.55 * FONT_PT))
    return text if "$" in text or len(text) <= chars else "\n".join(textwrap.wrap(text, chars))


def panel_title(text: str, n_panels: int) -> str:
    """A panel's group label on lines no wider than the panel, broken after commas."""
    width = grid_of(n_panels)[2] / grid_of(n_panels)[1]
    chars = int(width * 72 / (0.7 * FONT_PT)) - 3  # centred over the axes, not the column
    return "\n".join(textwrap.wrap(text, chars, break_long_words=False))


def log_x_ticks(ax, values) -> None:
    """Major ticks of a log x axis at the swept values, labelled plainly (64, 256, ...)."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    values = sorted(set(float(v) for v in values))
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{v:g}" for v in values]))
    ax.xaxis.set_minor_locator(NullLocator())


def log_y_ticks(ax) -> None:
    """A log y axis spanning under two decades: ticks at 1, 2 and 5 x 10^k, labelled
    plainly (0.2, 0.5, 1) rather than as minor 'a x 10^k' labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_ylim()
    if hi / lo >= 100:
        return
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def shifted(ax, points: float):
    """ax.transData moved `points` to the right: series side by side at one x."""
    import matplotlib.transforms as mtransforms

    return ax.transData + mtransforms.ScaledTranslation(points / 72, 0,
                                                        ax.figure.dpi_scale_trans)


def panels_of(frame: pd.DataFrame, keys: list[str]) -> list[tuple[dict, pd.DataFrame]]:
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


def constant_label(frame: pd.DataFrame, exclude: Sequence[str]) -> str:
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


def wrap_title(fig, title: str, subtitle: str, n_panels: int) -> list[str]:
    if n_panels > MAX_PANELS:
        subtitle += f" (first {MAX_PANELS} of {n_panels} groups shown; all in fits.csv)"
    chars = int(fig.get_figwidth() * 72 / (0.6 * TITLE_PT))
    return textwrap.wrap(title, chars) + textwrap.wrap(subtitle, chars)


def suptitle(fig, lines: list[str]) -> None:
    fig.suptitle("\n".join(lines), fontsize=TITLE_PT)


def figure_legend(fig, handles: list, labels: list[str], *, wide_cols: int = 2) -> int:
    """The legend every panel shares, below all panels (outside every axes); returns its
    number of columns."""
    ncols = 1 if fig.get_figwidth() <= COLUMN_WIDTH_IN + 0.1 else wide_cols
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols,
                   fontsize=FONT_PT, handlelength=2.2)
    return ncols


def count_legend_lines(labels: Sequence[str], ncols: int) -> int:
    lines = [lab.count("\n") + 1 for lab in labels]
    rows = [max(lines[i:i + ncols]) for i in range(0, len(lines), ncols)]
    return sum(rows)


def power_text(symbol: str, exponent: float, digits: int = 3) -> str:
    return rf"${symbol}^{{{exponent:.{digits}f}}}$".replace("-", "\N{MINUS SIGN}")


def minus(text: str) -> str:
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


def styles_of(frame: pd.DataFrame, layers: list) -> list[Style]:
    """One Style per sweep x layer: colours by layer (by sweep with one layer), markers
    and line styles by sweep; names with the settings that tell the sweeps apart."""
    sweeps = list(dict.fromkeys(frame[SWEEP])) if SWEEP in frame else [None]
    apart = between_sweeps(frame, SWEPT_COLUMNS)
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


def rows_of(frame: pd.DataFrame, style: Style) -> pd.DataFrame:
    if style.sweep is not None:
        frame = frame[frame[SWEEP] == style.sweep]
    if style.layer is not pd.NA:
        frame = frame[frame.layer == style.layer]
    return frame


def log_limits(values: list[float]) -> tuple[float, float]:
    """(low, high) of a log axis around the finite values > 0, padded by 6% of its decades
    on each side (a span of one value: a factor 2 each way; none: 0.1 to 10)."""
    v = np.asarray([u for u in values if np.isfinite(u) and u > 0], float)
    if not len(v):
        return 0.1, 10.0
    lo, hi = v.min(), v.max()
    if hi <= lo * 1.0001:
        lo, hi = lo / 2, hi * 2
    pad = 10 ** (0.06 * math.log10(hi / lo))
    return lo / pad, hi * pad
