"""Power-law fits with seed-bootstrap intervals, and the fit table of a sweep.

For each quantity and each swept variable x among width, n, depth and output scale that
takes two or more values, log y = log C + alpha log x by least squares over every run of a
group, a group being one combination of the other swept settings (groups.SWEPT_COLUMNS:
depth, n, digits task, lr, output scale, batch size, loss, optimizer, arch,
parameterization, and every other field that config.SWEPT declares; width when x is not
width) and the layer. Diverged runs are left out and counted; values <= 0 or non-finite
are left out of the fit and counted. The confidence interval resamples seeds: seed ids
with replacement, all runs of the drawn seeds, refit (see `power_law_fit`). Each fit is
set beside the quantity's prediction (quantities.predicted_exponent), which THEORY.md
sections 5 and 6 give for the width (with the width-stable step size of the
parameterization, theory.width_stable) and the output scale (the centered model).
Several sweeps analyzed together (a SWEEP column) are fitted each on its own, and the
table gains a first column SWEEP. The figures' per-width medians and their seed-bootstrap
intervals are `median_interval`.

Owns the fitting and the fit table's columns and order. Reads the per-run table
(`per_run.per_run_quantities`); never reads results directories, plots or writes a file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import special, stats

from overparam.analysis.groups import SWEEP, SWEPT_COLUMNS, group_label, varying
from overparam.analysis.quantities import QUANTITIES, QUANTITY_BY_NAME, predicted_exponent
from overparam.analysis.variables import X_VARIABLES


class Fit(NamedTuple):
    """y ~ prefactor * x ** exponent, with a seed-bootstrap interval [ci_low, ci_high]."""

    exponent: float
    prefactor: float
    ci_low: float
    ci_high: float
    n_runs: int       # points used in the fit
    n_seeds: int      # distinct groups (seeds) among them: the bootstrap's sample size
    n_excluded: int   # points left out: x or y <= 0 or non-finite
    stderr: float     # bootstrap standard deviation of the exponent, times sqrt(G / (G - 1))
    level: float
    n_boot: int
    ci_method: str


CI_METHODS = ("t", "expanded", "percentile")


def power_law_fit(x: np.ndarray, y: np.ndarray, *, groups: np.ndarray | None = None,
                  n_boot: int = 1000, level: float = 0.95, ci: str = "t",
                  seed: int = 0) -> Fit:
    """Least-squares fit of log y = log C + alpha log x, with a bootstrap over groups.

    x, y: (N,) positive values (others are left out and counted in n_excluded); groups: (N,)
    the seed of each point (None: every point its own group). Each of n_boot resamples draws
    G group ids with replacement (G = number of groups), takes all points of the drawn groups
    (a group drawn k times counts k times) and refits. Intervals, at `level`:

      't'           alpha +- t_{G-1} * s, s = sd of the resampled alphas * sqrt(G / (G - 1))
                    (bootstrap standard error, small-sample corrected; the default)
      'expanded'    percentiles of the resampled alphas at levels widened so that the
                    normal quantile equals sqrt(G / (G - 1)) t_{G-1} (Hesterberg 2015)
      'percentile'  plain percentiles of the resampled alphas

    In simulations (4 widths, a random slope per seed plus independent noise, 400 datasets
    per case, 400 resamples), the 95% 't' interval covered the true exponent 93-96% of the
    time for 3 to 32 seeds; 'expanded' 71-76% with 3 seeds, 86-88% with 4, about 94% from
    8 on; 'percentile' 69-80% with 3-4 seeds, 89% with 8, 92-94% with 16-32 (the bootstrap
    of G seeds is too narrow by sqrt((G - 1) / G) and cannot reach beyond the extreme
    seeds). With few seeds, prefer 't' and read every interval with care.
    Resamples whose points all share one x are dropped. Deterministic for a given `seed`.
    """
    if ci not in CI_METHODS:
        raise ValueError(f"ci: unknown method {ci!r}; allowed: {', '.join(CI_METHODS)}")
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly, g = np.log(x[ok]), np.log(y[ok]), groups[ok]
    nan = math.nan
    n_seeds = len(np.unique(g)) if len(g) else 0
    base = dict(n_runs=int(ok.sum()), n_seeds=n_seeds, n_excluded=int((~ok).sum()),
                level=level, n_boot=n_boot, ci_method=ci)
    if len(np.unique(lx)) < 2:
        return Fit(nan, nan, nan, nan, stderr=nan, **base)
    slope, intercept = np.polyfit(lx, ly, 1)
    lo = hi = se = nan
    if n_seeds >= 2 and n_boot > 0:
        boot = _bootstrap_slopes(lx, ly, g, n_boot, seed)
        lo, hi, se = _interval(slope, boot, n_seeds, level, ci)
    return Fit(float(slope), float(np.exp(intercept)), lo, hi, stderr=se, **base)


def _bootstrap_slopes(lx: np.ndarray, ly: np.ndarray, g: np.ndarray, n_boot: int,
                      seed: int) -> np.ndarray:
    """(n_boot,) least-squares slopes of the group-resampled data (NaN if degenerate)."""
    _, codes = np.unique(g, return_inverse=True)
    G = codes.max() + 1
    lx, ly = lx - lx.mean(), ly - ly.mean()
    # Per-group sufficient statistics (G, 5): a resample's sums are counts @ stats.
    stats = np.stack([np.bincount(codes, w, minlength=G)
                      for w in (np.ones_like(lx), lx, ly, lx * lx, lx * ly)], axis=1)
    counts = np.random.default_rng(seed).multinomial(G, np.full(G, 1.0 / G), size=n_boot)
    s0, sx, sy, sxx, sxy = (counts @ stats).T
    var = s0 * sxx - sx * sx
    degenerate = var <= 1e-12 * s0 * s0 * max(np.var(lx), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(degenerate, np.nan, (s0 * sxy - sx * sy) / var)


def _interval(slope: float, boot: np.ndarray, G: int, level: float,
              ci: str) -> tuple[float, float, float]:
    """(lo, hi, standard error) of the `ci` interval from the (n_boot,) resampled slopes."""
    boot = boot[np.isfinite(boot)]
    if len(boot) < 2:
        return math.nan, math.nan, math.nan
    alpha = 1.0 - level
    inflate = math.sqrt(G / (G - 1))
    t = float(special.stdtrit(G - 1, 1.0 - alpha / 2))
    se = float(np.std(boot) * inflate)
    if ci == "t":
        return slope - t * se, slope + t * se, se
    if ci == "expanded":
        alpha = 2.0 * float(special.ndtr(-inflate * t))
    lo, hi = np.quantile(boot, [alpha / 2, 1.0 - alpha / 2])
    return float(lo), float(hi), se


def median_interval(values: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                    seed: int = 0) -> tuple[float, float, float]:
    """(median, lo, hi): the median of `values`, one per seed, and its percentile bootstrap
    interval at `level` over the seeds.

    NaN values are left out; +inf may stand for a censored value (above every observed
    one), and then the median or an end of the interval may be +inf. The resamples: one
    (n_boot, k) draw of indices in [0, k) from numpy.random.default_rng(seed), k the number
    of values; each row's median (the mean of the middle two for even k). lo and hi are the
    resampled medians' ceil(n_boot q)-th smallest for q = (1 - level) / 2 and 1 - q (the
    inverted empirical CDF: no interpolation, which +inf would turn into NaN). Fewer than
    two values or n_boot < 1: the
    median and NaN, NaN. Deterministic for a given seed.
    """
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    median = float(np.median(v))
    if len(v) < 2 or n_boot < 1:
        return median, math.nan, math.nan
    draws = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    medians = np.sort(np.median(v[draws], axis=1))
    q = (1.0 - level) / 2.0
    # ceil(n_boot q), rounded first so that 1000 x 0.025 is 25 despite binary fractions.
    lo, hi = (max(math.ceil(round(n_boot * p, 9)), 1) - 1 for p in (q, 1.0 - q))
    return median, float(medians[lo]), float(medians[hi])


def format_prediction(lo: float, hi: float) -> str:
    """'-1/2', or '[-1/2, -1/3]' for an interval; '' for NaN."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ""

    def frac(v):
        for den in (1, 2, 3, 4):
            if abs(v * den - round(v * den)) < 1e-9:
                num = round(v * den)
                return str(num) if den == 1 else f"{num}/{den}"
        return f"{v:.3g}"

    return frac(lo) if lo == hi else f"[{frac(lo)}, {frac(hi)}]"


# ----------------------------------------------------------------------------- fit table

FIT_COLUMNS = ["quantity", "x", "group", *SWEPT_COLUMNS, "layer", "exponent", "ci_low",
               "ci_high", "prefactor", "stderr", "predicted", "predicted_low", "predicted_high",
               "consistent", "n_runs", "n_seeds", "n_excluded", "n_diverged", "level",
               "n_boot", "ci_method"]


def fit_table(per_run: pd.DataFrame, *, x: Sequence[str] | None = None, n_boot: int = 1000,
              level: float = 0.95, ci: str = "t", seed: int = 0) -> pd.DataFrame:
    """One power-law fit per quantity, swept variable and group (module docstring).

    per_run: from `per_run_quantities`. x: the swept variables to fit against (default:
    those of X_VARIABLES, width, n, depth, output_scale, that take two or more values). Columns
    (FIT_COLUMNS): quantity, x, group, the group's settings and layer, exponent, ci_low,
    ci_high, prefactor, stderr, predicted (text), predicted_low, predicted_high, consistent
    (the interval meets the prediction; <NA> without one), n_runs, n_seeds, n_excluded,
    n_diverged, level, n_boot, ci_method.
    """
    names = [v.name for v in X_VARIABLES] if x is None else x
    xs = [v for v in names if per_run.loc[per_run.status == "ok", v].nunique() > 1]
    swept = varying(per_run, SWEPT_COLUMNS)
    multi_layer = per_run.layer.dropna().nunique() > 1
    rows = []
    for quantity in dict.fromkeys(per_run.quantity):
        sub = per_run[per_run.quantity == quantity]
        for xv in xs:
            keys = _group_keys(quantity, xv)
            shown = [k for k in swept if k != xv] + (["layer"] if multi_layer else [])
            for values, grp in sub.groupby(keys, dropna=False, sort=False):
                key = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
                rows.append(_fit_row(grp, quantity, xv, key, group_label(key, shown),
                                     n_boot=n_boot, level=level, ci=ci, seed=seed))
    return _sorted_fits(pd.DataFrame(rows)) if rows else pd.DataFrame(columns=FIT_COLUMNS)


def sweeps_fit_table(per_run: pd.DataFrame, **kw) -> pd.DataFrame:
    """`fit_table` of each sweep of `per_run` (by its SWEEP column, in order of first
    appearance) on its own, with the same options `kw`: columns SWEEP and FIT_COLUMNS; rows
    by quantity and x (the registries' order), then by sweep, then as `fit_table` orders
    them. Each sweep's rows are exactly its own `fit_table`'s."""
    order = list(dict.fromkeys(per_run[SWEEP]))
    tables = [fit_table(per_run[per_run[SWEEP] == s].drop(columns=SWEEP), **kw)
              .assign(**{SWEEP: s}) for s in order]
    fits = pd.concat([t for t in tables if len(t)] or [tables[0]], ignore_index=True)
    fits = fits[[SWEEP, *FIT_COLUMNS]]
    qorder = {q.name: i for i, q in enumerate(QUANTITIES)}
    xorder = {v.name: i for i, v in enumerate(X_VARIABLES)}
    keys = pd.DataFrame({"_q": fits.quantity.map(qorder), "_x": fits.x.map(xorder),
                         "_s": fits[SWEEP].map({s: i for i, s in enumerate(order)})})
    return fits.loc[keys.sort_values(["_q", "_x", "_s"], kind="stable").index].reset_index(
        drop=True)


def _group_keys(quantity: str, x: str) -> list[str]:
    """The columns whose values make a group: the other settings, and the layer."""
    keys = [s for s in SWEPT_COLUMNS if s != x]
    return keys + ["layer"] if QUANTITY_BY_NAME[quantity].per_layer else keys


def _fit_row(grp: pd.DataFrame, quantity: str, x: str, key: dict, label: str,
             **fit_kw) -> dict:
    """One row of the fit table: the fit of the group's non-diverged runs, its prediction."""
    ok = grp[grp.status == "ok"]
    fit = power_law_fit(ok[x].to_numpy(float), ok.value.to_numpy(float),
                        groups=ok.seed.to_numpy(), **fit_kw)
    pred = predicted_exponent(quantity, x, param=str(grp.param.iloc[0]),
                              lr_scaling=grp.lr_scaling.iloc[0],
                              depth=int(grp.depth.iloc[0]) if grp.depth.nunique() == 1 else 0,
                              center_output=bool(grp.center_output.iloc[0]),
                              layer=None if pd.isna(key.get("layer", pd.NA)) else
                              int(key["layer"]), arch=str(grp.arch.iloc[0]))
    p_lo, p_hi = pred if pred else (math.nan, math.nan)
    consistent = pd.NA
    if pred and np.isfinite(fit.ci_low):
        consistent = bool(fit.ci_low <= p_hi + 1e-12 and fit.ci_high >= p_lo - 1e-12)
    row = dict(quantity=quantity, x=x, group=label, **{k: key.get(k, pd.NA) for k in
                                                       (*SWEPT_COLUMNS, "layer")})
    row[x] = pd.NA
    row.update(fit._asdict(), predicted=format_prediction(p_lo, p_hi), predicted_low=p_lo,
               predicted_high=p_hi, consistent=consistent,
               n_diverged=int(grp.run_id[grp.status != "ok"].nunique()))
    return row


def _sorted_fits(fits: pd.DataFrame) -> pd.DataFrame:
    """FIT_COLUMNS, rows in the registries' order of quantities and x, then by settings."""
    fits = fits[FIT_COLUMNS]
    order = {q.name: i for i, q in enumerate(QUANTITIES)}
    xorder = {v.name: i for i, v in enumerate(X_VARIABLES)}
    lr_num = pd.to_numeric(fits.lr_config, errors="coerce").fillna(np.inf)  # 'theory' last
    fits = fits.assign(_q=fits.quantity.map(order), _x=fits.x.map(xorder), _lr=lr_num)
    fits = fits.sort_values(["_q", "_x", "layer", *_setting_order()], kind="stable",
                            na_position="first")
    fits = fits.drop(columns=["_q", "_x", "_lr"]).reset_index(drop=True)
    for col in ("width", "depth", "n", "batch_size", "layer"):
        fits[col] = fits[col].astype("Int64")
    fits["consistent"] = fits["consistent"].astype("boolean")
    return fits


def _setting_order() -> list[str]:
    """The columns `_sorted_fits` sorts a quantity's fits by after the layer: the swept
    settings (SWEPT_COLUMNS, in their order, but digits_task last: a digits sweep's fits
    stay in the order they have always had), the config's lr by its value (_lr; 'theory'
    last) before its text."""
    order = [s for s in SWEPT_COLUMNS if s != "digits_task"] + ["digits_task"]
    return [c for s in order for c in (("_lr", s) if s == "lr_config" else (s,))]


# ----------------------------------------------------------------------------- generalization

BOUND_COLUMNS = ["group", *[s for s in SWEPT_COLUMNS if s not in ("n", "digits_task")],
                 "n_runs", "n_seeds", "n_excluded", "slope", "slope_low", "slope_high",
                 "intercept", "spearman", "below_bound", "level", "n_boot"]
BOUND_QUANTITY = "final_test_error"


def bound_fit_table(per_run: pd.DataFrame, *, n_boot: int = 1000, level: float = 0.95,
                    seed: int = 0) -> pd.DataFrame:
    """The final test error against Arora et al.'s measure sqrt(2 y^T (H^inf)^-1 y / n)
    (runs.arora_bound; THEORY.md section 8), across the training set sizes and the digits
    tasks of each group of the other settings (and width), non-diverged runs with +-1
    labels' test error and a finite measure.

    Columns (BOUND_COLUMNS): the group, its settings, n_runs, n_seeds, n_excluded (runs
    with a non-finite test error or measure), the least-squares line test_error = intercept
    + slope * measure with a seed-bootstrap t interval of the slope (`power_law_fit`'s
    resampling, on the values rather than their logs), Spearman's rank correlation, and
    below_bound, the fraction of runs whose test error is at most the measure (the
    theorem's inequality without its lower-order term). A group none of whose runs has both
    (the measure exists for the mlp only) has no row.
    """
    rows = per_run[(per_run.quantity == BOUND_QUANTITY) & (per_run.status == "ok")]
    if rows.empty or "arora_bound" not in rows:
        return pd.DataFrame(columns=BOUND_COLUMNS)
    keys = [s for s in SWEPT_COLUMNS if s not in ("n", "digits_task")]
    shown = varying(rows, keys)
    out = []
    for values, g in rows.groupby(keys, dropna=False, sort=True):
        key = dict(zip(keys, values))
        ok = np.isfinite(g.value.astype(float)) & np.isfinite(g.arora_bound.astype(float))
        if not ok.any():  # no measure (an arch without an analytic kernel) or no test error
            continue
        x, y, seeds = (g.arora_bound[ok].to_numpy(float), g.value[ok].to_numpy(float),
                       g.seed[ok].to_numpy())
        row = dict(group=group_label(key, shown), **key, n_runs=int(ok.sum()),
                   n_seeds=len(np.unique(seeds)), n_excluded=int((~ok).sum()),
                   slope=math.nan, slope_low=math.nan, slope_high=math.nan,
                   intercept=math.nan, spearman=math.nan, level=level, n_boot=n_boot,
                   below_bound=float(np.mean(y <= x)))
        if len(np.unique(x)) >= 2:
            slope, intercept = np.polyfit(x, y, 1)
            row.update(slope=float(slope), intercept=float(intercept))
            if len(np.unique(y)) >= 2:  # (undefined for a constant test error)
                row["spearman"] = float(stats.spearmanr(x, y).statistic)
            if row["n_seeds"] >= 2 and n_boot > 0:
                boot = _bootstrap_slopes(x, y, seeds, n_boot, seed)
                row["slope_low"], row["slope_high"], _ = _interval(slope, boot,
                                                                   row["n_seeds"], level, "t")
        out.append(row)
    return pd.DataFrame(out, columns=BOUND_COLUMNS)
