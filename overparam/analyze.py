"""Scaling analysis of a sweep: per-run quantities, power-law fits, plots and a report.

    python -m overparam.analyze --results=results/default

writes into results/default/analysis/:

  report.md         the fit table and the figures (relative links), with definitions
  fits.csv          one row per fit: quantity, swept variable, group, exponent, CI, prediction
  per_run.parquet   one row per run x quantity (x layer): the values that were fitted
  figures/*.png     each fitted quantity against the swept variable (log-log, every seed,
                    medians, fit, theory); loss, radius and flip curves over steps

and prints the short fit table. Flags: --results (required), --out (default
RESULTS/analysis), --loss_threshold (1e-3), --tail_fraction (0.5), --n_boot (1000),
--level (0.95), --ci (t|expanded|percentile), --seed (0, of the bootstrap), --plots.
A missing, foreign or corrupted results directory, or a bad flag, exits 2 with one
`error:` line on stderr. From a notebook:

    from overparam import analyze
    q = analyze.per_run_quantities(overparam.load("results/default"))
    fits = analyze.fit_table(q)                  # DataFrame, one fit per row
    print(analyze.format_table(fits))
    analyze.power_law_fit(x, y, groups=seeds)    # -> Fit(exponent, prefactor, ci_low, ...)

Quantities (per run; "layer" ones per run and layer l; t runs over recorded steps):

  max_radius_spectral    max_t ||W_l(t) - W_l(0)||_2
  rel_radius_spectral    max_t ||W_l(t) - W_l(0)||_2 / ||W_l(0)||_2   (needs layers.init_spectral)
  max_radius_rowmax      max_t max_r ||w_r(t) - w_r(0)||_2             (Du et al.'s R')
  final_flip_frac        flip_frac at the last recorded step
  max_flip_frac          max_t flip_frac
  steps_to_zero_error    first recorded step with zero training error (runs.parquet)
  steps_to_loss_threshold  first recorded step with loss <= loss_threshold * loss(0)
                         (loss_threshold is relative to the run's initial loss; default 1e-3)
  convergence_rate       -slope of ln(loss) against step, least squares over the last
                         tail_fraction (default 1/2) of the recorded steps, ignoring losses
                         below rate_floor * loss(0) (default 1e-10: float32 round-off); the
                         loss falls by a factor exp(-rate) per step
  gram_lambda_min_init   lambda_min(H(0)), from steps.gram_lambda_min at step 0
  gram_init_error        ||H(0) - H^inf||_2 (steps.gram_init_error)
  max_gram_change        max_t ||H(t) - H(0)||_2 (steps.gram_change)
  rel_gram_change        max_gram_change / gram_lambda_min_init (scale-free: Du et al.'s
                         argument needs ||H(t) - H(0)||_2 small against lambda_0)

A quantity whose columns are absent or hold no finite value is skipped.

Fits (THEORY.md section 5): for each quantity and each swept variable x among width, n and
depth that takes two or more values, log y = log C + alpha log x by least squares over every
run of a group, a group being one combination of the other swept settings (depth, n, lr,
batch size, loss, optimizer, parameterization; width when x is not width) and the layer.
Diverged runs are left out and counted; values <= 0 or non-finite are left out of the fit
and counted. The confidence interval resamples seeds: seed ids with replacement, all runs of
the drawn seeds, refit (see `power_law_fit`). The predicted exponent is given where THEORY.md
gives one, which is for the width only, and only with the width-stable step size of the
parameterization (constant lr for du and ntk, lr_scaling='inverse_width' for zou and
standard; THEORY.md section 3).
"""

from __future__ import annotations

import dataclasses
import math
import os
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import special

from overparam import store
from overparam.cli import fail, one_line

# Swept settings (config.SWEPT), as the columns of `per_run_quantities` that hold them.
# lr_config is the config's lr as written (the step size of a run, column lr, is
# lr_config / width with lr_scaling='inverse_width'); batch_size is <NA> for full-batch GD.
SETTINGS = ("width", "depth", "n", "lr_config", "batch_size", "loss", "optimizer", "param")
X_VARIABLES = ("width", "n", "depth")
_RUN_COLUMNS = ("run_id", "seed", "status", *SETTINGS, "lr", "lr_scaling", "reduction",
                "momentum", "lambda0")
_X_SYMBOL = {"width": "m", "n": "n", "depth": "L"}
_X_LABEL = {"width": "width m", "n": "training set size n", "depth": "depth L (hidden layers)"}
_X_NAME = {"width": "width m", "n": "training set size n", "depth": "depth L"}
_SHORT = {"lr_config": "lr", "batch_size": "B"}
MAX_PANELS = 12     # panels per figure; further groups are in fits.csv and the table
PRINTED_ROWS = 80   # rows of the table the command line prints


@dataclasses.dataclass(frozen=True)
class Quantity:
    """A per-run quantity: name, figure title, axis label, and whether it is per layer."""

    name: str
    title: str
    label: str
    per_layer: bool


QUANTITIES = (
    Quantity("max_radius_spectral", "Spectral norm of the weight change",
             r"$\max_t\,\|W_l(t)-W_l(0)\|_2$", True),
    Quantity("rel_radius_spectral", "Relative spectral norm of the weight change",
             r"$\max_t\,\|W_l(t)-W_l(0)\|_2\,/\,\|W_l(0)\|_2$", True),
    Quantity("max_radius_rowmax", "Largest movement of one neuron",
             r"$\max_t\,\max_r\,\|w_r(t)-w_r(0)\|_2$", True),
    Quantity("final_flip_frac", "Flipped ReLU patterns at the end of training",
             "fraction of (example, neuron) patterns flipped", True),
    Quantity("max_flip_frac", "Flipped ReLU patterns, largest during training",
             r"$\max_t$ fraction of patterns flipped", True),
    Quantity("steps_to_zero_error", "Steps to zero training error", "steps", False),
    Quantity("steps_to_loss_threshold", "Steps to the loss threshold", "steps", False),
    Quantity("convergence_rate", "Linear convergence rate of the loss",
             r"$-d\,\ln(\mathrm{loss})/dt$ over the tail [1/step]", False),
    Quantity("gram_lambda_min_init", "Smallest eigenvalue of the NTK Gram matrix at init",
             r"$\lambda_{\min}(H(0))$", False),
    Quantity("gram_init_error", "NTK Gram matrix at init against its infinite-width limit",
             r"$\|H(0)-H^\infty\|_2$", False),
    Quantity("max_gram_change", "Change of the NTK Gram matrix during training",
             r"$\max_t\,\|H(t)-H(0)\|_2$", False),
    Quantity("rel_gram_change", "Relative change of the NTK Gram matrix",
             r"$\max_t\,\|H(t)-H(0)\|_2\,/\,\lambda_{\min}(H(0))$", False),
)
QUANTITY = {q.name: q for q in QUANTITIES}


# ----------------------------------------------------------------------------- theory

def width_stable(param: str, lr_scaling: str) -> bool:
    """Whether the step size keeps training in the lazy regime as m grows (THEORY.md sec. 3)."""
    return lr_scaling == ("constant" if param in ("du", "ntk") else "inverse_width")


def predicted_exponent(quantity: str, x: str, *, param: str, lr_scaling: str = "constant",
                       depth: int = 1) -> tuple[float, float] | None:
    """THEORY.md's exponent of `quantity` against `x`, as an interval (lo, hi); None if none.

    Section 5: max row radius and relative spectral radius (du, two-layer: depth 1), spectral
    radius (zou, ntk) and Gram deviations ~ m^-1/2; flip fractions between m^-1/2 and
    m^-1/3 (Du et al.; Allen-Zhu, Li & Song). Section 3: the spectral radius of du's first
    layer is O(1) in m. All but ||H(0) - H^inf|| (a property of the initialization) need
    the width-stable lr. max_gram_change is predicted where H is O(1) in m (du, ntk:
    `theory.gram_scale` = 1); rel_gram_change is scale-free.
    """
    half = (-0.5, -0.5)
    if x != "width":
        return None
    if quantity == "gram_init_error":
        return half
    if not width_stable(param, lr_scaling):
        return None
    if param == "du" and depth != 1 and quantity in ("max_radius_rowmax", "rel_radius_spectral",
                                                      "max_radius_spectral"):
        return None  # THEORY.md's du statements are for the two-layer network
    table = {
        "max_radius_rowmax": {"du": half},
        "rel_radius_spectral": {"du": half},
        "max_radius_spectral": {"du": (0.0, 0.0), "zou": half, "ntk": half},
        "final_flip_frac": dict.fromkeys(("du", "zou", "ntk", "standard"), (-0.5, -1 / 3)),
        "max_flip_frac": dict.fromkeys(("du", "zou", "ntk", "standard"), (-0.5, -1 / 3)),
        "max_gram_change": {"du": half, "ntk": half},
        "rel_gram_change": dict.fromkeys(("du", "zou", "ntk", "standard"), half),
    }
    return table.get(quantity, {}).get(param)


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


# ----------------------------------------------------------------------------- fits

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


# ----------------------------------------------------------------------------- per run

def run_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """runs.parquet -> run_id, seed, status, the swept settings (SETTINGS) and lr, lr_scaling,
    reduction, momentum, lambda0 (those present). lr_config is the config's lr as written
    ('theory' or a number); batch_size is <NA> for full-batch GD (where it equals n)."""
    out = runs.copy()
    spec = out["lr_spec"] if "lr_spec" in out else out["lr_base" if "lr_base" in out else "lr"]
    out["lr_config"] = [_lr_text(v) for v in spec]
    out["batch_size"] = out["batch_size"].astype("Int64").mask(out["optimizer"] == "gd")
    if "lr_scaling" not in out:
        out["lr_scaling"] = "constant"
    return out[[c for c in _RUN_COLUMNS if c in out]].reset_index(drop=True)


def _lr_text(value) -> str:
    """'0.1', '10000', 'theory': the config's lr, numbers written the same way however stored."""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def _layer_quantities(layers: pd.DataFrame) -> pd.DataFrame:
    g = layers.groupby(["run_id", "layer"], sort=True)
    q = pd.DataFrame({"max_radius_spectral": g.radius_spectral.max(),
                      "max_radius_rowmax": g.radius_rowmax.max(),
                      "final_flip_frac": g.flip_frac.last(),  # last non-null: last step
                      "max_flip_frac": g.flip_frac.max()})
    if "init_spectral" in layers:
        q["rel_radius_spectral"] = q.max_radius_spectral / g.init_spectral.first()
    return q


def _run_quantities(runs: pd.DataFrame, steps: pd.DataFrame, *, loss_threshold: float,
                    tail_fraction: float, rate_floor: float) -> pd.DataFrame:
    steps = steps[steps.run_id.isin(runs.run_id)]
    first = steps.groupby("run_id").step.transform("min")
    loss0 = steps.loss.where(steps.step == first).groupby(steps.run_id).transform("max")
    q = pd.DataFrame(index=pd.Index(sorted(runs.run_id), name="run_id"))
    q["steps_to_zero_error"] = (runs.set_index("run_id").steps_to_zero_error
                                .astype("Float64").astype(float))
    below = steps[steps.loss <= loss_threshold * loss0]
    q["steps_to_loss_threshold"] = below.groupby("run_id").step.min().astype(float)
    q["convergence_rate"] = _tail_rates(steps, loss0, tail_fraction, rate_floor)
    if "gram_lambda_min" in steps:
        q["gram_lambda_min_init"] = steps.gram_lambda_min.where(steps.step == first).groupby(
            steps.run_id).max()
    if "gram_init_error" in steps:
        q["gram_init_error"] = steps.groupby("run_id").gram_init_error.first()
    if "gram_change" in steps:
        q["max_gram_change"] = steps.groupby("run_id").gram_change.max()
        if "gram_lambda_min_init" in q:
            q["rel_gram_change"] = q.max_gram_change / q.gram_lambda_min_init
    return q


def _tail_rates(steps: pd.DataFrame, loss0: pd.Series, tail_fraction: float,
                rate_floor: float) -> pd.Series:
    """-slope of ln(loss) vs step over each run's last tail_fraction of recorded steps."""
    lo, hi = (steps.groupby("run_id").step.transform(f) for f in ("min", "max"))
    keep = ((steps.step >= hi - tail_fraction * (hi - lo)) & np.isfinite(steps.loss)
            & (steps.loss > rate_floor * loss0) & (steps.loss > 0))
    t = steps.step[keep].astype(float)
    v = np.log(steps.loss[keep].astype(float))
    frame = pd.DataFrame({"run_id": steps.run_id[keep], "t": t, "v": v, "tt": t * t,
                          "tv": t * v, "one": 1.0})
    s = frame.groupby("run_id")[["one", "t", "v", "tt", "tv"]].sum()
    var = s.one * s.tt - s.t ** 2
    slope = (s.one * s.tv - s.t * s.v) / var.where(var > 0)
    return -slope.where(s.one >= 3)


def per_run_quantities(results: store.Results | str | os.PathLike, *,
                       loss_threshold: float = 1e-3, tail_fraction: float = 0.5,
                       rate_floor: float = 1e-10) -> pd.DataFrame:
    """One row per run x quantity (x layer): the run's settings (`run_settings`), quantity,
    layer (<NA> for per-run quantities) and value. Definitions: the module docstring.

    Diverged runs are included (status 'diverged'; their values use the steps before
    divergence) so that they can be counted; `fit_table` leaves them out. Quantities whose
    columns are absent or hold no finite value for any non-diverged run are skipped.
    """
    r = results if isinstance(results, store.Results) else store.load(results)
    settings = run_settings(r.runs)
    per_layer = _layer_quantities(r.layers).reset_index()
    per_run = _run_quantities(r.runs, r.steps, loss_threshold=loss_threshold,
                              tail_fraction=tail_fraction, rate_floor=rate_floor).reset_index()
    long = pd.concat([
        per_layer.melt(["run_id", "layer"], var_name="quantity", value_name="value"),
        per_run.melt(["run_id"], var_name="quantity", value_name="value").assign(layer=pd.NA),
    ], ignore_index=True)
    long["layer"] = long["layer"].astype("Int64")
    long["value"] = long["value"].astype(float)
    out = settings.merge(long, on="run_id", how="inner")
    ok = out.status == "ok"
    present = set(out.quantity[ok & np.isfinite(out.value)])
    order = {q.name: i for i, q in enumerate(QUANTITIES)}
    out = out[out.quantity.isin(present)]
    out = out.assign(_q=out.quantity.map(order)).sort_values(
        ["_q", "layer", *[c for c in SETTINGS if c != "lr_config"], "lr_config", "seed"],
        na_position="first", kind="stable")
    return out.drop(columns="_q").reset_index(drop=True)


# ----------------------------------------------------------------------------- fit table

def _varying(frame: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    return [c for c in cols if c in frame and frame[c].nunique(dropna=False) > 1]


def group_label(keys: dict, varying: Sequence[str]) -> str:
    """'depth=2, lr=0.1, layer=1' from the group's values of the varying settings
    (a missing batch size is GD's full batch)."""
    parts = ["full batch" if k == "batch_size" and pd.isna(keys[k])
             else f"{_SHORT.get(k, k)}={keys[k]}" for k in varying if k in keys]
    return ", ".join(parts) or "all"


def _group_keys(per_run: pd.DataFrame, quantity: str, x: str) -> list[str]:
    keys = [s for s in SETTINGS if s != x and s in per_run]
    return keys + ["layer"] if QUANTITY[quantity].per_layer else keys


def fit_table(per_run: pd.DataFrame, *, x: Sequence[str] | None = None, n_boot: int = 1000,
              level: float = 0.95, ci: str = "t", seed: int = 0) -> pd.DataFrame:
    """One power-law fit per quantity, swept variable and group (module docstring).

    per_run: from `per_run_quantities`. x: the swept variables to fit against (default:
    those of width, n, depth that take two or more values). Columns: quantity, x, group,
    the group's settings and layer, exponent, ci_low, ci_high, prefactor, stderr,
    predicted (text), predicted_low, predicted_high, consistent (the interval meets the
    prediction; <NA> without one), n_runs, n_seeds, n_excluded, n_diverged, level, n_boot,
    ci_method.
    """
    xs = [v for v in (X_VARIABLES if x is None else x) if v in per_run
          and per_run.loc[per_run.status == "ok", v].nunique() > 1]
    varying = _varying(per_run, SETTINGS)
    multi_layer = per_run.layer.dropna().nunique() > 1
    rows = []
    for quantity in dict.fromkeys(per_run.quantity):
        sub = per_run[per_run.quantity == quantity]
        for xv in xs:
            keys = _group_keys(sub, quantity, xv)
            shown = [k for k in varying if k != xv] + (["layer"] if multi_layer else [])
            for values, grp in sub.groupby(keys, dropna=False, sort=False):
                key = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
                rows.append(_fit_row(grp, quantity, xv, key, group_label(key, shown),
                                     n_boot=n_boot, level=level, ci=ci, seed=seed))
    return _sorted_fits(pd.DataFrame(rows)) if rows else pd.DataFrame(columns=_FIT_COLUMNS)


_FIT_COLUMNS = ["quantity", "x", "group", *SETTINGS, "layer", "exponent", "ci_low", "ci_high",
                "prefactor", "stderr", "predicted", "predicted_low", "predicted_high",
                "consistent", "n_runs", "n_seeds", "n_excluded", "n_diverged", "level",
                "n_boot", "ci_method"]


def _fit_row(grp: pd.DataFrame, quantity: str, x: str, key: dict, label: str,
             **fit_kw) -> dict:
    ok = grp[grp.status == "ok"]
    fit = power_law_fit(ok[x].to_numpy(float), ok.value.to_numpy(float),
                        groups=ok.seed.to_numpy(), **fit_kw)
    scaling = grp.lr_scaling.iloc[0] if "lr_scaling" in grp else "constant"
    pred = predicted_exponent(quantity, x, param=str(grp.param.iloc[0]), lr_scaling=scaling,
                              depth=int(grp.depth.iloc[0]) if grp.depth.nunique() == 1 else 0)
    p_lo, p_hi = pred if pred else (math.nan, math.nan)
    consistent = pd.NA
    if pred and np.isfinite(fit.ci_low):
        consistent = bool(fit.ci_low <= p_hi + 1e-12 and fit.ci_high >= p_lo - 1e-12)
    row = dict(quantity=quantity, x=x, group=label, **{k: key.get(k, pd.NA) for k in
                                                       (*SETTINGS, "layer")})
    row[x] = pd.NA
    row.update(fit._asdict(), predicted=format_prediction(p_lo, p_hi), predicted_low=p_lo,
               predicted_high=p_hi, consistent=consistent,
               n_diverged=int(grp.run_id[grp.status != "ok"].nunique()))
    return row


def _sorted_fits(fits: pd.DataFrame) -> pd.DataFrame:
    fits = fits[_FIT_COLUMNS]
    order = {q.name: i for i, q in enumerate(QUANTITIES)}
    xorder = {v: i for i, v in enumerate(X_VARIABLES)}
    lr_num = pd.to_numeric(fits.lr_config, errors="coerce").fillna(np.inf)  # 'theory' last
    fits = fits.assign(_q=fits.quantity.map(order), _x=fits.x.map(xorder), _lr=lr_num)
    cols = ["_q", "_x", "layer", "width", "depth", "n", "_lr", "lr_config", "batch_size",
            "loss", "optimizer", "param"]
    fits = fits.sort_values(cols, kind="stable", na_position="first")
    fits = fits.drop(columns=["_q", "_x", "_lr"]).reset_index(drop=True)
    for col in ("width", "depth", "n", "batch_size", "layer"):
        fits[col] = fits[col].astype("Int64")
    fits["consistent"] = fits["consistent"].astype("boolean")
    return fits


# ----------------------------------------------------------------------------- tables

def _exponent_text(row) -> str:
    if not np.isfinite(row.exponent):
        return "-"
    if not np.isfinite(row.ci_low):
        return f"{row.exponent:+.3f}"
    return f"{row.exponent:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"


def _table_rows(fits: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    level = int(round(100 * fits.level.iloc[0])) if len(fits) else 95
    header = ["quantity", "vs", "group", f"exponent [{level}% CI]", "predicted", "runs",
              "excluded", "diverged"]
    rows = [[r.quantity, r.x, r.group, _exponent_text(r), r.predicted or "-", str(r.n_runs),
             str(r.n_excluded), str(r.n_diverged)] for r in fits.itertuples()]
    return header, rows


def format_table(fits: pd.DataFrame, *, max_rows: int | None = None) -> str:
    """The short printed table: quantity, vs, group, exponent [CI], predicted, runs,
    excluded (values <= 0 or non-finite), diverged; at most max_rows rows (None: all)."""
    if fits.empty:
        return "no fits: no swept width, n or depth with two or more values and finite results"
    more = 0 if max_rows is None else max(len(fits) - max_rows, 0)
    header, rows = _table_rows(fits.iloc[: len(fits) - more])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(header)]
    right = {3, 5, 6, 7}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    text = "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
    return text + (f"\n... and {more} more rows (all in fits.csv and report.md)" if more else "")


def markdown_table(fits: pd.DataFrame) -> str:
    """The fit table as GitHub Markdown, with a column saying whether the CI meets theory."""
    header, rows = _table_rows(fits)
    header = header[:5] + ["meets theory"] + header[5:]
    yes = {True: "yes", False: "**no**"}
    rows = [r[:5] + [yes.get(c, "-") if c is not pd.NA else "-"] + r[5:]
            for r, c in zip(rows, fits.consistent)]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


# ----------------------------------------------------------------------------- plots

def _figure(n_panels: int, *, width: float = 4.6, height: float = 3.6):
    from matplotlib.figure import Figure  # no pyplot: no global state, no windows

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
    parts = [f"{_SHORT.get(k, k)}={frame[k].iloc[0]}" for k in order
             if k in frame and k not in exclude and frame[k].nunique(dropna=False) == 1
             and not pd.isna(frame[k].iloc[0])]
    seeds = frame.seed.nunique() if "seed" in frame else 0
    return ", ".join(parts + ([f"{seeds} seeds"] if seeds else []))


def _power(symbol: str, exponent: float, digits: int = 3) -> str:
    return rf"${symbol}^{{{exponent:.{digits}f}}}$".replace("-", "\N{MINUS SIGN}")


def plot_fit(per_run: pd.DataFrame, fits: pd.DataFrame, quantity: str, x: str = "width", *,
             ylabel: str | None = None):
    """matplotlib Figure of `quantity` against `x` on log-log axes, one panel per group of
    the other swept settings (layers in colors): every run (small points, one per seed), the
    median over seeds, the fitted power law (exponent and CI in the legend) and the theory's
    slope (gray, dashed; dotted for the other end of an interval), drawn through the fit at
    the geometric mean of x. per_run: `per_run_quantities`; fits: `fit_table`."""
    q = QUANTITY[quantity]
    sub = per_run[per_run.quantity == quantity]
    fq = fits[(fits.quantity == quantity) & (fits.x == x)]
    shown = [k for k in _varying(sub, SETTINGS) if k != x]
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
            notes.append(_plot_fit_layer(ax, g, fit, x, f"C{i % 10}",
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
        ax.set_xlabel(_X_LABEL[x])
        ax.set_ylabel(ylabel or q.label)
        ax.grid(True, which="both", alpha=0.25)
        handles = dict(zip(*reversed(ax.get_legend_handles_labels())))  # one entry per label
        ax.legend(handles.values(), handles.keys(), fontsize=6.5, loc="best")
    _suptitle(fig, f"{q.title} against {_X_NAME[x]}", _constant_label(sub, [x]), len(panels))
    return fig


def _plot_fit_layer(ax, g: pd.DataFrame, fit, x: str, color: str, name: str) -> str:
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
            label=f"{name}fit " + r"$\propto$ " + _power(_X_SYMBOL[x], fit.exponent) + ci)
    _theory_lines(ax, fit, xs, x)
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


def _theory_lines(ax, fit, xs: np.ndarray, x: str) -> None:
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
                label=rf"theory $\propto {_X_SYMBOL[x]}^{{{text}}}$")


def _suptitle(fig, title: str, subtitle: str, n_panels: int) -> None:
    if n_panels > MAX_PANELS:
        subtitle += f" (first {MAX_PANELS} of {n_panels} groups shown; all in fits.csv)"
    chars = int(12.5 * fig.get_figwidth())
    text = "\n".join(textwrap.wrap(title, chars) + textwrap.wrap(subtitle, int(1.2 * chars)))
    fig.suptitle(text, fontsize=10)


CURVES = {  # column -> (table, title, axis label)
    "loss": ("steps", "Training loss", "training loss"),
    "radius_rowmax": ("layers", "Largest movement of one neuron",
                      r"$\max_r\,\|w_r(t)-w_r(0)\|_2$"),
    "radius_spectral": ("layers", "Spectral norm of the weight change",
                        r"$\|W_l(t)-W_l(0)\|_2$"),
    "flip_frac": ("layers", "Flipped ReLU patterns", "fraction of patterns flipped"),
    "gram_change": ("steps", "Change of the NTK Gram matrix", r"$\|H(t)-H(0)\|_2$"),
}


def plot_curves(results: store.Results, column: str, *, x: str = "width"):
    """matplotlib Figure of `column` (of steps or layers, see CURVES) against the step, log
    y: for each value of `x` the median over seeds (line) and the inter-quartile range
    (band); one panel per group of the other swept settings (and layer). Diverged runs and
    values <= 0 (step 0 of a radius) are left out."""
    table, title, label = CURVES[column]
    settings = run_settings(results.runs)
    settings = settings[settings.status == "ok"]
    frame = getattr(results, table)
    frame = frame[["run_id", "step", column] + (["layer"] if table == "layers" else [])]
    frame = frame[np.isfinite(frame[column])].rename(columns={column: "_y"})
    frame = frame.merge(settings, on="run_id")  # (the steps column 'loss' is a setting too)
    shown = [k for k in _varying(settings, SETTINGS) if k != x]
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
            _plot_band(ax, grp[grp[x] == v], color, f"{_X_SYMBOL[x]} = {v:g}")
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_ylabel(label)
        ax.set_title(group_label(key, shown) if shown else "", fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=6.5, loc="best", title="median over seeds, IQR band",
                  title_fontsize=6.5)
    _suptitle(fig, f"{title} during training, per {_X_NAME[x].split(' ')[0]}",
              _constant_label(settings, [x]), len(panels))
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


# ----------------------------------------------------------------------------- report

def rate_vs_theory(per_run: pd.DataFrame) -> pd.DataFrame:
    """Fitted convergence rates against -2 ln(1 - eta lambda_0), the rate of the slowest
    eigendirection of the infinite-width kernel (Arora et al. 2019; THEORY.md section 1),
    for du networks of depth 1 trained by plain GD on the squared loss; eta is the step
    size lr (sum reduction) or lr / n (mean). Needs runs.lambda0; empty otherwise.

    One row per group of the other swept settings and width: group, width, runs, and the
    medians over seeds of rate, theory_rate, ratio = rate / theory_rate, lambda0.
    """
    rates = per_run[(per_run.quantity == "convergence_rate") & (per_run.status == "ok")]
    if not {"lambda0", "reduction"} <= set(rates) or rates.empty:
        return pd.DataFrame()
    momentum = rates["momentum"] if "momentum" in rates else 0.0
    rates = rates[(rates.param == "du") & (rates.depth == 1) & (rates.loss == "squared")
                  & (rates.optimizer == "gd") & (momentum == 0.0)]
    if rates.empty:
        return pd.DataFrame()
    eta = rates.lr / np.where(rates.reduction == "mean", rates.n, 1)
    contraction = 1.0 - eta * rates.lambda0
    theory = -2.0 * np.log(contraction.where(contraction > 0))
    frame = rates.assign(theory_rate=theory, ratio=rates.value / theory)
    shown = [k for k in _varying(per_run, SETTINGS) if k != "width"]
    keys = [k for k in SETTINGS if k != "width"] + ["width"]
    rows = []
    for values, g in frame.groupby(keys, dropna=False, sort=True):
        key = dict(zip(keys, values))
        rows.append(dict(group=group_label(key, shown), width=key["width"], runs=len(g),
                         rate=g.value.median(), theory_rate=g.theory_rate.median(),
                         ratio=g.ratio.median(), lambda0=g.lambda0.median()))
    return pd.DataFrame(rows)


def _markdown(frame: pd.DataFrame) -> str:
    """A small DataFrame as a GitHub Markdown table (floats to 4 significant digits)."""
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _summary(results: store.Results) -> str:
    runs, c = results.runs, results.manifest.get("config", {})
    parts = [f"{len(runs)} networks ({int((runs.status != 'ok').sum())} diverged)",
             f"{runs.seed.nunique()} seeds"]
    parts += [f"{k} {', '.join(map(str, sorted(runs[k].unique())))}"
              for k in ("width", "depth", "n") if k in runs]
    for k in ("loss", "optimizer", "param", "lr", "lr_scaling", "batch_size", "steps", "d",
              "dataset", "labels", "reduction", "dtype"):
        if k in c:
            v = c[k]
            parts.append(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}")
    return "; ".join(parts) + "."


_DEFINITIONS = {
    "max_radius_spectral": "max over recorded steps t of ||W_l(t) - W_l(0)||_2 (layer l).",
    "rel_radius_spectral": "max_t ||W_l(t) - W_l(0)||_2 / ||W_l(0)||_2.",
    "max_radius_rowmax": "max_t max_r ||w_r(t) - w_r(0)||_2 (Du et al.'s R').",
    "final_flip_frac": "fraction of (example, neuron) ReLU patterns of layer l that differ "
                       "from step 0, at the last recorded step.",
    "max_flip_frac": "max over t of the flipped fraction.",
    "steps_to_zero_error": "first recorded step with zero training error (runs that never "
                           "reach it are counted in `excluded`).",
    "steps_to_loss_threshold": "first recorded step with loss <= {loss_threshold:g} x the "
                               "run's loss at step 0 (never reached: `excluded`).",
    "convergence_rate": "-slope of ln(loss) against the step, least squares over the last "
                        "{tail_fraction:g} of the recorded steps, losses below "
                        "{rate_floor:g} x the initial loss left out: loss ~ exp(-rate t).",
    "gram_lambda_min_init": "lambda_min of the empirical NTK Gram matrix H(0).",
    "gram_init_error": "||H(0) / s - H^inf||_2, s the Gram scale of the parameterization.",
    "max_gram_change": "max_t ||H(t) - H(0)||_2 over the steps where H was recorded.",
    "rel_gram_change": "max_t ||H(t) - H(0)||_2 / lambda_min(H(0)).",
}


def write_report(path: Path, results: store.Results, fits: pd.DataFrame,
                 figures: dict[str, list[str]], *, options: dict, skipped: list[str],
                 rates: pd.DataFrame) -> None:
    """report.md: summary, fit table, definitions, figures (links relative to path's
    folder). options: the keyword arguments of `analyze`."""
    level = round(100 * options["level"])
    lines = [f"# Scaling analysis of `{results.path}`", "", _summary(results), "",
             f"Written by `python -m overparam.analyze --results={results.path}`. Beside "
             "this report: `fits.csv` (the table below with each group's settings, "
             "prefactors and standard errors), `per_run.parquet` (the fitted values: one row "
             "per run, quantity and layer), `figures/`.", "",
             "## Power-law fits", "",
             "Each row fits log y = log C + exponent * log x by least squares over every "
             "non-diverged run of the group (all seeds), x being the swept variable (`vs`); "
             "a group is one combination of the other swept settings (and the layer). "
             f"{level}% confidence interval: bootstrap over seeds ({options['n_boot']} "
             "resamples of the seed ids with replacement, all runs of each drawn seed, "
             f"refit; interval '{options['ci']}', rng seed {options['seed']}; see "
             "`overparam.analyze.power_law_fit`). `excluded`: values <= 0 or non-finite, "
             "left out of the fit; `diverged`: runs left out. `predicted`: THEORY.md "
             "section 5 (an interval for flip fractions), for the width and the "
             "width-stable step size only; `meets theory`: the interval meets it.", "",
             markdown_table(fits) if not fits.empty else format_table(fits), ""]
    widths = results.runs.width[results.runs.status == "ok"]
    if len(widths) and widths.nunique() > 1 and widths.max() < 32 * widths.min():
        lines += [f"Note: the widths span {widths.max() / widths.min():g}x "
                  f"({widths.min()} to {widths.max()}); THEORY.md section 5 asks for at "
                  "least 32x before reading an exponent against the theory.", ""]
    lines += ["## Definitions", ""]
    lines += [f"- `{q.name}`: {_DEFINITIONS[q.name].format(**options)}" for q in QUANTITIES
              if q.name not in skipped]
    if skipped:
        lines += ["", "Not in these results (columns absent, or no finite value): "
                  + ", ".join(f"`{s}`" for s in skipped) + "."]
    if not rates.empty:
        lines += ["", "## Linear convergence against the kernel", "",
                  "Median over seeds of the fitted rate -d ln(loss)/dt and of "
                  "-2 ln(1 - eta lambda_0), lambda_0 = lambda_min(H^inf) of each run's "
                  "training set: the rate of the slowest eigendirection (THEORY.md section "
                  "1). A ratio >= 1 converges at least as fast as that.", "",
                  _markdown(rates)]
    for title, names in figures.items():
        if names:
            lines += ["", f"## {title}", ""]
            lines += [f"![{Path(n).stem}]({n})\n" for n in names]
    text = "\n".join(lines).rstrip() + "\n"
    store.atomic_write(path, lambda tmp: tmp.write_text(text))


def _save(fig, path: Path) -> None:
    store.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=130))


def write_figures(out: Path, results: store.Results, per_run: pd.DataFrame,
                  fits: pd.DataFrame, *, loss_threshold: float) -> dict[str, list[str]]:
    """figures/*.png under `out`: one per fitted quantity and swept variable, and the
    training curves. Removes figures of an earlier analysis that no longer apply.
    Returns {section title: [paths relative to out]}."""
    fig_dir = out / "figures"
    written: dict[str, list[str]] = {"Scaling": [], "Training curves": []}
    labels = {"steps_to_loss_threshold": f"steps to loss $\\leq$ {loss_threshold:g} "
                                         r"$\times$ initial loss"}
    for quantity, x in dict.fromkeys(zip(fits.quantity, fits.x)):
        if not np.isfinite(fits.exponent[(fits.quantity == quantity) & (fits.x == x)]).any():
            continue
        name = f"fit_{quantity}_vs_{x}.png"
        _save(plot_fit(per_run, fits, quantity, x, ylabel=labels.get(quantity)),
              fig_dir / name)
        written["Scaling"].append(f"figures/{name}")
    ok_ids = results.runs.run_id[results.runs.status == "ok"]
    for column, (table, _, _) in CURVES.items():
        frame = getattr(results, table)
        if column not in frame:
            continue
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


def analyze(path: str | os.PathLike, *, out: str | os.PathLike | None = None,
            loss_threshold: float = 1e-3, tail_fraction: float = 0.5,
            rate_floor: float = 1e-10, n_boot: int = 1000, level: float = 0.95,
            ci: str = "t", seed: int = 0, plots: bool = True) -> pd.DataFrame:
    """Analyzes the sweep in `path` and writes into `out` (default path/analysis):
    report.md, fits.csv, per_run.parquet and figures/*.png (unless plots=False). Returns
    the fit table (`fit_table`). Arguments: `per_run_quantities` and `power_law_fit`.

    Raises overparam.ResultsError for a missing, foreign or corrupted results directory.
    """
    results = store.load(path)
    out = Path(path) / "analysis" if out is None else Path(out)
    per_run = per_run_quantities(results, loss_threshold=loss_threshold,
                                 tail_fraction=tail_fraction, rate_floor=rate_floor)
    fits = fit_table(per_run, n_boot=n_boot, level=level, ci=ci, seed=seed)
    store.write_parquet(per_run, out / "per_run.parquet")
    store.atomic_write(out / "fits.csv", lambda tmp: fits.to_csv(tmp, index=False))
    figures = (write_figures(out, results, per_run, fits, loss_threshold=loss_threshold)
               if plots else {})
    skipped = [q.name for q in QUANTITIES if q.name not in set(per_run.quantity)]
    options = dict(loss_threshold=loss_threshold, tail_fraction=tail_fraction,
                   rate_floor=rate_floor, n_boot=n_boot, level=level, ci=ci, seed=seed)
    write_report(out / "report.md", results, fits, figures, options=options, skipped=skipped,
                 rates=rate_vs_theory(per_run))
    return fits


# ----------------------------------------------------------------------------- command line

def _define_flags():
    from absl import flags

    f = flags
    return dict(
        results=f.DEFINE_string("results", None, "Results directory of a finished sweep."),
        out=f.DEFINE_string("out", None, "Output directory (default RESULTS/analysis)."),
        loss_threshold=f.DEFINE_float(
            "loss_threshold", 1e-3, "steps_to_loss_threshold: first step with loss <= this "
            "times the run's initial loss."),
        tail_fraction=f.DEFINE_float(
            "tail_fraction", 0.5, "convergence_rate: fit ln(loss) over this last fraction of "
            "the recorded steps."),
        n_boot=f.DEFINE_integer("n_boot", 1000, "Bootstrap resamples of the seeds per fit."),
        level=f.DEFINE_float("level", 0.95, "Confidence level of the intervals."),
        ci=f.DEFINE_enum("ci", "t", list(CI_METHODS), "Bootstrap interval (see "
                         "overparam.analyze.power_law_fit)."),
        seed=f.DEFINE_integer("seed", 0, "Seed of the bootstrap's random draws."),
        plots=f.DEFINE_bool("plots", True, "Write the figures."),
    )


def _check_flags(v: dict) -> None:
    if not v["results"]:
        fail("--results: required, e.g. --results=results/default")
    if not v["loss_threshold"] > 0:
        fail(f"--loss_threshold: must be > 0, got {v['loss_threshold']}")
    if not 0 < v["tail_fraction"] <= 1:
        fail(f"--tail_fraction: must be in (0, 1], got {v['tail_fraction']}")
    if v["n_boot"] < 1:
        fail(f"--n_boot: must be >= 1, got {v['n_boot']}")
    if not 0 < v["level"] < 1:
        fail(f"--level: must be in (0, 1), got {v['level']}")


def run(argv: list[str] | None = None) -> None:
    """Entry point of `python -m overparam.analyze`."""
    from absl import app, flags

    holders = _define_flags()

    def parse(args):
        try:
            rest = flags.FLAGS(args)
        except flags.Error as e:
            fail(one_line(e))
        if len(rest) > 1:
            fail(f"unexpected argument {rest[1]!r}; give flags as --name=value, e.g. "
                 "--results=results/default")
        return rest

    def main(_):
        v = {k: h.value for k, h in holders.items()}
        _check_flags(v)
        try:
            fits = analyze(v["results"], out=v["out"],
                           loss_threshold=v["loss_threshold"],
                           tail_fraction=v["tail_fraction"], n_boot=v["n_boot"],
                           level=v["level"], ci=v["ci"], seed=v["seed"], plots=v["plots"])
        except store.ResultsError as e:
            fail(one_line(e))
        except OSError as e:
            fail(f"{e.filename}: {e.strerror}" if e.filename else f"analysis failed: {e}")
        out = Path(v["out"]) if v["out"] else Path(v["results"]) / "analysis"
        print(format_table(fits, max_rows=PRINTED_ROWS))
        print(f"\nreport: {out / 'report.md'}   tables: {out / 'fits.csv'}, "
              f"{out / 'per_run.parquet'}")

    app.run(main, argv=argv, flags_parser=parse)


if __name__ == "__main__":
    run()
