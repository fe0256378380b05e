"""The analysis of regimes and sharpness: the new quantities against their slow definitions,
fits against the output scale with Chizat et al.'s prediction, mup's predictions against
width, and the sharpness curves with GD's stability limit 2/eta.

One real sweep runs in-process (a module fixture, seconds): ntk and mup, two widths, two
output scales of the centered model, Gram and sharpness every other step, a step size
large enough for mup's narrow networks to reach the edge of stability.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import overparam
from overparam import analyze, engine
from overparam import config as config_lib
from overparam.analysis import per_run as per_run_table

WIDTHS, SEEDS, STEPS = (16, 64), 3, 24


@pytest.fixture(scope="module")
def regimes(tmp_path_factory):
    out = tmp_path_factory.mktemp("regimes") / "r"
    sweep = config_lib.validate(dict(
        name="regimes", widths=WIDTHS, num_seeds=SEEDS, steps=STEPS, d=6, n=(12,),
        param=("ntk", "mup"), output_scale=(1.0, 8.0), center_output=True, lr=(1.0,),
        gram_every=2, sharpness_every=2))
    engine.run_sweep(sweep, out, show_progress=False)
    return overparam.load(out)


def _values(per_run, name):
    rows = per_run[per_run.quantity == name]
    return rows.set_index("run_id").value


@pytest.mark.slow
def test_new_quantities_match_their_definitions(regimes):
    per_run = analyze.per_run_quantities(regimes, eos_fraction=0.5)
    ok = regimes.runs[regimes.runs.status == "ok"].set_index("run_id")
    steps = regimes.steps[regimes.steps.run_id.isin(ok.index)]
    for run_id, s in steps.groupby("run_id"):
        s = s.sort_values("step")
        first = s.iloc[0]
        eta = ok.lr[run_id]
        sharp = s.dropna(subset=["sharpness"])
        assert _values(per_run, "sharpness_init")[run_id] == first.sharpness
        assert _values(per_run, "max_sharpness_ratio")[run_id] == pytest.approx(
            float(sharp.sharpness.max()) * eta / 2, rel=1e-12)
        reached = sharp.step[sharp.sharpness >= 0.5 * 2 / eta]
        np.testing.assert_equal(_values(per_run, "steps_to_eos")[run_id],
                                reached.min() if len(reached) else np.nan)
        gram = s.dropna(subset=["gram_change"])
        assert _values(per_run, "gram_change_rel_norm")[run_id] == pytest.approx(
            float(gram.gram_change.max()) / float(first.gram_lambda_max), rel=1e-6)
    eos = per_run[per_run.quantity == "steps_to_eos"]
    assert eos.value.notna().any() and eos.value.isna().any()  # some runs get there


@pytest.mark.slow
def test_a_run_that_never_reaches_the_edge_is_null_not_dropped(regimes):
    per_run = analyze.per_run_quantities(regimes, eos_fraction=100.0)  # out of reach
    eos = per_run[per_run.quantity == "steps_to_eos"]
    assert len(eos) == len(regimes.runs) and eos.value.isna().all()
    kinds = per_run_table.value_kind(eos)
    assert (kinds[eos.status == "ok"] == "censored").all()


@pytest.mark.slow
def test_fits_against_the_output_scale_carry_chizat_s_prediction(regimes):
    fits = analyze.fit_table(analyze.per_run_quantities(regimes), n_boot=50)
    scale = fits[fits.x == "output_scale"]
    assert len(scale) and set(scale.param) == {"ntk", "mup"}
    for name in ("max_radius_spectral", "rel_radius_spectral", "final_flip_frac",
                 "max_gram_change", "gram_change_rel_norm"):
        rows = scale[scale.quantity == name]
        assert len(rows) and (rows.predicted == "-1").all(), name
    assert (scale[scale.quantity == "sharpness_init"].predicted == "").all()
    # The direct fit: log-log slope of max_t ||W_1(t) - W_1(0)||_2 over the two scales.
    row = scale[(scale.quantity == "max_radius_spectral") & (scale.param == "ntk")
                & (scale.width == 64) & (scale.layer == 1)].iloc[0]
    runs = regimes.runs[(regimes.runs.param == "ntk") & (regimes.runs.width == 64)]
    layers = regimes.layers[(regimes.layers.layer == 1)
                            & regimes.layers.run_id.isin(runs.run_id)]
    radius = layers.groupby("run_id").radius_spectral.max()
    alpha = runs.set_index("run_id").output_scale.loc[radius.index]
    slope = np.polyfit(np.log(alpha), np.log(radius.astype(float)), 1)[0]
    assert abs(row.exponent - slope) < 1e-10
    # Without centering there is no prediction against alpha.
    assert analyze.predicted_exponent("max_radius_spectral", "output_scale", param="ntk",
                                      center_output=False) is None


@pytest.mark.slow
def test_mup_is_predicted_flat_in_width_and_ntk_to_fall(regimes):
    fits = analyze.fit_table(analyze.per_run_quantities(regimes), n_boot=50)
    width = fits[fits.x == "width"]
    for name in ("rel_radius_spectral", "final_flip_frac", "rel_gram_change",
                 "gram_change_rel_norm"):
        mup = width[(width.quantity == name) & (width.param == "mup")]
        assert len(mup) and (mup.predicted == "0").all(), name
    ntk = width[(width.quantity == "rel_radius_spectral") & (width.param == "ntk")]
    assert (ntk.predicted == "-1/2").all()
    ntk = width[(width.quantity == "max_radius_spectral") & (width.param == "ntk")]
    assert (ntk.predicted == "0").all()
    # mup's input layer moves like sqrt(fan_out / fan_in) = sqrt(m / d) (spectral condition).
    mup = width[(width.quantity == "max_radius_spectral") & (width.param == "mup")]
    assert set(mup.predicted) == {"1/2"}  # depth 1: only the input layer


@pytest.mark.slow
def test_sharpness_curves_draw_two_over_eta(regimes):
    fig = analyze.plot_curves(regimes, "sharpness")
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 4  # param x output scale
    for ax in axes:
        dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        assert dashed and all(np.allclose(ln.get_ydata(), 2.0) for ln in dashed)  # eta = 1
        bottom, top = ax.get_ylim()
        assert bottom < 2.0 < top
    labels = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "stability limit" in labels


@pytest.mark.slow
def test_the_analysis_reports_the_new_quantities_and_draws_against_the_output_scale(regimes,
                                                                                   tmp_path):
    fits = analyze.run_analysis(regimes.path, out=tmp_path / "a", n_boot=50, plots=False)
    report = (tmp_path / "a" / "report.md").read_text()
    for name in ("steps_to_eos", "max_sharpness_ratio", "gram_change_rel_norm"):
        assert f"- `{name}`:" in report, name
    assert set(fits.x) == {"width", "output_scale"}
    per_run = pd.read_parquet(tmp_path / "a" / "per_run.parquet")
    assert {"output_scale", "center_output"} <= set(per_run.columns)
    fig = analyze.plot_fit(per_run, fits, "rel_radius_spectral", "output_scale", n_boot=50)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 4 and all(a.get_xlabel() == "output scale \u03b1" for a in axes)
    labels = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "slope $\u03b1^{\u22121}$" in labels  # Chizat et al.'s theory slope, drawn
