"""Lazy, catapult or divergent: each run's phase, the phase diagram and the coordinate check.

THEORY.md section 10. `phases` classifies every run of a sweep from its loss curve
(Lewkowycz et al. 2020's phases of squared-loss GD):

  divergent  the run diverged (a non-finite loss or gradient), or its last loss is not
             below its initial loss (it did not train)
  catapult   it trained, and its loss rose above (1 + rise) x its initial loss on the way
  lazy       it trained, and its loss never rose so

beside eta lambda_0 (quantities.top_eigenvalue_init), the peak loss ratio and its step, and
the final sharpness against 2 / eta. `plot_phases` draws the phase diagram (eta lambda_0
against the width, a marker per phase, a panel per parameterization and output scale);
`plot_coord_check` the coordinate check as the mup library draws it (a panel per layer,
width on x, a line per step; top row the RMS of h_l(t), bottom row that of h_l(t) -
h_l(0)). `figures` gives the figures a sweep has the columns for. Draws; writes nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from overparam import store
from overparam.analysis import quantities
from overparam.analysis.quantities import QUANTITY_BY_NAME as _Q
from overparam.analysis.quantities import QuantityOptions, Tables
from overparam.analysis.style import (
    COLUMN_WIDTH_IN,
    MARKERS,
    PAGE_WIDTH_IN,
    PALETTE,
    WIDTH_COLORMAP,
    paper_rc,
)

PHASES = ("lazy", "catapult", "divergent")
RISE = 0.01  # a catapult: the loss rose above (1 + RISE) x its initial loss
EDGES = (2.0, 4.0, 12.0)  # eta lambda_0: the catapult's start; its end in the uv model and
# as measured for ReLU networks (Lewkowycz et al. 2020)


def tables(results: store.Results) -> Tables:
    """The quantities' Tables of a loaded sweep (each run's first step and loss there)."""
    steps = results.steps[results.steps.run_id.isin(results.runs.run_id)]
    first = steps.step == steps.groupby("run_id").step.transform("min")
    loss0 = steps.loss.where(first).groupby(steps.run_id).transform("max")
    return Tables(results.runs, steps.assign(first=first, loss0=loss0), results.layers)


def phases(t: Tables, *, rise: float = RISE) -> pd.DataFrame:
    """One row per run: run_id, width, param, output_scale, lr, eta_lambda0, peak_ratio
    (max_t loss / loss(0)), peak_step, final_sharpness_ratio (eta lambda_max(T) / 2; NaN
    without sharpness) and phase (module docstring)."""
    o = QuantityOptions()
    runs = t.runs.set_index("run_id")
    out = pd.DataFrame(index=pd.Index(runs.index, name="run_id"))
    for name, values in (("eta_lambda0", quantities.eta_lambda0(t)),
                         ("peak_ratio", quantities.loss_peak_ratio(t)),
                         ("peak_step", quantities.loss_peak_step(t)),
                         ("final_sharpness_ratio", _Q["final_sharpness_ratio"].compute(t, o))):
        out[name] = values.reindex(out.index).astype(float)
    s = t.steps
    last = s[s.step == s.groupby("run_id").step.transform("max")].set_index("run_id")
    final = (last.loss / last.loss0).reindex(out.index).astype(float)
    bad = (runs.status.reindex(out.index) == "diverged") | ~(np.isfinite(final) & (final < 1))
    out["phase"] = np.where(bad, "divergent",
                            np.where(out.peak_ratio > 1 + rise, "catapult", "lazy"))
    for c in ("width", "param", "output_scale", "lr"):
        out[c] = runs[c].reindex(out.index)
    return out.reset_index()


def plot_phases(frame: pd.DataFrame):
    """The phase diagram of `phases`' frame: eta lambda_0 (log x) against the width (log y),
    a marker and colour per phase, a panel per (param, output_scale); dotted lines at
    eta lambda_0 = 2, 4, 12 (EDGES)."""
    import matplotlib.pyplot as plt

    groups = sorted(frame.groupby(["param", "output_scale"]).groups)
    with paper_rc():
        fig, axes = plt.subplots(1, len(groups), squeeze=False, sharey=True,
                                 figsize=(min(PAGE_WIDTH_IN, COLUMN_WIDTH_IN * len(groups)),
                                          2.6))
        for ax, (param, scale) in zip(axes[0], groups):
            g = frame[(frame.param == param) & (frame.output_scale == scale)]
            for i, phase in enumerate(PHASES):
                p = g[g.phase == phase]
                jitter = 1 + 0.04 * (i - 1)
                ax.scatter(p.eta_lambda0, p.width * jitter, s=14, marker=MARKERS[i],
                           color=PALETTE[i], label=f"{phase} ({len(p)})", alpha=0.8)
            for edge in EDGES:
                ax.axvline(edge, color="0.5", linestyle=":", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log", base=2)
            ax.set_title(f"{param}, alpha = {scale:g}")
            ax.set_xlabel(r"$\eta\,\lambda_0$")
            ax.legend(loc="lower left", fontsize="small", framealpha=0.8)
        axes[0][0].set_ylabel("width m")
        fig.suptitle("Phases of training: lazy, catapult, divergent")
        fig.tight_layout()
    return fig


def coord_check_frame(results: store.Results, steps: int) -> pd.DataFrame:
    """The coordinate check's data: the mean over the ok runs' seeds of feature_rms and
    feature_change_rms per (param, output_scale, lr_spec, width, layer, step), steps
    0..`steps`."""
    runs = results.runs[results.runs.status == "ok"]
    layers = results.layers[results.layers.step <= steps].merge(
        runs[["run_id", "param", "output_scale", "lr_spec", "width"]], on="run_id")
    return (layers.groupby(["param", "output_scale", "lr_spec", "width", "layer", "step"])
            [["feature_rms", "feature_change_rms"]].mean().reset_index())


def plot_coord_check(frame: pd.DataFrame, title: str):
    """One setting's coordinate check (`coord_check_frame` rows of one param, output scale
    and lr_spec): a column per layer, width on x (log), a line per step; top: RMS of h_l(t),
    bottom: RMS of h_l(t) - h_l(0) (from step 1). Flat in width: width-stable."""
    import matplotlib.pyplot as plt

    layers = sorted(frame.layer.unique())
    steps = sorted(frame.step.unique())
    cmap = plt.get_cmap(WIDTH_COLORMAP[0])
    colours = {t: cmap(WIDTH_COLORMAP[1] + (WIDTH_COLORMAP[2] - WIDTH_COLORMAP[1])
                       * i / max(len(steps) - 1, 1)) for i, t in enumerate(steps)}
    with paper_rc():
        fig, axes = plt.subplots(2, len(layers), squeeze=False, sharex=True,
                                 figsize=(min(PAGE_WIDTH_IN, 2.2 * len(layers) + 0.8), 3.6))
        for j, layer in enumerate(layers):
            f = frame[frame.layer == layer]
            for row, column in enumerate(("feature_rms", "feature_change_rms")):
                ax = axes[row][j]
                for t in steps:
                    if column == "feature_change_rms" and t == 0:
                        continue
                    c = f[f.step == t].sort_values("width")
                    ax.plot(c.width, c[column], marker="o", markersize=3,
                            color=colours[t], label=f"t = {t}")
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                if row == 0:
                    ax.set_title(f"layer {layer}")
                else:
                    ax.set_xlabel("width m")
            axes[0][0].set_ylabel(r"RMS of $h_l(t)$")
            axes[1][0].set_ylabel(r"RMS of $h_l(t)-h_l(0)$")
        axes[0][-1].legend(loc="best")
        fig.suptitle(f"Coordinate check: {title}")
        fig.tight_layout()
    return fig


def figures(sweeps: dict) -> dict[str, dict]:
    """{section: {figure name: Figure}} of the sweeps (`curves.as_sweeps`' {label:
    Results}): for one sweep, the phase diagram where it recorded sharpness steps (as the
    catapult's quantities ask: quantities._catapult) with squared loss, and a coordinate
    check per (param, output_scale, lr_spec) where it recorded the features (its config's
    coord_steps)."""
    out: dict[str, dict] = {}
    if len(sweeps) != 1:
        return out
    results = next(iter(sweeps.values()))
    t = tables(results)
    config = results.manifest.get("config", {})
    if config.get("sharpness_every") and set(results.runs.loss) == {"squared"}:
        frame = phases(t)
        if np.isfinite(frame.eta_lambda0).any():
            out.setdefault("Lazy, rich and catapult", {})["phase_diagram"] = plot_phases(
                frame[np.isfinite(frame.eta_lambda0)])
    if "feature_rms" in results.layers and len(results.layers):
        data = coord_check_frame(results, int(config.get("coord_steps", 3)))
        for (param, scale, lr), g in data.groupby(["param", "output_scale", "lr_spec"],
                                                  sort=True):
            name = f"coord_check_{param}_alpha{scale:g}_lr{lr}".replace(".", "p")
            out.setdefault("Coordinate check", {})[name] = plot_coord_check(
                g, f"{param}, alpha = {scale:g}, lr = {lr}")
    return out
