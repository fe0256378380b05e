"""Two summaries of the per-run table that report.md prints beside the fits: the fitted
convergence rates against the kernel's (`rate_vs_theory`, THEORY.md section 1), and the
censored and off-axis runs per quantity, group and width (`censored_counts`).

Reads the per-run table (`per_run.per_run_quantities`); never fits, plots or writes a file.
"""

from __future__ import annotations

import pandas as pd

from overparam import theory
from overparam.analysis.groups import SWEEP, SWEPT_COLUMNS, group_label, varying
from overparam.analysis.per_run import value_kind
from overparam.analysis.quantities import QUANTITIES

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
    shown = [k for k in varying(per_run, SWEPT_COLUMNS) if k != "width"]
    keys = [k for k in SWEPT_COLUMNS if k != "width"] + ["width"]
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
    `per_run.value_kind` calls them; only rows with any of either. Columns
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
    shown = [k for k in varying(per_run, SWEPT_COLUMNS) if k != x]
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
