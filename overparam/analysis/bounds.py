"""The theory's absolute bounds beside the measured values, for the runs in Du et al.'s
setting (`du_theorem_runs`): Du et al.'s radius R' (`radius_bounds`) and the loss curves
of Du et al.'s Theorem 4.1 and of the kernel's slowest eigendirection (`loss_bounds`).

`radius_bounds` rebuilds each run's initial network in JAX (`Results.initial_net`) and
applies it with `overparam.model` (imported inside the function, with jax): R' needs each
run's initial outputs u(0), which the results do not record. This is the one place where
the analysis imports JAX and the model, against the one-way chain of imports (DESIGN.md
section 4); it builds only overparam's own mlp (Du et al.'s network), never a module a
results directory names.
Never fits, plots or writes a file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from overparam import store, theory


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
