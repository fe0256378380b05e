"""The registry of the quantities of the scaling analysis.

Owns QUANTITIES: for each quantity its definition (the text report.md prints), its labels
(figure title, axis label), its predictions (the `overparam.theory` functions that give its
exponent in the width and in the output scale), what it is computed from (columns of the
results schema) and how (`Quantity.compute`); QUANTITY_BY_NAME finds one by name.
`predicted_exponent` reads the predictions. The per-run table (per_run.py), the fit table,
the figures and the report read the registry, and never define a quantity themselves.
Computes on the tables it is given; never reads a results directory, fits, plots or
writes a file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

from overparam import schema, theory

BUILTIN_ARCHS = ("mlp", "cnn", "resnet")  # the networks the theory's predictions are for
# every column a quantity may read, the optional ones included (schema.OPTIONAL)
SCHEMAS = {"runs": schema.RUNS,
           **{name: schema.schema_of(name, extra=tuple(c for c, *_ in schema.OPTIONAL[name]))
              for name in ("steps", "layers")}}


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


def _max(column: str) -> Callable[[Tables, QuantityOptions], pd.Series]:
    """compute: run_id -> max over the recorded steps of steps.column."""
    return lambda t, o: t.steps.groupby("run_id")[column].max()


def _feature_movement(t: Tables, o: QuantityOptions) -> pd.Series:
    """max_t ||h_l(t) - h_l(0)||_F / ||h_l(0)||_F = max_t feature_change_rms / feature_rms(0)
    (the same number of coordinates)."""
    g = _by_layer(t.layers)
    return g.feature_change_rms.max() / g.feature_rms.first()


def _alignment_change(t: Tables, o: QuantityOptions) -> pd.Series:
    """max_t |A(t) - A(0)| over the Gram steps."""
    s = t.steps[t.steps.kernel_alignment.notna()]
    a0 = s.kernel_alignment.where(s.first).groupby(s.run_id).transform("max")
    return (s.kernel_alignment - a0).abs().groupby(s.run_id).max()


def _alignment_gain(t: Tables, o: QuantityOptions) -> pd.Series:
    """A at the last Gram step minus A(0)."""
    s = t.steps[t.steps.kernel_alignment.notna()].groupby("run_id").kernel_alignment
    return s.last() - s.first()


def _catapult(compute: Callable[[Tables], pd.Series]
              ) -> Callable[[Tables, QuantityOptions], pd.Series]:
    """The registry's compute of a catapult quantity (`compute`, which lazy_rich.phases
    uses for every run): for the runs that record the sharpness only. A sweep asks for the
    catapult's quantities by recording it (lambda_max against 2 / eta); a sweep that does
    not, the default one, reports none of them."""
    def catapult(t: Tables, o: QuantityOptions) -> pd.Series:
        values = compute(t)
        return values[values.index.isin(t.steps.run_id[t.steps.sharpness.notna()])]
    return catapult


def loss_peak_ratio(t: Tables) -> pd.Series:
    """run_id -> max_t loss(t) / loss(0)."""
    return (t.steps.loss / t.steps.loss0).groupby(t.steps.run_id).max()


def loss_peak_step(t: Tables) -> pd.Series:
    """run_id -> the recorded step of max_t loss(t)."""
    s = t.steps[np.isfinite(t.steps.loss)]
    peak = s.loss.groupby(s.run_id).idxmax()
    return pd.Series(s.step.loc[peak].to_numpy(float), index=peak.index)


def _final_sharpness_ratio(t: Tables, o: QuantityOptions) -> pd.Series:
    last = t.steps[t.steps.sharpness.notna()].groupby("run_id").last()
    return last.sharpness * t.runs.set_index("run_id").lr.reindex(last.index) / 2.0


def top_eigenvalue_init(t: Tables) -> pd.Series:
    """lambda_0 of the catapult (THEORY.md section 10): the top eigenvalue of the NTK at
    step 0 in the loss's own normalization: gram_lambda_max(0) (divided by n under the mean
    reduction), or without Gram steps the sharpness at step 0 (the loss Hessian's top
    eigenvalue, which at initialization is the Gauss-Newton part's, H's)."""
    first = t.steps[t.steps.first].set_index("run_id")
    runs = t.runs.set_index("run_id").reindex(first.index)
    gram = first.gram_lambda_max / np.where(runs.reduction == "mean", runs.n, 1)
    return gram.where(gram.notna(), first.sharpness)


def eta_lambda0(t: Tables) -> pd.Series:
    """run_id -> eta lambda_0 (top_eigenvalue_init)."""
    lam = top_eigenvalue_init(t)
    return lam * t.runs.set_index("run_id").lr.reindex(lam.index)


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
    Quantity(
        "max_lin_distance", per_layer=False,
        title="Distance to the linearized twin",
        label=r"$\max_t\,\|g(t)-g_{{\mathrm{{lin}}}}(t)\|_2$",
        definition="max over recorded steps t of ||g(t) - g_lin(t)||_2 on the training "
                   "points: the network's output against its first-order Taylor model at "
                   "theta_0 trained beside it (THEORY.md section 10).",
        columns=("steps.lin_distance",), compute=_max("lin_distance"),
        prediction=theory.linearization_exponent,
        scale_prediction=theory.output_scale_exponent),
    Quantity(
        "max_lin_distance_rel", per_layer=False,
        title="Distance to the linearized twin, relative to the function's movement",
        label=r"$\max_t\,\|g-g_{{\mathrm{{lin}}}}\|/\|g-g(0)\|$",
        definition="max_t ||g(t) - g_lin(t)||_2 / ||g(t) - g(0)||_2 on the training points.",
        columns=("steps.lin_distance_rel",), compute=_max("lin_distance_rel"),
        prediction=theory.linearization_exponent),
    Quantity(
        "max_lin_distance_test", per_layer=False,
        title="Distance to the linearized twin on the test points",
        label=r"$\max_t\,\|g(t)-g_{{\mathrm{{lin}}}}(t)\|_2$ (test)",
        definition="max_t ||g(t) - g_lin(t)||_2 on the held-out test points.",
        columns=("steps.lin_distance_test",), compute=_max("lin_distance_test"),
        prediction=theory.linearization_exponent,
        scale_prediction=theory.output_scale_exponent),
    Quantity(
        "max_inf_distance", per_layer=False,
        title="Distance to the infinite-width trajectory",
        label=r"$\max_t\,\|u(t)-u_\infty(t)\|_2$",
        definition="max_t ||u(t) - u_inf(t)||_2 on the training points, u_inf kernel GD with "
                   "s H^inf from u(0) (THEORY.md section 10).",
        columns=("steps.inf_distance",), compute=_max("inf_distance"),
        prediction=theory.infinite_width_exponent),
    Quantity(
        "max_feature_movement", per_layer=True,
        title="Feature movement",
        label=r"$\max_t\,\|h_l(t)-h_l(0)\|_F/\|h_l(0)\|_F$",
        definition="max_t ||h_l(t) - h_l(0)||_F / ||h_l(0)||_F over the training inputs, "
                   "h_l the post-activations of layer l.",
        columns=("layers.feature_change_rms", "layers.feature_rms"),
        compute=_feature_movement, prediction=theory.linearization_exponent,
        scale_prediction=theory.output_scale_exponent),
    Quantity(
        "max_alignment_change", per_layer=False,
        title="Change of the kernel-target alignment",
        label=r"$\max_t\,|A(t)-A(0)|$",
        definition="max over Gram steps of |A(t) - A(0)|, A the centered kernel-target "
                   "alignment of H(t) with y.",
        columns=("steps.kernel_alignment",), compute=_alignment_change,
        prediction=theory.relative_gram_change_exponent,
        scale_prediction=theory.output_scale_exponent),
    Quantity(
        "alignment_gain", per_layer=False,
        title="Kernel-target alignment gained in training",
        label=r"$A(T)-A(0)$",
        definition="A at the last Gram step minus A(0) (positive: the kernel learnt the "
                   "targets).",
        columns=("steps.kernel_alignment",), compute=_alignment_gain),
    Quantity(
        "loss_peak_ratio", per_layer=False,
        title="Largest loss over the initial loss",
        label=r"$\max_t\,\mathrm{{loss}}(t)/\mathrm{{loss}}(0)$",
        definition="max_t loss(t) / loss(0): above 1, the loss rose (a catapult, or "
                   "divergence).",
        columns=("steps.loss", "steps.sharpness"), compute=_catapult(loss_peak_ratio)),
    Quantity(
        "loss_peak_step", per_layer=False,
        title="Step of the largest loss",
        label="step of the peak loss",
        definition="the recorded step of max_t loss(t) (0: the loss never rose).",
        columns=("steps.loss", "steps.sharpness"), compute=_catapult(loss_peak_step)),
    Quantity(
        "final_sharpness_ratio", per_layer=False,
        title="Final sharpness against the stability limit",
        label=r"$\eta\,\lambda_{{\max}}(T)/2$",
        definition="the last recorded sharpness x eta / 2: below 1, the top eigenvalue ended "
                   "below 2 / eta.",
        columns=("steps.sharpness", "runs.lr"), compute=_final_sharpness_ratio),
    Quantity(
        "eta_lambda0", per_layer=False,
        title="Step size times the top eigenvalue of H(0)",
        label=r"$\eta\,\lambda_0$",
        definition="eta lambda_0, lambda_0 the top eigenvalue of the NTK Gram matrix at step "
                   "0 in the loss's normalization (gram_lambda_max(0), / n for the mean "
                   "reduction; else the sharpness at step 0): 2 is the catapult's edge.",
        columns=("steps.loss", "steps.sharpness", "runs.lr"), compute=_catapult(eta_lambda0)),
)
QUANTITY_BY_NAME = {q.name: q for q in QUANTITIES}


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
    q = QUANTITY_BY_NAME[quantity]
    if x == "width" and q.prediction is not None:
        return q.prediction(param, lr_scaling=lr_scaling, depth=depth, layer=layer)
    if x == "output_scale" and q.scale_prediction is not None:
        return q.scale_prediction(param, center_output=center_output)
    return None
