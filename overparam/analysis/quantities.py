"""The quantities of the scaling analysis, the variables they are fitted against, and the
per-run table: one row per run x quantity (x layer) with the run's settings.

Owns the registry QUANTITIES: for each quantity its definition (the text report.md prints),
its labels (figure title, axis label), its predictions (the `overparam.theory` functions that
give its exponent in the width and in the output scale) and how it is computed from the
results' tables; and the registry X_VARIABLES of the variables fits are taken against
(width, n, depth, output scale). The fit table, the figures and the report read both, and
never define a quantity themselves.
Reads the results' tables; never fits, plots or writes a file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from overparam import schema, store, theory

SWEEP = "sweep"  # the column naming the sweep when several are analyzed together

# Swept settings (config.SWEPT), as the columns of `per_run_quantities` that hold them.
# lr_config is the config's lr as written (the step size of a run, column lr, is
# lr_config / width with lr_scaling='inverse_width'); batch_size is <NA> for full-batch GD.
SETTINGS = ("width", "depth", "n", "digits_task", "lr_config", "output_scale", "batch_size",
            "loss", "optimizer", "arch", "param")
BUILTIN_ARCHS = ("mlp", "cnn", "resnet")  # the networks the theory's predictions are for
RUN_COLUMNS = ("run_id", "seed", "status", *SETTINGS, "lr", "lr_scaling", "reduction",
               "momentum", "center_output", "lambda0", "arora_bound")
SHORT_NAMES = {"lr_config": "lr", "batch_size": "B", "output_scale": "α",  # in labels
               "digits_task": "task"}
SCHEMAS = {"runs": schema.RUNS, "steps": schema.STEPS, "layers": schema.LAYERS}


# ----------------------------------------------------------------------------- x variables

@dataclasses.dataclass(frozen=True)
class XVariable:
    """A swept variable that quantities are fitted against: its column, its symbol in
    formulas ('m' in m^-1/2), its axis label and its name in figure titles."""

    name: str
    symbol: str
    axis: str
    title: str


X_VARIABLES = (
    XVariable("width", "m", "width m", "width m"),
    XVariable("n", "n", "training set size n", "training set size n"),
    XVariable("depth", "L", "depth L (hidden layers)", "depth L"),
    XVariable("output_scale", "α", "output scale α", "output scale α"),
)
X_VARIABLE = {v.name: v for v in X_VARIABLES}


# ----------------------------------------------------------------------------- quantities

@dataclasses.dataclass(frozen=True)
class QuantityOptions:
    """The parameters of the quantities' definitions (the analysis's flags of the same names)."""

    loss_threshold: float = 1e-3  # steps_to_loss_threshold: loss <= this x loss(0)
    tail_fraction: float = 0.5    # convergence_rate: over this last fraction of the steps
    rate_floor: float = 1e-10     # convergence_rate: losses below this x loss(0) left out
    eos_fraction: float = 0.95    # steps_to_eos: sharpness >= this x 2 / eta (1.9 / eta)


class Tables(NamedTuple):
    """What a quantity is computed from: runs.parquet, the steps of its runs (with `first`:
    the run's first recorded step, and `loss0`: the run's loss there) and the layers."""

    runs: pd.DataFrame
    steps: pd.DataFrame
    layers: pd.DataFrame


Interval = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Quantity:
    """One per-run quantity (per run and layer if per_layer).

    definition: the report's text, and label: the figures' axis label, are str.format
    templates over the fields of QuantityOptions (LaTeX braces doubled). columns: the
    'table.column's it reads, each a column of the results schema (SCHEMAS);
    compute(tables, options) -> its values, a Series indexed by run_id, or by (run_id,
    layer) if per_layer. prediction: the theory function of its exponent in the width,
    (param, *, lr_scaling, depth, layer) -> Interval | None; None if the theory gives none.
    scale_prediction: likewise in the output scale alpha, (param, *, center_output) ->
    Interval | None.
    censored: for a quantity whose value is missing (NaN) when the run never got there in
    its recorded steps (a right-censored time), what that means, e.g. 'never reached the
    loss threshold'; '' where a missing value is just undefined.
    """

    name: str
    per_layer: bool
    title: str
    label: str
    definition: str
    columns: tuple[str, ...]
    compute: Callable[[Tables, QuantityOptions], pd.Series]
    prediction: Callable[..., Interval | None] | None = None
    censored: str = ""
    scale_prediction: Callable[..., Interval | None] | None = None

    def __post_init__(self):
        for table, column in (c.split(".") for c in self.columns):
            if column not in SCHEMAS[table].names:
                raise ValueError(f"{self.name}: {table}.{column} is not in overparam.schema")

    def text(self, field: str, options: QuantityOptions) -> str:
        """The label or definition with the options filled in."""
        return getattr(self, field).format(**dataclasses.asdict(options))


def _by_layer(layers: pd.DataFrame):
    return layers.groupby(["run_id", "layer"], sort=True)


def _layer_stat(column: str, how: str) -> Callable[[Tables, QuantityOptions], pd.Series]:
    """compute: (run_id, layer) -> `how` ('max'; 'last': the last non-null, the last
    recorded step) of layers.column over the steps."""
    return lambda t, o: getattr(_by_layer(t.layers)[column], how)()


def _rel_radius_spectral(t: Tables, o: QuantityOptions) -> pd.Series:
    g = _by_layer(t.layers)
    return g.radius_spectral.max() / g.init_spectral.first()


def _steps_to_zero_error(t: Tables, o: QuantityOptions) -> pd.Series:
    return t.runs.set_index("run_id").steps_to_zero_error.astype("Float64").astype(float)


def _steps_to_loss_threshold(t: Tables, o: QuantityOptions) -> pd.Series:
    below = t.steps[t.steps.loss <= o.loss_threshold * t.steps.loss0]
    return below.groupby("run_id").step.min().astype(float)


def _convergence_rate(t: Tables, o: QuantityOptions) -> pd.Series:
    """-slope of ln(loss) vs step over each run's last tail_fraction of recorded steps."""
    s = t.steps
    lo, hi = (s.groupby("run_id").step.transform(f) for f in ("min", "max"))
    keep = ((s.step >= hi - o.tail_fraction * (hi - lo)) & np.isfinite(s.loss)
            & (s.loss > o.rate_floor * s.loss0) & (s.loss > 0))
    step = s.step[keep].astype(float)
    log_loss = np.log(s.loss[keep].astype(float))
    frame = pd.DataFrame({"run_id": s.run_id[keep], "t": step, "v": log_loss,
                          "tt": step * step, "tv": step * log_loss, "one": 1.0})
    sums = frame.groupby("run_id")[["one", "t", "v", "tt", "tv"]].sum()
    var = sums.one * sums.tt - sums.t ** 2
    slope = (sums.one * sums.tv - sums.t * sums.v) / var.where(var > 0)
    return -slope.where(sums.one >= 3)


def _last(column: str) -> Callable[[Tables, QuantityOptions], pd.Series]:
    """compute: run_id -> the last non-null value of steps.column (the last recorded step)."""
    return lambda t, o: t.steps.groupby("run_id")[column].last()


def _gram_lambda_min_init(t: Tables, o: QuantityOptions) -> pd.Series:
    return t.steps.gram_lambda_min.where(t.steps.first).groupby(t.steps.run_id).max()


def _gram_init_error(t: Tables, o: QuantityOptions) -> pd.Series:
    return t.steps.groupby("run_id").gram_init_error.first()


def _max_gram_change(t: Tables, o: QuantityOptions) -> pd.Series:
    return t.steps.groupby("run_id").gram_change.max()


def _rel_gram_change(t: Tables, o: QuantityOptions) -> pd.Series:
    return _max_gram_change(t, o) / _gram_lambda_min_init(t, o)


def _at_first_step(column: str) -> Callable[[Tables, QuantityOptions], pd.Series]:
    """compute: run_id -> `column` at the run's first recorded step."""
    return lambda t, o: t.steps[column].where(t.steps.first).groupby(t.steps.run_id).max()


def _gram_change_rel_norm(t: Tables, o: QuantityOptions) -> pd.Series:
    return _max_gram_change(t, o) / _at_first_step("gram_lambda_max")(t, o)


def _step_size(t: Tables) -> pd.Series:
    """Each step row's run's step size eta (runs.lr), aligned with t.steps."""
    return t.steps.run_id.map(t.runs.set_index("run_id").lr).astype(float)


def _max_sharpness_ratio(t: Tables, o: QuantityOptions) -> pd.Series:
    ratio = t.steps.sharpness * _step_size(t) / 2.0
    return ratio.groupby(t.steps.run_id).max()


def _steps_to_eos(t: Tables, o: QuantityOptions) -> pd.Series:
    """First recorded step with sharpness >= eos_fraction x 2 / eta; NaN (censored) if none."""
    at_edge = t.steps.sharpness >= o.eos_fraction * 2.0 / _step_size(t)
    steps = t.steps.step[at_edge].groupby(t.steps.run_id[at_edge]).min().astype(float)
    return steps.reindex(t.steps.run_id[t.steps.sharpness.notna()].unique())


QUANTITIES = (
    Quantity(
        "max_radius_spectral", per_layer=True,
        title="Spectral norm of the weight change",
        label=r"$\max_t\,\|W_l(t)-W_l(0)\|_2$",
        definition="max over recorded steps t of ||W_l(t) - W_l(0)||_2 (layer l).",
        columns=("layers.radius_spectral",), compute=_layer_stat("radius_spectral", "max"),
        prediction=theory.spectral_radius_exponent,
        scale_prediction=theory.output_scale_exponent),
    Quantity(
        "rel_radius_spectral", per_layer=True,
        title="Relative spectral norm of the weight change",
        label=r"$\max_t\,\|W_l(t)-W_l(0)\|_2\,/\,\|W_l(0)\|_2$",
        definition="max_t ||W_l(t) - W_l(0)||_2 / ||W_l(0)||_2.",
        columns=("layers.radius_spectral", "layers.init_spectral"),
        compute=_rel_radius_spectral, prediction=theory.relative_radius_exponent,
        scale_prediction=theory.output_scale_exponent),
    Quantity(
        "max_radius_operator", per_layer=True,
        title="Operator norm of a convolution's change",
        label=r"$\max_t\,\|W_l(t)-W_l(0)\|_{{\mathrm{{op}}}}$",
        definition="max over recorded steps t of the operator norm of the convolution by "
                   "W_l(t) - W_l(0) on the layer's input (convolutions only).",
        columns=("layers.radius_operator",), compute=_layer_stat("radius_operator", "max"),
        prediction=theory.spectral_radius_exponent,
        scale_prediction=theory.output_scale_exponent),
    Quantity(
        "max_radius_rowmax", per_layer=True,
        title="Largest movement of one neuron",
        label=r"$\max_t\,\max_r\,\|w_r(t)-w_r(0)\|_2$",
        definition="max_t max_r ||w_r(t) - w_r(0)||_2 (Du et al.'s R').",
        columns=("layers.radius_rowmax",), compute=_layer_stat("radius_rowmax", "max"),
        prediction=theory.row_radius_exponent, scale_prediction=theory.output_scale_exponent),
    Quantity(
        "final_flip_frac", per_layer=True,
        title="Flipped ReLU patterns at the end of training",
        label="fraction of (example, neuron) patterns flipped",
        definition="fraction of (example, neuron) ReLU patterns of layer l that differ from "
                   "step 0, at the last recorded step.",
        columns=("layers.flip_frac",), compute=_layer_stat("flip_frac", "last"),
        prediction=theory.flip_exponent, scale_prediction=theory.output_scale_exponent),
    Quantity(
        "max_flip_frac", per_layer=True,
        title="Flipped ReLU patterns, largest during training",
        label=r"$\max_t$ fraction of patterns flipped",
        definition="max over t of the flipped fraction.",
        columns=("layers.flip_frac",), compute=_layer_stat("flip_frac", "max"),
        prediction=theory.flip_exponent, scale_prediction=theory.output_scale_exponent),
    Quantity(
        "steps_to_zero_error", per_layer=False,
        title="Steps to zero training error",
        label="steps",
        definition="first recorded step with zero training error (runs that never reach it "
                   "are counted in `excluded`).",
        columns=("runs.steps_to_zero_error",), compute=_steps_to_zero_error,
        censored="never reached zero training error"),
    Quantity(
        "steps_to_loss_threshold", per_layer=False,
        title="Steps to the loss threshold",
        label=r"steps to loss $\leq$ {loss_threshold:g} $\times$ initial loss",
        definition="first recorded step with loss <= {loss_threshold:g} x the run's loss at "
                   "step 0 (never reached: `excluded`).",
        columns=("steps.loss",), compute=_steps_to_loss_threshold,
        censored="never reached the loss threshold"),
    Quantity(
        "convergence_rate", per_layer=False,
        title="Linear convergence rate of the loss",
        label=r"$-d\,\ln(\mathrm{{loss}})/dt$ over the tail [1/step]",
        definition="-slope of ln(loss) against the step, least squares over the last "
                   "{tail_fraction:g} of the recorded steps, losses below {rate_floor:g} x the "
                   "initial loss left out: loss ~ exp(-rate t).",
        columns=("steps.loss",), compute=_convergence_rate),
    Quantity(
        "final_test_error", per_layer=False,
        title="Test error at the end of training",
        label="test error",
        definition="test_error at the last recorded step: the 0-1 error on the held-out test "
                   "points (+-1 labels), or their fraction with |f - y| > regression_tol.",
        columns=("steps.test_error",), compute=_last("test_error")),
    Quantity(
        "final_test_loss", per_layer=False,
        title="Test loss at the end of training",
        label="test loss",
        definition="test_loss at the last recorded step: the loss on the held-out test "
                   "points, in the units of the training loss.",
        columns=("steps.test_loss",), compute=_last("test_loss")),
    Quantity(
        "gram_lambda_min_init", per_layer=False,
        title="Smallest eigenvalue of the NTK Gram matrix at init",
        label=r"$\lambda_{{\min}}(H(0))$",
        definition="lambda_min of the empirical NTK Gram matrix H(0).",
        columns=("steps.gram_lambda_min",), compute=_gram_lambda_min_init),
    Quantity(
        "gram_init_error", per_layer=False,
        title="NTK Gram matrix at init against its infinite-width limit",
        label=r"$\|H(0)-H^\infty\|_2$",
        definition="||H(0) / s - H^inf||_2, s the Gram scale of the parameterization.",
        columns=("steps.gram_init_error",), compute=_gram_init_error,
        prediction=theory.gram_init_error_exponent),
    Quantity(
        "max_gram_change", per_layer=False,
        title="Change of the NTK Gram matrix during training",
        label=r"$\max_t\,\|H(t)-H(0)\|_2$",
        definition="max_t ||H(t) - H(0)||_2 over the steps where H was recorded.",
        columns=("steps.gram_change",), compute=_max_gram_change,
        prediction=theory.gram_change_exponent, scale_prediction=theory.output_scale_exponent),
    Quantity(
        "rel_gram_change", per_layer=False,
        title="Relative change of the NTK Gram matrix",
        label=r"$\max_t\,\|H(t)-H(0)\|_2\,/\,\lambda_{{\min}}(H(0))$",
        definition="max_t ||H(t) - H(0)||_2 / lambda_min(H(0)).",
        columns=("steps.gram_change", "steps.gram_lambda_min"), compute=_rel_gram_change,
        prediction=theory.relative_gram_change_exponent,
        scale_prediction=theory.output_scale_exponent),
    Quantity(
        "gram_change_rel_norm", per_layer=False,
        title="Change of the NTK Gram matrix, relative to its norm",
        label=r"$\max_t\,\|H(t)-H(0)\|_2\,/\,\|H(0)\|_2$",
        definition="max_t ||H(t) - H(0)||_2 / ||H(0)||_2 (||H(0)||_2 = lambda_max(H(0))).",
        columns=("steps.gram_change", "steps.gram_lambda_max"), compute=_gram_change_rel_norm,
        prediction=theory.relative_gram_change_exponent,
        scale_prediction=theory.output_scale_exponent),
    Quantity(
        "sharpness_init", per_layer=False,
        title="Sharpness at initialization",
        label=r"$\lambda_{{\max}}(\nabla^2 L)$ at $t = 0$",
        definition="the largest eigenvalue of the loss Hessian at the first recorded step.",
        columns=("steps.sharpness",), compute=_at_first_step("sharpness")),
    Quantity(
        "max_sharpness_ratio", per_layer=False,
        title="Largest sharpness, as a fraction of the stability limit 2/eta",
        label=r"$\max_t\,\eta\,\lambda_{{\max}}(\nabla^2 L(t))\,/\,2$",
        definition="max_t sharpness(t) x eta / 2: 1 is gradient descent's stability limit "
                   "2 / eta, the edge of stability.",
        columns=("steps.sharpness", "runs.lr"), compute=_max_sharpness_ratio),
    Quantity(
        "steps_to_eos", per_layer=False,
        title="Steps to the edge of stability",
        label=r"steps to sharpness $\geq$ {eos_fraction:g} $\times$ 2/$\eta$",
        definition="first recorded step with sharpness >= {eos_fraction:g} x 2 / eta (never "
                   "reached: `excluded`).",
        columns=("steps.sharpness", "runs.lr"), compute=_steps_to_eos,
        censored="never reached the edge of stability"),
)
QUANTITY = {q.name: q for q in QUANTITIES}


def predicted_exponent(quantity: str, x: str, *, param: str, lr_scaling: str = "constant",
                       depth: int = 1, center_output: bool = False,
                       layer: int | None = None, arch: str = "mlp") -> Interval | None:
    """THEORY.md's exponent of `quantity` against `x`, as an interval (lo, hi); None if none.

    The width (THEORY.md sections 5 and 6): the quantity's `prediction`, for the run's
    param, lr_scaling, depth (0: a group of several depths) and layer (of a per-layer
    quantity); the output scale (section 6): its `scale_prediction`, for param and
    center_output. n and depth have none; nor has a user's flax module (the built-in
    cnn and resnet take the MLP's, their width the channels: THEORY.md section 9).
    """
    if arch not in BUILTIN_ARCHS:
        return None
    q = QUANTITY[quantity]
    if x == "width" and q.prediction is not None:
        return q.prediction(param, lr_scaling=lr_scaling, depth=depth, layer=layer)
    if x == "output_scale" and q.scale_prediction is not None:
        return q.scale_prediction(param, center_output=center_output)
    return None


# ----------------------------------------------------------------------------- settings

def run_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """runs.parquet -> RUN_COLUMNS: run_id, seed, status, the swept settings (SETTINGS) and
    lr, lr_scaling, reduction, momentum, center_output, lambda0, arora_bound. lr_config is
    the config's lr as written
    ('theory' or a number); batch_size is <NA> for full-batch GD (where it equals n)."""
    out = runs.assign(lr_config=[_lr_text(v) for v in runs.lr_spec],
                      batch_size=runs.batch_size.astype("Int64").mask(runs.optimizer == "gd"))
    return out[list(RUN_COLUMNS)].reset_index(drop=True)


def _lr_text(value) -> str:
    """'0.1', '10000', 'theory': the config's lr, numbers written the same way however stored."""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def varying(frame: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """The columns of `cols` that take two or more values in `frame`."""
    return [c for c in cols if frame[c].nunique(dropna=False) > 1]


def group_label(keys: dict, shown: Sequence[str]) -> str:
    """'depth=2, lr=0.1, layer=1' from the group's values of the `shown` settings
    (a missing batch size is GD's full batch)."""
    parts = ["full batch" if k == "batch_size" and pd.isna(keys[k])
             else f"{SHORT_NAMES.get(k, k)}={keys[k]}" for k in shown if k in keys]
    return ", ".join(parts) or "all"


# ----------------------------------------------------------------------------- per run

def _tables(results: store.Results) -> Tables:
    steps = results.steps[results.steps.run_id.isin(results.runs.run_id)]
    first = steps.step == steps.groupby("run_id").step.transform("min")
    loss0 = steps.loss.where(first).groupby(steps.run_id).transform("max")
    return Tables(results.runs, steps.assign(first=first, loss0=loss0), results.layers)


def _has_columns(results: store.Results, quantity: Quantity) -> bool:
    return all(column in getattr(results, table)
               for table, column in (c.split(".") for c in quantity.columns))


def _recorded(results: store.Results, quantity: Quantity) -> bool:
    """Whether every column `quantity` reads holds a finite value for a non-diverged run."""
    ok = set(results.runs.run_id[results.runs.status == "ok"])
    for table, column in (c.split(".") for c in quantity.columns):
        frame = getattr(results, table)
        values = pd.to_numeric(frame[column][frame.run_id.isin(ok)], errors="coerce")
        if not np.isfinite(values.astype(float)).any():
            return False
    return True


def per_run_quantities(results: store.Results | str | os.PathLike, *,
                       loss_threshold: float = 1e-3, tail_fraction: float = 0.5,
                       rate_floor: float = 1e-10, eos_fraction: float = 0.95) -> pd.DataFrame:
    """One row per run x quantity (x layer): the run's settings (`run_settings`), quantity,
    layer (<NA> for per-run quantities) and value. Definitions: QUANTITIES; the options are
    QuantityOptions'.

    Diverged runs are included (status 'diverged'; their values use the steps before
    divergence) so that they can be counted; `fit_table` leaves them out. A quantity whose
    columns are absent, or hold no finite value for any non-diverged run, is skipped; but a
    censored quantity (steps to a threshold) whose columns were recorded is kept even where
    no run reached its threshold, so that every run's "never" is reported.
    """
    r = results if isinstance(results, store.Results) else store.load(results)
    options = QuantityOptions(loss_threshold, tail_fraction, rate_floor, eos_fraction)
    tables = _tables(r)
    computed = [q for q in QUANTITIES if _has_columns(r, q)]
    run_index = pd.Index(sorted(r.runs.run_id), name="run_id")
    per_layer = pd.DataFrame({q.name: q.compute(tables, options)
                              for q in computed if q.per_layer}).reset_index()
    per_run = pd.DataFrame({q.name: q.compute(tables, options)
                            for q in computed if not q.per_layer}, index=run_index).reset_index()
    long = pd.concat([
        per_layer.melt(["run_id", "layer"], var_name="quantity", value_name="value"),
        per_run.melt(["run_id"], var_name="quantity", value_name="value").assign(layer=pd.NA),
    ], ignore_index=True)
    long["layer"] = long["layer"].astype("Int64")
    long["value"] = long["value"].astype(float)
    out = run_settings(r.runs).merge(long, on="run_id", how="inner")
    ok = out.status == "ok"
    kept = set(out.quantity[ok & np.isfinite(out.value)])
    kept |= {q.name for q in computed if q.censored and _recorded(r, q)}
    out = out[out.quantity.isin(kept)]
    order = {q.name: i for i, q in enumerate(QUANTITIES)}
    out = out.assign(_q=out.quantity.map(order)).sort_values(
        ["_q", "layer", *[c for c in SETTINGS if c != "lr_config"], "lr_config", "seed"],
        na_position="first", kind="stable")
    return out.drop(columns="_q").reset_index(drop=True)


# ----------------------------------------------------------------------------- figures' kinds

def value_kind(per_run: pd.DataFrame) -> pd.Series:
    """What each row of `per_run_quantities` is in a log-log figure, aligned with it:

      'fitted'    a finite value > 0: a point of the fit
      'censored'  NaN of a quantity with `censored` (a time never reached within the
                  recorded steps): above every observed value, drawn as censored
      'off_axis'  a value <= 0, or NaN where that means undefined: below the log axis
      'diverged'  the run diverged (left out of fits, counted)

    Fits leave out all but 'fitted' (counted in n_excluded, n_diverged)."""
    value = per_run.value.astype(float)
    censoring = per_run.quantity.map({q.name: bool(q.censored) for q in QUANTITIES})
    kind = np.where(np.isfinite(value) & (value > 0), "fitted",
                    np.where(value.isna() & censoring.fillna(False).astype(bool), "censored",
                             "off_axis"))
    kind = np.where(per_run.status == "ok", kind, "diverged")
    return pd.Series(kind, index=per_run.index, name="kind")


def varying_within(frame: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """The columns of `cols` that take two or more values within one sweep of `frame` (all
    of it without a SWEEP column): what panels and groups are made of."""
    if SWEEP not in frame:
        return varying(frame, cols)
    counts = frame.groupby(SWEEP, sort=False)[list(cols)].nunique(dropna=False)
    return [c for c in cols if len(counts) and counts[c].max() > 1]


def between_sweeps(frame: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """The columns of `cols` constant within each sweep of `frame` that differ between
    sweeps: what tells the sweeps apart (none without a SWEEP column)."""
    if SWEEP not in frame:
        return []
    within = set(varying_within(frame, cols))
    return [c for c in varying(frame, cols) if c not in within]


def sweep_labels(results: Sequence[store.Results]) -> list[str]:
    """One label per sweep: its manifest's config name; where two sweeps share a name, the
    directory names; where those collide too, the paths as given."""
    names = [str(r.manifest.get("config", {}).get("name") or Path(r.path).name)
             for r in results]
    if len(set(names)) < len(names):
        names = [Path(r.path).name or str(r.path) for r in results]
    if len(set(names)) < len(names):
        names = [str(r.path) for r in results]
    return names


# ----------------------------------------------------------------------------- theory bounds

def du_theorem_runs(runs: pd.DataFrame) -> pd.Series:
    """The non-diverged runs in the setting of Du et al. 2018 (THEORY.md section 1), where
    its absolute bounds are drawn: overparam's MLP (arch mlp), du, depth 1, squared loss,
    full-batch GD without momentum, output layer not trained (either reduction: the mean's
    GD is the sum's with step lr / n). Only the mlp: its network is the theorem's, and the
    analysis never builds (or imports) another arch's network."""
    train_output = runs.train_output.astype(bool) if "train_output" in runs else False
    return ((runs.arch == "mlp") & (runs.param == "du") & (runs.depth == 1)
            & (runs.loss == "squared")
            & (runs.optimizer == "gd") & (runs.momentum == 0) & ~train_output
            & (runs.status == "ok"))


def _sum_loss_step(runs: pd.DataFrame) -> pd.Series:
    """The step size on the sum loss that each run's GD takes: lr, or lr / n for 'mean'."""
    return runs.lr.astype(float) / np.where(runs.reduction == "mean", runs.n, 1)


def radius_bounds(results: store.Results) -> pd.DataFrame:
    """Du et al.'s R' = 4 sqrt(n) ||y - u(0)|| / (sqrt(m) lambda_0) (`theory.du_radius_bound`,
    a bound on max_radius_rowmax) for each run of `du_theorem_runs`: columns run_id,
    quantity ('max_radius_rowmax'), layer (1), bound. Empty if there is none.

    u(0), the initial outputs, are not recorded: they are computed from the run's initial
    weights (`Results.initial_net`, bit-identical to the engine's) and training set
    (`Results.dataset`) by `model.apply`, in the run's dtype. R' is proportional to
    ||y - u(0)|| / sqrt(m), so theory.du_radius_bound is called once per training set (its
    eigendecomposition of H^inf is the costly part), at a unit residual and m = 1, and
    scaled for each run.
    """
    columns = ["run_id", "quantity", "layer", "bound"]
    runs = results.runs[du_theorem_runs(results.runs)]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    import jax  # the initial weights and outputs need JAX; nothing else here does

    from overparam import model

    data, factor, rows = {}, {}, []
    for run in runs.itertuples():
        if run.dataset_id not in data:
            X, y = results.dataset(run.dataset_id)
            unit = np.zeros(len(y))
            unit[0] = 1.0
            data[run.dataset_id] = X, y
            factor[run.dataset_id] = theory.du_radius_bound(X, y, y - unit, 1)
        X, y = data[run.dataset_id]
        net = results.initial_net(run.run_id)
        with jax.enable_x64(run.dtype == "float64"):
            u0 = np.asarray(model.apply(net, np.asarray(X, run.dtype), param="du")[0],
                            np.float64)
        residual = np.linalg.norm(np.asarray(y, np.float64) - u0)
        rows.append((run.run_id, "max_radius_rowmax", 1,
                     factor[run.dataset_id] * residual / np.sqrt(run.width)))
    out = pd.DataFrame(rows, columns=columns)
    out["layer"] = out["layer"].astype("Int64")
    return out


def loss_bounds(results: store.Results) -> pd.DataFrame:
    """The theory's loss curves for each run of `du_theorem_runs`, at its recorded steps t:
    columns run_id, step, du_bound = loss(0) (1 - eta lambda_0 / 2)^t (Du et al.'s
    Theorem 4.1 bound, `theory.du_linear_rate`) and kernel = loss(0) exp(-rate t), rate =
    `theory.kernel_loss_rate` = -2 ln(1 - eta lambda_0), i.e. loss(0) (1 - eta lambda_0)^(2t):
    infinite-width linearized GD's slowest eigendirection, a bound on its loss while eta
    lambda_max <= 2 - eta lambda_0 (THEORY.md section 1). eta: the step on the sum loss (lr,
    or lr / n for the mean reduction); lambda_0: the run's lambda0; loss(0): its loss at its
    first recorded step (the theory bounds the ratio). Empty if there is none."""
    runs = results.runs[du_theorem_runs(results.runs)]
    steps = results.steps[results.steps.run_id.isin(runs.run_id)][["run_id", "step", "loss"]]
    if steps.empty:
        return pd.DataFrame(columns=["run_id", "step", "du_bound", "kernel"])
    first = steps.groupby("run_id").step.transform("min")
    loss0 = steps.loss.where(steps.step == first).groupby(steps.run_id).transform("max")
    r = runs.set_index("run_id").loc[steps.run_id]
    t = (steps.step - first).to_numpy(float)
    eta, lam0 = _sum_loss_step(r).to_numpy(float), r.lambda0.to_numpy(float)
    rate = theory.kernel_loss_rate(eta, lam0, reduction="sum")  # eta: already on the sum
    return pd.DataFrame({
        "run_id": steps.run_id.to_numpy(), "step": steps.step.to_numpy(),
        "du_bound": loss0.to_numpy(float) * theory.du_linear_rate(eta, lam0, t),
        "kernel": loss0.to_numpy(float) * np.exp(-rate * t)})
