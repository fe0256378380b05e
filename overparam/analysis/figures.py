"""The analysis's figures: each fitted quantity against a swept variable, and training curves.

Owns the plots (matplotlib Figures, no pyplot: no global state, no windows) and the PNG
files under figures/. Titles, axis labels and theory slopes come from the registries of
`quantities` and from the fit table of `fits`; this module never computes a quantity, fits
or predicts, and writes nothing but figures/*.png.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from overparam import store
from overparam.analysis.fits import format_prediction
from overparam.analysis.quantities import (
    QUANTITY,
    SETTINGS,
    SHORT_NAMES,
    X_VARIABLE,
    QuantityOptions,
    group_label,
    run_settings,
    varying,
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
}


# ----------------------------------------------------------------------------- layout

def _figure(n_panels: int, *, width: float = 4.6, height: float = 3.6):
    from matplotlib.figure import Figure

    cols = min(3, n_panels)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(max(width * cols, 5.6), height * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _log_ticks(ax, values) -> None:
    """Major ticks of a log x axis at the swept values, labelled plainly (64, 256, ...)."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    values = sorted(set(float(v) for v in values))
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{v:g}" for v in values]))
    ax.xaxis.set_minor_locator(NullLocator())


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
    order = ("param", "loss", "optimizer", "lr_config", "batch_size", "depth", "n", "width")
    parts = [f"{SHORT_NAMES.get(k, k)}={frame[k].iloc[0]}" for k in order
             if k not in exclude and frame[k].nunique(dropna=False) == 1
             and not pd.isna(frame[k].iloc[0])]
    seeds = frame.seed.nunique()
    return ", ".join(parts + ([f"{seeds} seeds"] if seeds else []))


def _suptitle(fig, title: str, subtitle: str, n_panels: int) -> None:
    if n_panels > MAX_PANELS:
        subtitle += f" (first {MAX_PANELS} of {n_panels} groups shown; all in fits.csv)"
    chars = int(12.5 * fig.get_figwidth())
    text = "\n".join(textwrap.wrap(title, chars) + textwrap.wrap(subtitle, int(1.2 * chars)))
    fig.suptitle(text, fontsize=10)


def _power(symbol: str, exponent: float, digits: int = 3) -> str:
    return rf"${symbol}^{{{exponent:.{digits}f}}}$".replace("-", "\N{MINUS SIGN}")


# ----------------------------------------------------------------------------- scaling

def plot_fit(per_run: pd.DataFrame, fits: pd.DataFrame, quantity: str, x: str = "width", *,
             options: QuantityOptions | None = None):
    """matplotlib Figure of `quantity` against `x` on log-log axes, one panel per group of
    the other swept settings (layers in colors): every run (small points, one per seed), the
    median over seeds, the fitted power law (exponent and CI in the legend) and the theory's
    slope (gray, dashed; dotted for the other end of an interval), drawn through the fit at
    the geometric mean of x. per_run: `per_run_quantities`, computed with `options` (None:
    the defaults), which fill in the axis label; fits: `fit_table`."""
    q, xv = QUANTITY[quantity], X_VARIABLE[x]
    options = options or QuantityOptions()
    sub = per_run[per_run.quantity == quantity]
    fq = fits[(fits.quantity == quantity) & (fits.x == x)]
    shown = [k for k in varying(sub, SETTINGS) if k != x]
    panels = _panels(sub, shown)
    fig, axes = _figure(min(len(panels), MAX_PANELS))
    layers = sorted(sub.layer.dropna().unique()) or [pd.NA]
    for ax, (key, grp) in zip(axes, panels):
        notes = []
        for i, layer in enumerate(layers):
            g = grp if layer is pd.NA else grp[grp.layer == layer]
            if g.empty:  # e.g. layer 3 in a depth-2 panel
                continue
            fit = _match(fq, key, layer)
            notes.append(_plot_fit_layer(ax, g, fit, xv.name, xv.symbol, f"C{i % 10}",
                                         "" if len(layers) == 1 else f"layer {layer}: "))
        title = group_label(key, shown) if shown else ""
        notes = [n for n in dict.fromkeys(notes) if n]
        ax.set_title(title + (f"\n({'; '.join(notes)})" if notes else ""), fontsize=9)
        if not any(line.get_xydata().size for line in ax.lines):  # all diverged, or <= 0
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no finite value > 0", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
            continue
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_ticks(ax, grp[x].dropna())
        ax.set_xlabel(xv.axis)
        ax.set_ylabel(q.text("label", options))
        ax.grid(True, which="both", alpha=0.25)
        handles = dict(zip(*reversed(ax.get_legend_handles_labels())))  # one entry per label
        ax.legend(handles.values(), handles.keys(), fontsize=6.5, loc="best")
    _suptitle(fig, f"{q.title} against {xv.title}", _constant_label(sub, [x]), len(panels))
    return fig


def _plot_fit_layer(ax, g: pd.DataFrame, fit, x: str, symbol: str, color: str,
                    name: str) -> str:
    """Points, medians, fit and theory of one layer in one panel; returns a note of the
    runs left out ('' if none)."""
    ok = g[(g.status == "ok") & (g.value > 0) & np.isfinite(g.value)]
    ax.scatter(ok[x], ok.value, s=10, alpha=0.45, color=color, lw=0,
               label=f"{name}runs (one point per seed)")
    med = ok.groupby(x).value.median()
    ax.plot(med.index, med.values, "o", ms=6, mfc="white", mec=color, mew=1.5,
            label=f"{name}median over seeds")
    if fit is None:
        return ""
    note = ", ".join(p for p in (f"{fit.n_diverged} diverged" if fit.n_diverged else "",
                                 f"{fit.n_excluded} not > 0" if fit.n_excluded else "") if p)
    if not np.isfinite(fit.exponent):
        return note
    xs = np.geomspace(ok[x].min(), ok[x].max(), 50)
    ci = (f", {100 * fit.level:.0f}% CI [{fit.ci_low:.3f}, {fit.ci_high:.3f}]"
          .replace("-", "\N{MINUS SIGN}") if np.isfinite(fit.ci_low) else "")
    ax.plot(xs, fit.prefactor * xs ** fit.exponent, "-", color=color, lw=1.5,
            label=f"{name}fit " + r"$\propto$ " + _power(symbol, fit.exponent) + ci)
    _theory_lines(ax, fit, xs, symbol)
    return note


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


def _theory_lines(ax, fit, xs: np.ndarray, symbol: str) -> None:
    """Gray lines of the predicted slopes (dashed; dotted for an interval's other end)."""
    if not np.isfinite(fit.predicted_low):
        return
    x0 = math.exp(np.log(xs).mean())
    y0 = fit.prefactor * x0 ** fit.exponent
    slopes = [fit.predicted_low] + ([fit.predicted_high]
                                    if fit.predicted_high != fit.predicted_low else [])
    for p, style in zip(slopes, ("--", ":")):
        text = format_prediction(p, p).replace("-", "\N{MINUS SIGN}")
        ax.plot(xs, y0 * (xs / x0) ** p, style, color="0.35", lw=1,
                label=rf"theory $\propto {symbol}^{{{text}}}$")


# ----------------------------------------------------------------------------- curves

def plot_curves(results: store.Results, column: str, *, x: str = "width"):
    """matplotlib Figure of `column` (of steps or layers, see CURVES) against the step, log
    y: for each value of `x` the median over seeds (line) and the inter-quartile range
    (band); one panel per group of the other swept settings (and layer). Diverged runs and
    values <= 0 (step 0 of a radius) are left out."""
    table, title, label = CURVES[column]
    symbol = X_VARIABLE[x].symbol
    settings = run_settings(results.runs)
    settings = settings[settings.status == "ok"]
    frame = getattr(results, table)
    frame = frame[["run_id", "step", column] + (["layer"] if table == "layers" else [])]
    frame = frame[np.isfinite(frame[column])].rename(columns={column: "_y"})
    frame = frame.merge(settings, on="run_id")  # (the steps column 'loss' is a setting too)
    shown = [k for k in varying(settings, SETTINGS) if k != x]
    if table == "layers" and frame.layer.nunique() > 1:
        shown.append("layer")
    panels = _panels(frame, shown)
    fig, axes = _figure(min(len(panels), MAX_PANELS))
    values = sorted(frame[x].unique())
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for ax, (key, grp) in zip(axes, panels):
        for i, v in enumerate(values):
            color = cmap(0.9 * i / max(len(values) - 1, 1))
            _plot_band(ax, grp[grp[x] == v], color, f"{symbol} = {v:g}")
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_ylabel(label)
        ax.set_title(group_label(key, shown) if shown else "", fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=6.5, loc="best", title="median over seeds, IQR band",
                  title_fontsize=6.5)
    _suptitle(fig, f"{title} during training, per {x}", _constant_label(settings, [x]),
              len(panels))
    return fig


def _plot_band(ax, g: pd.DataFrame, color, label: str) -> None:
    wide = g.pivot_table(index="step", columns="run_id", values="_y", dropna=False)
    if wide.empty:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # steps with no finite value
        q25, q50, q75 = np.nanquantile(wide.to_numpy(), [0.25, 0.5, 0.75], axis=1)
    pos = q50 > 0
    ax.plot(wide.index[pos], q50[pos], color=color, lw=1.4,
            label=f"{label} ({wide.shape[1]} seeds)")
    band = pos & (q25 > 0)
    ax.fill_between(wide.index[band], q25[band], q75[band], color=color, alpha=0.2, lw=0)


# ----------------------------------------------------------------------------- files

def _save(fig, path: Path) -> None:
    store.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130))


def write_figures(out: Path, results: store.Results, per_run: pd.DataFrame,
                  fits: pd.DataFrame, *, options: QuantityOptions) -> dict[str, list[str]]:
    """figures/*.png under `out`: one per fitted quantity and swept variable, and the
    training curves. Removes figures of an earlier analysis that no longer apply.
    Returns {section title: [paths relative to out]}."""
    fig_dir = out / "figures"
    written: dict[str, list[str]] = {"Scaling": [], "Training curves": []}
    for quantity, x in dict.fromkeys(zip(fits.quantity, fits.x)):
        if not np.isfinite(fits.exponent[(fits.quantity == quantity) & (fits.x == x)]).any():
            continue
        name = f"fit_{quantity}_vs_{x}.png"
        _save(plot_fit(per_run, fits, quantity, x, options=options), fig_dir / name)
        written["Scaling"].append(f"figures/{name}")
    ok_ids = results.runs.run_id[results.runs.status == "ok"]
    for column, (table, _, _) in CURVES.items():
        frame = getattr(results, table)
        values = frame[column][frame.run_id.isin(ok_ids)]
        if not (np.isfinite(values) & (values > 0)).any():
            continue
        name = f"curves_{column}.png"
        _save(plot_curves(results, column), fig_dir / name)
        written["Training curves"].append(f"figures/{name}")
    keep = {Path(n).name for names in written.values() for n in names}
    for stale in fig_dir.glob("*.png"):
        if stale.name not in keep:
            stale.unlink()
    return written
