"""The lazy/rich analysis (overparam.analysis.lazy_rich and its quantities): the phases of
Lewkowycz et al.'s two-layer uv model, whose phases are known analytically, and the
quantities against hand computations."""

import numpy as np
import pandas as pd
import pytest

from overparam.analysis import lazy_rich, quantities
from overparam.analysis.quantities import QUANTITY_BY_NAME, QuantityOptions, Tables


def _uv_run(eta_lambda0: float, m: int = 4000, steps: int = 60, seed: int = 0):
    """The uv model f = u . v / sqrt(m) (one input x = 1, target y = 0, squared loss 1/2 f^2)
    by GD: its NTK is lambda = (|u|^2 + |v|^2) / m. Lewkowycz et al. 2020: eta < 2/lambda_0
    lazy, 2/lambda_0 < eta < 4/lambda_0 catapult, eta > 4/lambda_0 divergent (large m)."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=m), rng.normal(size=m)
    lam0 = (u @ u + v @ v) / m
    eta = eta_lambda0 / lam0
    losses = []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            f = u @ v / np.sqrt(m)
            losses.append(0.5 * f * f)
            u, v = u - eta * f * v / np.sqrt(m), v - eta * f * u / np.sqrt(m)
    return eta, lam0, np.asarray(losses)


def _tables(settings):
    runs, steps = [], []
    for i, x in enumerate(settings):
        eta, lam0, loss = _uv_run(x)
        run_id = f"r{i}"
        runs.append(dict(run_id=run_id, status="ok" if np.isfinite(loss).all() else "diverged",
                         width=16, param="ntk", output_scale=1.0, lr=eta, reduction="sum",
                         n=1))
        steps.append(pd.DataFrame(dict(
            run_id=run_id, step=np.arange(len(loss)), loss=loss,
            gram_lambda_max=np.where(np.arange(len(loss)) == 0, lam0, np.nan),
            sharpness=np.nan)))
    steps = pd.concat(steps, ignore_index=True)
    first = steps.step == 0
    loss0 = steps.loss.where(first).groupby(steps.run_id).transform("max")
    return Tables(pd.DataFrame(runs), steps.assign(first=first, loss0=loss0), pd.DataFrame())


def test_the_uv_models_phases_are_lazy_catapult_and_divergent():
    settings = [0.5, 1.5, 2.5, 3.5, 5.0, 8.0]
    frame = lazy_rich.phases(_tables(settings)).sort_values("run_id")
    np.testing.assert_allclose(frame.eta_lambda0, settings, rtol=1e-12)
    assert list(frame.phase) == ["lazy", "lazy", "catapult", "catapult", "divergent",
                                 "divergent"]
    lazy = frame[frame.phase == "lazy"]
    assert (lazy.peak_step == 0).all() and (lazy.peak_ratio == 1).all()
    catapult = frame[frame.phase == "catapult"]
    assert (catapult.peak_ratio > 2).all() and (catapult.peak_step > 0).all()


def test_feature_movement_and_alignment_quantities_by_hand():
    steps = pd.DataFrame(dict(run_id=["a"] * 3, step=[0, 1, 2],
                              kernel_alignment=[0.3, np.nan, 0.1], loss=[1.0, 0.5, 0.2]))
    steps = steps.assign(first=steps.step == 0, loss0=1.0)
    layers = pd.DataFrame(dict(run_id=["a"] * 6, step=[0, 0, 1, 1, 2, 2], layer=[1, 2] * 3,
                               feature_rms=[2.0, 4.0, 2.1, 4.2, 2.2, 4.4],
                               feature_change_rms=[0.0, 0.0, 0.5, 0.2, 0.3, 0.4]))
    t = Tables(pd.DataFrame(dict(run_id=["a"], lr=[0.1])), steps, layers)
    o = QuantityOptions()
    movement = QUANTITY_BY_NAME["max_feature_movement"].compute(t, o)
    assert movement[("a", 1)] == pytest.approx(0.25)
    assert movement[("a", 2)] == pytest.approx(0.1)
    assert QUANTITY_BY_NAME["max_alignment_change"].compute(t, o)["a"] == pytest.approx(0.2)
    assert QUANTITY_BY_NAME["alignment_gain"].compute(t, o)["a"] == pytest.approx(-0.2)
    assert quantities.loss_peak_step(t)["a"] == 0


def test_the_coordinate_check_figure_has_a_panel_per_layer_and_a_line_per_step():
    rows = [dict(param="mup", output_scale=1.0, lr_spec="0.1", width=w, layer=layer, step=t,
                 feature_rms=1.0 + 0.1 * t, feature_change_rms=0.1 * t)
            for w in (16, 32) for layer in (1, 2) for t in (0, 1, 2)]
    fig = lazy_rich.plot_coord_check(pd.DataFrame(rows), "mup")
    axes = fig.axes
    assert len(axes) == 4
    assert [len(ax.lines) for ax in axes] == [3, 3, 2, 2]  # the change from step 1
    assert len(axes[1].get_legend().get_texts()) == 3  # t = 0, 1, 2
    assert [ax.get_title() for ax in axes[:2]] == ["layer 1", "layer 2"]
