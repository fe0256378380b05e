"""Tests of overparam.analyze (the command line) and overparam.analysis: the seed bootstrap,
fits of real tiny sweeps against a direct pandas computation, diverged runs, optional
columns, the registries of quantities and x variables, the report's files and the CLI;
the paper figures (sizes, fonts, legends, colours, PNG and PDF, medians with bootstrap
intervals, bands, theory slopes and bounds, censored runs) and several sweeps side by side.

Three real sweeps run in-process on the CPU (module fixtures, a few seconds each): a
Du-style width sweep with one absurd step size that diverges, a deep zou classification
sweep with SGD over two depths, and a smaller SGD twin of the first (to compare with it).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import overparam
from overparam import analyze, engine, schema, theory
from overparam import config as config_lib
from overparam.analysis import fits as fits_lib
from overparam.analysis import groups, outdir, quantities, style
from overparam.analysis.bounds import loss_bounds
from overparam.analysis.per_run import RUN_COLUMNS
from overparam.analysis.quantities import QuantityOptions

ROOT = Path(__file__).resolve().parents[1]
WIDTHS, SEEDS, STEPS = (16, 64, 256), 3, 30


# ------------------------------------------------------------------ power_law_fit (synthetic)

def _power_law(rng, *, alpha=-0.5, widths=(16, 64, 256, 1024), seeds=8, noise=0.2,
               seed_slope=0.05):
    """y = 3 m^(alpha + b_s) e^eps: b_s a per-seed slope (seeds share it across widths)."""
    m = np.tile(np.asarray(widths, float), seeds)
    s = np.repeat(np.arange(seeds), len(widths))
    b = rng.normal(0.0, seed_slope, seeds)[s]
    return m, 3.0 * m ** (alpha + b) * np.exp(rng.normal(0.0, noise, len(m))), s


def test_power_law_fit_is_exact_on_a_power_law():
    m = np.array([8.0, 32.0, 128.0, 512.0] * 3)
    fit = analyze.power_law_fit(m, 2.5 * m ** -0.75, groups=np.repeat([0, 1, 2], 4))
    assert fit.exponent == pytest.approx(-0.75, abs=1e-12)
    assert fit.prefactor == pytest.approx(2.5, rel=1e-12)
    assert fit.ci_low == pytest.approx(-0.75, abs=1e-9)  # every resample is the same line
    assert fit.ci_high == pytest.approx(-0.75, abs=1e-9)
    assert (fit.n_runs, fit.n_seeds, fit.n_excluded) == (12, 3, 0)


def test_power_law_fit_recovers_the_exponent_from_noisy_data():
    m, y, s = _power_law(np.random.default_rng(0), alpha=-0.4, seeds=64)
    fit = analyze.power_law_fit(m, y, groups=s)
    assert fit.exponent == pytest.approx(np.polyfit(np.log(m), np.log(y), 1)[0], abs=1e-12)
    assert abs(fit.exponent + 0.4) < 3 * fit.stderr < 0.05
    assert fit.ci_low < -0.4 < fit.ci_high
    assert fit == analyze.power_law_fit(m, y, groups=s)  # fixed bootstrap seed: reproducible


@pytest.mark.parametrize("ci", ["t", "expanded"])
def test_confidence_interval_covers_the_true_exponent_at_its_rate(ci):
    rng = np.random.default_rng(1)
    covered = []
    for i in range(200):
        m, y, s = _power_law(rng)
        fit = analyze.power_law_fit(m, y, groups=s, n_boot=200, ci=ci, seed=i)
        covered.append(fit.ci_low <= -0.5 <= fit.ci_high)
    assert 0.88 <= np.mean(covered) <= 0.99, np.mean(covered)


def test_bootstrap_resamples_seeds_not_points():
    # With every seed at every width, the least-squares slope is the mean of the per-seed
    # slopes, so resampling seeds makes the bootstrap standard error that of a mean of G
    # values: sd(per-seed slopes, ddof=1) / sqrt(G).
    m, y, s = _power_law(np.random.default_rng(2), seeds=10, seed_slope=0.2, noise=0.05)
    per_seed = [np.polyfit(np.log(m[s == k]), np.log(y[s == k]), 1)[0] for k in range(10)]
    fit = analyze.power_law_fit(m, y, groups=s, n_boot=20000)
    assert fit.exponent == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert fit.stderr == pytest.approx(np.std(per_seed, ddof=1) / np.sqrt(10), rel=0.03)
    by_point = analyze.power_law_fit(m, y, n_boot=20000)  # each point its own group
    assert by_point.n_seeds == len(m) and abs(by_point.stderr / fit.stderr - 1) > 0.1


def test_power_law_fit_leaves_out_nonpositive_and_nonfinite_values_and_counts_them():
    m, y, s = _power_law(np.random.default_rng(3), seeds=4)
    y[[0, 5, 9]] = [0.0, -1.0, np.nan]
    fit = analyze.power_law_fit(m, y, groups=s)
    keep = np.isfinite(y) & (y > 0)
    assert (fit.n_runs, fit.n_excluded) == (keep.sum(), 3)
    assert fit.exponent == pytest.approx(np.polyfit(np.log(m[keep]), np.log(y[keep]), 1)[0],
                                         abs=1e-12)
    one_x = analyze.power_law_fit(np.full(4, 8.0), np.ones(4))
    assert np.isnan(one_x.exponent) and one_x.n_runs == 4


def test_predictions_follow_theory_section_5():
    p = analyze.predicted_exponent
    assert p("max_radius_rowmax", "width", param="du") == (-0.5, -0.5)
    assert p("rel_radius_spectral", "width", param="du") == (-0.5, -0.5)
    assert p("max_radius_spectral", "width", param="zou", lr_scaling="inverse_width") == (
        -0.5, -0.5)
    assert p("max_radius_spectral", "width", param="zou") is None  # lr not width-stable
    assert p("final_flip_frac", "width", param="ntk") == (-0.5, -1 / 3)
    assert p("gram_init_error", "width", param="zou") == (-0.5, -0.5)
    assert p("max_radius_rowmax", "n", param="du") is None
    assert p("steps_to_zero_error", "width", param="du") is None
    assert analyze.format_prediction(-0.5, -1 / 3) == "[-1/2, -1/3]"


# ------------------------------------------------------------------ real sweeps

def _sweep(out: Path, **fields) -> overparam.Results:
    engine.run_sweep(config_lib.validate(fields), out, show_progress=False)
    return overparam.load(out)


@pytest.fixture(scope="module")
def du(tmp_path_factory):
    """Width sweep, du, squared loss, GD; lr 1e4 diverges for every network."""
    out = tmp_path_factory.mktemp("analyze") / "du"
    return _sweep(out, name="du", widths=WIDTHS, num_seeds=SEEDS, steps=STEPS, d=8, n=(16,),
                  lr=(0.1, 1e4), gram_every=10)


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """Depths 1 and 2, zou, logistic loss on +-1 labels, SGD with batches of 8."""
    out = tmp_path_factory.mktemp("analyze") / "deep"
    return _sweep(out, name="deep", widths=(32,), depths=(1, 2), num_seeds=SEEDS, steps=20,
                  d=8, n=(16,), param=("zou",), loss=("logistic",), labels="random_sign",
                  optimizer=("sgd",), batch_size=(8,), lr=(2.0,), lr_scaling="inverse_width",
                  reduction="mean")


@pytest.fixture(scope="module")
def du_analysis(du, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    fits = analyze.run_analysis(du.path, out=out, loss_threshold=0.5)
    return out, fits


def _fit(fits, quantity, x="width", **key):
    rows = fits[(fits.quantity == quantity) & (fits.x == x)]
    for k, v in key.items():
        rows = rows[rows[k] == v]
    assert len(rows) == 1, (quantity, x, key, len(rows))
    return rows.iloc[0]


@pytest.mark.slow
def test_analysis_writes_report_tables_and_every_linked_figure(du_analysis):
    out, fits = du_analysis
    report = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert links and all((out / link).is_file() for link in links), links
    assert {"figures/fit_max_radius_rowmax_vs_width.png", "figures/curves_loss.png",
            "figures/curves_flip_frac.png"} <= set(links)
    # figures/ holds exactly the linked PNGs, each with its PDF beside it (same basename).
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        name for link in links for name in (Path(link).name, Path(link).stem + ".pdf"))
    pd.testing.assert_frame_equal(pd.read_csv(out / "fits.csv")[["quantity", "exponent"]],
                                  fits[["quantity", "exponent"]])
    per_run = pd.read_parquet(out / "per_run.parquet")
    assert {"run_id", "seed", "width", "quantity", "layer", "value", "status"} <= set(per_run)
    assert "max_radius_rowmax" in report and "| quantity | vs | group |" in report
    assert outdir.foreign_entry(out) is None  # outdir knows every name an analysis writes


@pytest.mark.slow
def test_fit_matches_a_direct_pandas_computation(du, du_analysis):
    _, fits = du_analysis
    runs = du.runs[du.runs.lr == 0.1].set_index("run_id")
    rowmax = du.layers.groupby("run_id").radius_rowmax.max().astype(float).loc[runs.index]
    fit = _fit(fits, "max_radius_rowmax", lr_config="0.1", layer=1)
    slope = np.polyfit(np.log(runs.width), np.log(rowmax), 1)[0]
    assert abs(fit.exponent - slope) < 1e-10
    assert (fit.n_runs, fit.n_seeds, fit.n_diverged) == (len(WIDTHS) * SEEDS, SEEDS, 0)
    assert fit.predicted == "-1/2" and fit.ci_low < fit.exponent < fit.ci_high

    flips = du.layers[du.layers.step == STEPS].set_index("run_id").flip_frac.astype(float)
    flips = flips.loc[runs.index]
    fit = _fit(fits, "final_flip_frac", lr_config="0.1", layer=1)
    assert abs(fit.exponent - np.polyfit(np.log(runs.width), np.log(flips), 1)[0]) < 1e-10
    assert fit.predicted == "[-1/2, -1/3]"


@pytest.mark.slow
def test_per_run_quantities_match_their_definitions(du):
    q = analyze.per_run_quantities(du, loss_threshold=0.5, tail_fraction=0.5)
    value = q.set_index(["quantity", "run_id"]).value
    steps = du.steps[du.steps.run_id.isin(du.runs.run_id[du.runs.status == "ok"])]
    for run_id, s in steps.groupby("run_id"):
        tail = s[s.step >= STEPS / 2]
        rate = -np.polyfit(tail.step, np.log(tail.loss.astype(float)), 1)[0]
        assert value["convergence_rate", run_id] == pytest.approx(rate, rel=1e-9)
        below = s.step[s.loss <= 0.5 * s.loss.iloc[0]]
        expected = below.min() if len(below) else np.nan
        np.testing.assert_equal(value["steps_to_loss_threshold", run_id], expected)
    spectral = du.layers.groupby("run_id").radius_spectral.max()
    got = value["max_radius_spectral"]
    np.testing.assert_allclose(got.to_numpy(), spectral.loc[got.index].to_numpy(), rtol=0)
    init = du.layers.groupby("run_id").init_spectral.first()
    np.testing.assert_allclose(value["rel_radius_spectral"].to_numpy(),
                               (spectral / init).loc[got.index].to_numpy(), rtol=1e-12)


@pytest.mark.slow
def test_diverged_runs_are_left_out_of_fits_and_counted(du, du_analysis):
    _, fits = du_analysis
    assert (du.runs.status[du.runs.lr_base == 1e4] == "diverged").all()
    assert set(fits.lr_config) == {"0.1", "10000"}
    for row in fits[fits.lr_config == "10000"].itertuples():
        assert (row.n_runs, row.n_diverged) == (0, len(WIDTHS) * SEEDS), row.quantity
        assert np.isnan(row.exponent)
    assert (fits.n_diverged[fits.lr_config == "0.1"] == 0).all()

    # One more run marked diverged: the fit is the direct fit without it.
    runs = du.runs.copy()
    victim = runs.index[(runs.lr == 0.1) & (runs.width == 64)][0]
    runs.loc[victim, "status"] = "diverged"
    marked = overparam.Results(du.path, runs, du.steps, du.layers, du.manifest)
    fits = analyze.fit_table(analyze.per_run_quantities(marked), n_boot=100)
    fit = _fit(fits, "max_radius_rowmax", lr_config="0.1", layer=1)
    ok = runs[(runs.lr == 0.1) & (runs.status == "ok")].set_index("run_id")
    rowmax = du.layers.groupby("run_id").radius_rowmax.max().astype(float).loc[ok.index]
    assert (fit.n_runs, fit.n_diverged) == (len(WIDTHS) * SEEDS - 1, 1)
    assert abs(fit.exponent - np.polyfit(np.log(ok.width), np.log(rowmax), 1)[0]) < 1e-10
    table = analyze.format_table(fits)
    assert re.search(r"max_radius_rowmax .* 8 +0 +1$", table, re.M), table


@pytest.mark.slow
def test_optional_columns_are_used_when_present_and_skipped_when_absent_or_nan(du):
    optional = {"steps": ["gram_lambda_min", "gram_change", "gram_init_error"],
                "layers": ["init_spectral"]}
    bare = overparam.Results(du.path, du.runs, du.steps.drop(columns=optional["steps"]),
                             du.layers.drop(columns=optional["layers"]), du.manifest)
    nan = overparam.Results(du.path, du.runs, du.steps.assign(
        **dict.fromkeys(optional["steps"], np.nan)), du.layers.assign(init_spectral=np.nan),
        du.manifest)
    gram = ["rel_radius_spectral", "gram_lambda_min_init", "gram_init_error",
            "max_gram_change", "rel_gram_change"]
    for results in (bare, nan):
        q = analyze.per_run_quantities(results)
        assert not set(gram) & set(q.quantity)
        assert {"max_radius_rowmax", "final_flip_frac", "convergence_rate"} <= set(q.quantity)

    # Synthetic values: step 0 and step 10 carry Gram statistics, the rest are NaN.
    steps = du.steps.copy()
    at0, at10 = steps.step == 0, steps.step == 10
    steps["gram_lambda_min"] = np.where(at0, 0.25, np.where(at10, 0.2, np.nan))
    steps["gram_change"] = np.where(at0, 0.0, np.where(at10, 0.125 * steps.run_id.str.len(),
                                                       np.nan))
    steps["gram_init_error"] = np.where(at0 | at10, 0.5, np.nan)
    layers = du.layers.assign(init_spectral=4.0)
    q = analyze.per_run_quantities(overparam.Results(du.path, du.runs, steps, layers,
                                                     du.manifest))
    v = q[q.status == "ok"].groupby("quantity").value
    assert set(gram) <= set(q.quantity)
    assert (v.get_group("gram_lambda_min_init") == 0.25).all()
    assert (v.get_group("gram_init_error") == 0.5).all()
    assert (v.get_group("max_gram_change") == 2.0).all()  # run ids have 16 characters
    assert (v.get_group("rel_gram_change") == 8.0).all()
    rel = q[q.quantity == "rel_radius_spectral"].set_index("run_id").value
    spectral = q[q.quantity == "max_radius_spectral"].set_index("run_id").value
    np.testing.assert_allclose(rel.to_numpy(), spectral.loc[rel.index].to_numpy() / 4.0)


@pytest.mark.slow
def test_deep_sweep_fits_against_depth_per_layer(deep):
    per_run = analyze.per_run_quantities(deep)
    fits = analyze.fit_table(per_run, n_boot=200)
    assert set(fits.x) == {"depth"}  # the only swept variable with two values
    # Layer 1 exists at both depths: fitted; layer 2 only at depth 2: no fit, counted.
    row = _fit(fits, "max_radius_spectral", x="depth", layer=1)
    spectral = deep.layers[deep.layers.layer == 1].groupby("run_id").radius_spectral.max()
    runs = deep.runs.set_index("run_id")
    slope = np.polyfit(np.log(runs.depth), np.log(spectral.loc[runs.index].astype(float)), 1)[0]
    assert abs(row.exponent - slope) < 1e-10
    assert (row.group, row.n_runs, row.n_seeds, row.predicted) == ("layer=1", 2 * SEEDS,
                                                                   SEEDS, "")
    row = _fit(fits, "max_radius_spectral", x="depth", layer=2)
    assert np.isnan(row.exponent) and row.n_runs == SEEDS
    row = _fit(fits, "convergence_rate", x="depth")  # per run, not per layer
    assert (row.group, row.n_runs) == ("all", 2 * SEEDS) and pd.isna(row.layer)
    text = analyze.format_table(fits)
    assert re.search(r"^max_radius_spectral +depth +layer=1 ", text, re.M), text
    # No run reached the loss threshold: the censored quantity is reported, every run
    # excluded, rather than dropped.
    row = _fit(fits, "steps_to_loss_threshold", x="depth")
    assert (row.n_runs, row.n_excluded) == (0, 2 * SEEDS) and np.isnan(row.exponent)


@pytest.mark.slow
def test_fit_figure_has_one_panel_per_group(du_analysis, du):
    _, fits = du_analysis
    per_run = analyze.per_run_quantities(du)
    figure = analyze.plot_fit(per_run, fits, "max_radius_rowmax", "width")
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["lr=0.1", "lr=10000\n(9 diverged)"]
    assert panels[0].get_xscale() == "log" and panels[0].get_yscale() == "log"
    fitted = [line for line in panels[0].lines if line.get_label().startswith("fit")]
    x, y = fitted[0].get_xydata().T
    assert np.polyfit(np.log(x), np.log(y), 1)[0] == pytest.approx(
        _fit(fits, "max_radius_rowmax", lr_config="0.1").exponent, abs=1e-9)
    assert panels[0].get_xlabel() == analyze.X_VARIABLE_BY_NAME["width"].axis
    assert panels[0].get_ylabel() == analyze.QUANTITY_BY_NAME["max_radius_rowmax"].label


# ------------------------------------------------------------------ registries

def test_every_column_the_analysis_reads_is_in_the_results_schema():
    assert set(RUN_COLUMNS) - {"lr_config"} <= set(schema.RUNS.names)
    assert "lr_spec" in schema.RUNS.names  # what lr_config is written from
    for column, (table, _, _) in analyze.CURVES.items():
        assert column in quantities.SCHEMAS[table].names, column
    with pytest.raises(ValueError, match="not in overparam.schema"):
        analyze.Quantity("typo", False, "", "", "", ("steps.los",), lambda t, o: None)


def test_the_swept_settings_the_analysis_groups_and_sorts_by_are_config_SWEPT():
    # The analysis's column of each swept config field (lr_config: the config's lr as
    # written); every other field keeps its name.
    column = {"widths": "width", "depths": "depth", "lr": "lr_config"}
    swept = [column.get(f, f) for f in config_lib.SWEPT]
    assert sorted(groups.SWEPT_COLUMNS) == sorted(swept)
    assert len(set(groups.SWEPT_COLUMNS)) == len(swept)
    assert set(groups.COLUMN_ORDER) <= set(swept)  # the presentation order names no stale one
    # Each reaches the per-run table, the fit table's columns, its groups and its sort.
    for table in (RUN_COLUMNS, fits_lib.FIT_COLUMNS):
        assert [c for c in table if c in swept] == list(groups.SWEPT_COLUMNS)
    assert sorted(c for c in fits_lib._setting_order() if c != "_lr") == sorted(
        groups.SWEPT_COLUMNS)
    assert fits_lib._group_keys("convergence_rate", "width") == [
        c for c in groups.SWEPT_COLUMNS if c != "width"]
    assert fits_lib._group_keys("max_radius_spectral", "n") == [
        *[c for c in groups.SWEPT_COLUMNS if c != "n"], "layer"]
    # A field newly declared swept comes in, after the others; one no longer swept goes.
    assert groups.swept_columns((*config_lib.SWEPT, "new_field")) == (
        *groups.SWEPT_COLUMNS, "new_field")
    assert "arch" not in groups.swept_columns(
        [f for f in config_lib.SWEPT if f != "arch"])


@pytest.mark.slow
def test_every_quantity_reads_real_columns_and_has_text_and_a_theory_prediction(du):
    options = QuantityOptions()
    assert [q.name for q in analyze.QUANTITIES] == list(analyze.QUANTITY_BY_NAME)
    for q in analyze.QUANTITIES:
        assert q.title and q.text("label", options) and q.text("definition", options), q.name
        for table, column in (c.split(".") for c in q.columns):
            optional = [c for c, *_ in schema.OPTIONAL.get(table, ())]
            assert column in getattr(du, table) or column in optional, (q.name, column)
        for predict in (q.prediction, q.scale_prediction):
            assert predict is None or predict.__module__ == theory.__name__, q.name
        expected = (q.prediction("du", lr_scaling="constant", depth=1, layer=None)
                    if q.prediction else None)
        assert analyze.predicted_exponent(q.name, "width", param="du") == expected
        expected = (q.scale_prediction("mup", center_output=True) if q.scale_prediction
                    else None)
        assert analyze.predicted_exponent(q.name, "output_scale", param="mup",
                                          center_output=True) == expected
        assert analyze.predicted_exponent(q.name, "n", param="du") is None
    assert "0.25" in analyze.QUANTITY_BY_NAME["steps_to_loss_threshold"].text(
        "label", QuantityOptions(loss_threshold=0.25))
    assert "0.9" in analyze.QUANTITY_BY_NAME["steps_to_eos"].text(
        "label", QuantityOptions(eos_fraction=0.9))
    assert [v.name for v in analyze.X_VARIABLES] == ["width", "n", "depth", "output_scale"]
    assert all(v.name in analyze.SWEPT_COLUMNS and v.symbol and v.axis and v.title
               for v in analyze.X_VARIABLES)


@pytest.mark.slow
def test_the_report_defines_every_quantity_or_names_it_skipped(du_analysis):
    out, fits = du_analysis
    report = (out / "report.md").read_text()
    options = QuantityOptions(loss_threshold=0.5)  # du_analysis's
    skipped = re.search(r"^Not in these results.*$", report, re.M)
    for q in analyze.QUANTITIES:
        defined = f"- `{q.name}`: {q.text('definition', options)}\n" in report
        assert defined != bool(skipped and f"`{q.name}`" in skipped.group()), q.name
        fitted = np.isfinite(fits.exponent[fits.quantity == q.name]).any()
        assert fitted == (f"figures/fit_{q.name}_vs_width.png" in report), q.name


# ------------------------------------------------------------------ command line

def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "overparam.analyze", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_prints_the_table_and_writes_the_report(du, tmp_path):
    results = tmp_path / "r"
    shutil.copytree(du.path, results, ignore=shutil.ignore_patterns("analysis"))
    proc = _cli(f"--results={results}", "--n_boot=200", "--plots=false")  # figures: above
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["quantity", "vs", "group", "exponent"]
    assert any(line.startswith("max_radius_rowmax") and "-1/2" in line for line in lines)
    assert (results / "analysis" / "report.md").is_file()
    assert (results / "analysis" / "fits.csv").is_file()


@pytest.mark.parametrize("args,message", [
    (("--results={tmp}",), "not an overparam results directory"),
    (("--results={tmp}/missing",), "not an overparam results directory"),
    ((), "--results: required"),
    (("--results={tmp}", "--level=1.5"), "--level"),
    (("--results={tmp}", "--nonsense=1"), "nonsense"),
])
@pytest.mark.slow
def test_cli_bad_input_is_one_error_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "junk.txt").write_text("not results")
    proc = _cli(*(a.format(tmp=tmp_path) for a in args))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "analysis").exists()


@pytest.mark.slow
def test_cli_reports_a_corrupted_results_directory(du, tmp_path):
    results = tmp_path / "r"
    shutil.copytree(du.path, results, ignore=shutil.ignore_patterns("analysis"))
    (results / "runs.parquet").write_bytes(b"not parquet")
    proc = _cli(f"--results={results}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "corrupted" in proc.stderr


# ------------------------------------------------------------------ medians over seeds

def _slow_median_interval(values, n_boot, level, seed):
    """median_interval written out: the same index draws, then plain Python."""
    v = [x for x in values if not math.isnan(x)]
    k = len(v)

    def median(xs):
        xs = sorted(xs)
        return xs[k // 2] if k % 2 else (xs[k // 2 - 1] + xs[k // 2]) / 2

    draws = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
    medians = sorted(median([v[i] for i in row]) for row in draws)
    q = (1 - Fraction(str(level))) / 2
    return median(v), medians[math.ceil(n_boot * q) - 1], medians[math.ceil(n_boot * (1 - q)) - 1]


def test_median_interval_is_the_seed_bootstrap_of_the_median():
    rng = np.random.default_rng(5)
    for k, n_boot, level in ((3, 1000, 0.95), (4, 999, 0.9), (7, 2000, 0.95), (10, 400, 0.8)):
        v = rng.lognormal(size=k)
        got = analyze.median_interval(v, n_boot=n_boot, level=level, seed=k)
        assert got == pytest.approx(_slow_median_interval(list(v), n_boot, level, k), abs=0)
        assert got == analyze.median_interval(v, n_boot=n_boot, level=level, seed=k)
        assert got[1] <= got[0] <= got[2] and v.min() <= got[1] and got[2] <= v.max()
    # Censored values (+inf: above every observed one) and undefined ones (NaN, left out).
    v = [3.0, np.inf, 1.0, np.nan, np.inf, 2.0]
    got = analyze.median_interval(v, n_boot=500, seed=1)
    assert got == _slow_median_interval(v, 500, 0.95, 1)
    assert got[0] == 3.0 and got[2] == np.inf  # 1, 2, 3, inf, inf
    assert analyze.median_interval([np.inf, np.inf, 4.0])[0] == np.inf
    one = analyze.median_interval([2.0, np.nan])
    assert one[0] == 2.0 and np.isnan(one[1]) and np.isnan(one[2])
    # Against the exact bootstrap distribution: of the 27 resamples of 3 values, the median
    # is the smallest in 7 and the largest in 7 (2.5% < 7/27), so the 95% interval is the
    # whole range.
    assert analyze.median_interval([1.0, 2.0, 4.0], n_boot=4000, seed=3) == (2.0, 1.0, 4.0)


# ------------------------------------------------------------------ paper figures

def _luminance(color) -> float:
    """WCAG relative luminance of an RGB(A) colour (0 black, 1 white)."""
    from matplotlib.colors import to_rgb

    c = np.asarray(to_rgb(color))
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(c @ [0.2126, 0.7152, 0.0722])


def _drawn(fig):
    """fig drawn on an Agg canvas (layout done), and its renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _check_paper_figure(fig) -> None:
    """Paper size, every text >= 8 pt, legends clear of every panel's data area."""
    import matplotlib.text

    assert fig.get_figwidth() in (style.COLUMN_WIDTH_IN, style.PAGE_WIDTH_IN)
    renderer = _drawn(fig)
    small = [(t.get_text(), t.get_fontsize()) for t in fig.findobj(matplotlib.text.Text)
             if t.get_fontsize() < 8]
    assert not small, small
    panels = [ax for ax in fig.axes if ax.get_visible()]
    legends = list(fig.legends) + [ax.get_legend() for ax in panels if ax.get_legend()]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in panels:
            assert not box.overlaps(ax.get_window_extent(renderer)), (
                [t.get_text() for t in legend.get_texts()], ax.get_title())


def _every_figure(du, deep, du_analysis):
    _, fits = du_analysis
    per_run = analyze.per_run_quantities(du, loss_threshold=0.5)
    for quantity, x in dict.fromkeys(zip(fits.quantity, fits.x)):
        if np.isfinite(fits.exponent[(fits.quantity == quantity) & (fits.x == x)]).any():
            yield analyze.plot_fit(per_run, fits, quantity, x,
                                   options=QuantityOptions(loss_threshold=0.5), n_boot=100)
    for column, (table, *_) in analyze.CURVES.items():
        if column in getattr(du, table):  # not the optional ones du does not ask for
            yield analyze.plot_curves(du, column)
    deep_run = analyze.per_run_quantities(deep)
    deep_fits = analyze.fit_table(deep_run, n_boot=100)
    yield analyze.plot_fit(deep_run, deep_fits, "max_radius_spectral", "depth", n_boot=100)
    yield analyze.plot_curves(deep, "radius_spectral")


@pytest.mark.slow
def test_every_figure_has_paper_size_8pt_text_and_legends_outside_the_data(du, deep,
                                                                          du_analysis):
    import matplotlib

    before = dict(matplotlib.rcParams)
    # The caller's defaults must not matter: every size is the figure's own.
    with matplotlib.rc_context({"font.size": 5, "xtick.labelsize": 5, "ytick.labelsize": 5,
                                "legend.fontsize": 5, "axes.titlesize": 5}):
        made = 0
        for fig in _every_figure(du, deep, du_analysis):
            _check_paper_figure(fig)
            made += 1
    assert made >= 14
    assert dict(matplotlib.rcParams) == before  # nothing leaked into the global state


@pytest.mark.slow
def test_colours_are_readable_on_white(du):
    assert all(_luminance(c) < 0.32 for c in style.PALETTE)
    colors = style.width_colors([16, 64, 256, 1024, 4096])
    assert _luminance(colors[4096]) < 0.4  # the widest width: not yellow on white
    assert len(set(colors.values())) == 5
    fig = analyze.plot_curves(du, "loss")
    (ax,) = [a for a in fig.axes if a.get_visible()]
    widest = [line for line in ax.get_lines()
              if line.get_color() == style.width_colors(WIDTHS)[max(WIDTHS)]]
    assert widest and all(_luminance(line.get_color()) < 0.4 for line in widest)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert f"m = {max(WIDTHS)} ({SEEDS} seeds)" in labels


@pytest.mark.slow
def test_each_figure_is_a_png_at_200_dpi_and_a_pdf_beside_it(du_analysis):
    from PIL import Image

    out, _ = du_analysis
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) >= 10
    for png in pngs:
        pdf = png.with_suffix(".pdf")
        assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-", pdf
        assert b"/Type3" not in pdf.read_bytes(), pdf  # TrueType fonts, as venues ask
        with Image.open(png) as image:
            dpi = image.info["dpi"][0]
            assert dpi >= 199.5, (png, dpi)
            assert image.width / dpi == pytest.approx(style.COLUMN_WIDTH_IN, abs=0.02) or (
                image.width / dpi == pytest.approx(style.PAGE_WIDTH_IN, abs=0.02)), png
    report = (out / "report.md").read_text()
    assert "(figures/fit_max_radius_rowmax_vs_width.pdf)" in report


@pytest.mark.slow
def test_scaling_figure_medians_band_theory_slope_and_du_bound(du, du_analysis):
    _, fits = du_analysis
    per_run = analyze.per_run_quantities(du, loss_threshold=0.5)
    bounds = analyze.radius_bounds(du)
    fig = analyze.plot_fit(per_run, fits, "max_radius_rowmax", "width", bounds=bounds,
                           n_boot=300, seed=7)
    ax = [a for a in fig.axes if a.get_visible()][0]
    ok = per_run[(per_run.quantity == "max_radius_rowmax") & (per_run.lr == 0.1)]
    # Medians with bootstrap error bars: median_interval of each width's seeds.
    (bars,) = ax.containers
    line, _, (segments,) = bars
    for (xv, med), seg in zip(line.get_xydata(), segments.get_segments()):
        expected = analyze.median_interval(ok.value[ok.width == xv], n_boot=300, seed=7)
        assert med == pytest.approx(expected[0], rel=1e-12)
        assert seg[:, 1] == pytest.approx(expected[1:], rel=1e-12)
    # The fit's interval as a band through the fit's centre (the geometric mean of m).
    fit = _fit(fits, "max_radius_rowmax", lr_config="0.1")
    x0 = math.exp(np.log(ok.width).mean())
    y0 = fit.prefactor * x0 ** fit.exponent
    (band,) = [c for c in ax.collections if c.get_label() == "_band"]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx(
        max(y0 * (m / x0) ** e for m in (16, 256) for e in (fit.ci_low, fit.ci_high)), rel=1e-9)
    # The theory line: a slope only, through the fit's centre, and said to be so.
    (theory_line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("theory")]
    tx, ty = theory_line.get_xydata().T
    assert np.polyfit(np.log(tx), np.log(ty), 1)[0] == pytest.approx(-0.5)
    assert np.interp(np.log(x0), np.log(tx), np.log(ty)) == pytest.approx(np.log(y0))
    assert "slope" in theory_line.get_label() and "only" in theory_line.get_label()
    assert f"through the fit at m = {x0:.3g}" in theory_line.get_label()
    # Du et al.'s R', absolute: the median over seeds at each width.
    (bound,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("Du et al.")]
    expected = bounds.merge(du.runs[["run_id", "width"]]).groupby("width").bound.median()
    np.testing.assert_allclose(bound.get_xydata(), np.c_[expected.index, expected.values])
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "Du et al. bound" in legend and "absolute" in legend and "theory: slope" in legend


@pytest.mark.slow
def test_radius_bound_is_du_et_al_s_r_prime_from_each_run_s_initial_outputs(du):
    from overparam import model

    bounds = analyze.radius_bounds(du)
    ok = du.runs[du.runs.status == "ok"]
    assert sorted(bounds.run_id) == sorted(ok.run_id)  # diverged runs: no bound
    assert (bounds.quantity == "max_radius_rowmax").all() and (bounds.layer == 1).all()
    for run in ok.iloc[[0, -1]].itertuples():
        X, y = du.dataset(run.dataset_id)
        u0 = np.asarray(model.apply(du.initial_net(run.run_id), X, param="du")[0])
        direct = theory.du_radius_bound(X, y, u0, run.width)
        assert bounds.set_index("run_id").bound[run.run_id] == pytest.approx(direct, rel=1e-9)
    deep_runs = du.runs.assign(param="zou")  # outside Du et al.'s setting: no bound
    assert analyze.radius_bounds(overparam.Results(du.path, deep_runs, du.steps, du.layers,
                                                   du.manifest)).empty


@pytest.mark.slow
def test_loss_curves_draw_du_et_al_s_bound_and_the_kernel_s(du):
    b = loss_bounds(du)
    run = du.runs[du.runs.status == "ok"].iloc[0]
    mine = b[b.run_id == run.run_id].set_index("step")
    loss0 = du.steps[(du.steps.run_id == run.run_id) & (du.steps.step == 0)].loss.iloc[0]
    t = mine.index.to_numpy()
    np.testing.assert_allclose(mine.du_bound, loss0 * theory.du_linear_rate(run.lr,
                                                                           run.lambda0, t))
    rate = theory.kernel_loss_rate(run.lr, run.lambda0, reduction="sum")
    np.testing.assert_allclose(mine.kernel, loss0 * np.exp(-rate * t))
    assert set(b.run_id) == set(du.runs.run_id[du.runs.status == "ok"])
    fig = analyze.plot_curves(du, "loss")
    (ax,) = [a for a in fig.axes if a.get_visible()]
    black = [ln for ln in ax.get_lines() if ln.get_color() == "black"]
    assert sorted(ln.get_linestyle() for ln in black) == ["--", ":"]
    (dashed,) = [ln for ln in black if ln.get_linestyle() == "--"]
    expected = b.groupby("step").du_bound.median()
    np.testing.assert_allclose(dashed.get_ydata(), expected.to_numpy())
    labels = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "Du et al. Thm 4.1 bound" in labels and "kernel, slowest mode" in labels


@pytest.mark.slow
def test_gram_change_curves_leave_out_step_0_and_its_round_off(du):
    fig = analyze.plot_curves(du, "gram_change")
    (ax,) = [a for a in fig.axes if a.get_visible()]
    drawn = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
    assert drawn and all(min(ln.get_xdata()) > 0 for ln in drawn)
    steps = du.steps.merge(du.runs[du.runs.status == "ok"][["run_id", "width"]])
    roundoff = steps.gram_change[steps.step == 0].max()
    later = steps[steps.step > 0].dropna(subset=["gram_change"])
    medians = later.groupby(["width", "step"]).gram_change.median()
    bottom, top = ax.get_ylim()
    assert bottom >= 10 * roundoff and bottom <= medians.min() and top >= medians.max()
    assert top / bottom < 1e3  # the range of the changes, not down to round-off (1e-8)
    assert "step 0 not drawn" in fig.get_suptitle().replace("\n", " ")


@pytest.mark.slow
def test_censored_runs_are_drawn_at_the_top_and_counted_per_width(du):
    # A loss threshold that every run of one width misses, and some other run reaches.
    ok = du.steps[du.steps.run_id.isin(du.runs.run_id[du.runs.status == "ok"])]
    ratio = ok.groupby("run_id").loss.min() / ok.groupby("run_id").loss.first()
    ratio = ratio.to_frame("r").join(du.runs.set_index("run_id").width)
    per_width = ratio.groupby("width").r.min()
    threshold = float((per_width.max() + ratio.r.min()) / 2)
    never = (ratio.r > threshold).groupby(ratio.width).sum()
    assert never.max() == SEEDS and never.min() < SEEDS  # one width all censored

    per_run = analyze.per_run_quantities(du, loss_threshold=threshold)
    fits = analyze.fit_table(per_run, n_boot=100)
    table = analyze.censored_counts(per_run)
    rows = table[table.quantity == "steps_to_loss_threshold"].set_index("width")
    assert rows.censored.to_dict() == {w: n for w, n in never.items() if n}
    assert (rows.runs == SEEDS).all() and (rows.off_axis == 0).all()

    fig = analyze.plot_fit(per_run, fits, "steps_to_loss_threshold", "width",
                           options=QuantityOptions(loss_threshold=threshold))
    ax = [a for a in fig.axes if a.get_visible()][0]
    counts = {round(a.xy[0]): int(a.get_text()) for a in ax.texts}
    assert counts == {w: n for w, n in never.items() if n}
    markers = [ln for ln in ax.get_lines() if ln.get_label() == "_censored"]
    assert {round(ln.get_xdata()[0]) for ln in markers} == set(counts)
    assert all(ln.get_marker() == "^" and ln.get_ydata()[0] > 0.9 for ln in markers)
    points = {round(x) for c in ax.collections if c.get_label() == "_runs"
              for x in c.get_offsets()[:, 0]}
    assert points | set(counts) == set(WIDTHS)  # no width silently left out
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "never reached the loss threshold" in legend and "not > 0" not in legend


# ------------------------------------------------------------------ several sweeps

@pytest.fixture(scope="module")
def sgd(tmp_path_factory):
    """The du sweep's SGD twin, smaller: batches of 8, widths 16 and 64, 2 seeds."""
    out = tmp_path_factory.mktemp("analyze") / "sgd"
    return _sweep(out, name="sgd", widths=WIDTHS[:2], num_seeds=2, steps=10, d=8, n=(16,),
                  lr=(0.1,), optimizer=("sgd",), batch_size=(8,))


@pytest.mark.slow
def test_two_sweeps_are_fitted_each_on_its_own_and_drawn_together(du, sgd, du_analysis,
                                                                  tmp_path):
    _, du_fits = du_analysis
    assert analyze.SWEEP not in du_fits  # one sweep: the columns of old
    out = tmp_path / "both"
    fits = analyze.run_analysis([du.path, sgd.path], out=out, loss_threshold=0.5, plots=False)
    assert fits.attrs["out"] == str(out) and list(fits.columns[:2]) == ["sweep", "quantity"]
    assert list(dict.fromkeys(fits.sweep)) == ["du", "sgd"]
    pd.testing.assert_frame_equal(
        fits[fits.sweep == "du"].drop(columns="sweep").reset_index(drop=True), du_fits)
    alone = analyze.fit_table(analyze.per_run_quantities(sgd, loss_threshold=0.5))
    pd.testing.assert_frame_equal(
        fits[fits.sweep == "sgd"].drop(columns="sweep").reset_index(drop=True), alone)
    assert list(pd.read_csv(out / "fits.csv").columns) == list(fits.columns)
    per_run = pd.read_parquet(out / "per_run.parquet")
    assert set(per_run.sweep) == {"du", "sgd"}
    report = (out / "report.md").read_text()
    assert report.startswith("# Comparison of sweeps `du`, `sgd`")
    assert f"- `du`: `{du.path}`." in report and f"- `sgd`: `{sgd.path}`." in report
    assert f"into `{out}`" in report and "| sweep | quantity |" in report

    # The figures overlay the sweeps: one panel of lr=0.1 holds both, told apart.
    fig = analyze.plot_fit(per_run, fits, "max_radius_rowmax", "width",
                           bounds=analyze.radius_bounds(du).assign(sweep="du"), n_boot=100)
    _check_paper_figure(fig)
    panel = [a for a in fig.axes if a.get_visible()][0]
    assert panel.get_title() == "lr=0.1"
    fit_labels = [t.get_text() for t in panel.get_legend().get_texts()]
    assert [lab.split(":")[0] for lab in fit_labels] == ["du", "sgd"]
    runs = [c for c in panel.collections if c.get_label() == "_runs"]
    assert len(runs) == 2 and len({c.get_paths()[0].vertices.tobytes() for c in runs}) == 2
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "du (full batch, optimizer=gd)" in legend and "sgd (B=8, optimizer=sgd)" in legend
    curves = analyze.plot_curves({"du": du, "sgd": sgd}, "loss")
    _check_paper_figure(curves)
    (ax,) = [a for a in curves.axes if a.get_visible()]
    styles = {ln.get_linestyle() for ln in ax.get_lines() if ln.get_color() != "black"}
    assert styles == {"-", "--"}
    assert "seeds: du 3, sgd 2" in curves.get_suptitle().replace("\n", " ")


@pytest.mark.slow
def test_sweep_labels_are_config_names_or_directories_where_names_collide(du, sgd):
    assert analyze.sweep_labels([du, sgd]) == ["du", "sgd"]
    twin = overparam.Results(Path("elsewhere") / "b", du.runs, du.steps, du.layers,
                             {**du.manifest, "config": {**du.manifest["config"]}})
    assert analyze.sweep_labels([du, twin]) == [du.path.name, "b"]
    same_dir = overparam.Results(Path("elsewhere") / du.path.name, du.runs, du.steps,
                                 du.layers, du.manifest)
    assert analyze.sweep_labels([du, same_dir]) == [str(du.path), str(same_dir.path)]
    assert analyze.output_dir(["a", "b"], ["x y", "z/w"]) == Path("a/analysis/compare_x-y_z-w")
    assert analyze.output_dir(["a"]) == Path("a/analysis")


@pytest.mark.slow
def test_cli_compares_two_sweeps(du, sgd, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(du.path, a, ignore=shutil.ignore_patterns("analysis"))
    shutil.copytree(sgd.path, b, ignore=shutil.ignore_patterns("analysis"))
    proc = _cli(f"--results={a}", f"--results={b}", "--n_boot=100", "--plots=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["sweep", "quantity", "vs"]
    rowmax = [line.split()[0] for line in lines if "max_radius_rowmax" in line]
    assert rowmax == ["du", "du", "sgd"]
    out = a / "analysis" / "compare_du_sgd"
    assert f"report: {out / 'report.md'}" in proc.stdout and (out / "report.md").is_file()
    assert sorted(p.name for p in (a / "analysis").iterdir()) == ["compare_du_sgd"]
    assert not (b / "analysis").exists()


@pytest.mark.parametrize("second,message", [
    ("{a}/../a/", "is given twice"),  # the same directory, spelt otherwise
    ("{tmp}/missing", "not an overparam results directory"),
])
@pytest.mark.slow
def test_cli_bad_sweeps_are_one_error_line_and_nothing_written(du, tmp_path, second,
                                                               message):
    a = tmp_path / "a"
    shutil.copytree(du.path, a, ignore=shutil.ignore_patterns("analysis"))
    proc = _cli(f"--results={a}", f"--results={second.format(a=a, tmp=tmp_path)}")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (a / "analysis").exists()
