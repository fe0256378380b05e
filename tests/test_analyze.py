"""Tests of overparam.analyze (the command line) and overparam.analysis: the seed bootstrap,
fits of real tiny sweeps against a direct pandas computation, diverged runs, optional
columns, the registries of quantities and x variables, the report's files and the CLI.

Two real sweeps run in-process on the CPU (module fixtures, a few seconds each): a Du-style
width sweep with one absurd step size that diverges, and a deep zou classification sweep
with SGD over two depths.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import overparam
from overparam import analyze, engine, schema, theory
from overparam import config as config_lib
from overparam.analysis import quantities
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
    fits = analyze.analyze(du.path, out=out, loss_threshold=0.5)
    return out, fits


def _fit(fits, quantity, x="width", **key):
    rows = fits[(fits.quantity == quantity) & (fits.x == x)]
    for k, v in key.items():
        rows = rows[rows[k] == v]
    assert len(rows) == 1, (quantity, x, key, len(rows))
    return rows.iloc[0]


def test_analysis_writes_report_tables_and_every_linked_figure(du_analysis):
    out, fits = du_analysis
    report = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert links and all((out / link).is_file() for link in links), links
    assert {"figures/fit_max_radius_rowmax_vs_width.png", "figures/curves_loss.png",
            "figures/curves_flip_frac.png"} <= set(links)
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        Path(link).name for link in links)
    pd.testing.assert_frame_equal(pd.read_csv(out / "fits.csv")[["quantity", "exponent"]],
                                  fits[["quantity", "exponent"]])
    per_run = pd.read_parquet(out / "per_run.parquet")
    assert {"run_id", "seed", "width", "quantity", "layer", "value", "status"} <= set(per_run)
    assert "max_radius_rowmax" in report and "| quantity | vs | group |" in report


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
    assert "max_radius_spectral  depth  layer=1" in text, text


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
    assert panels[0].get_xlabel() == analyze.X_VARIABLE["width"].axis
    assert panels[0].get_ylabel() == analyze.QUANTITY["max_radius_rowmax"].label


# ------------------------------------------------------------------ registries

def test_every_column_the_analysis_reads_is_in_the_results_schema():
    assert set(quantities.RUN_COLUMNS) - {"lr_config"} <= set(schema.RUNS.names)
    assert "lr_spec" in schema.RUNS.names  # what lr_config is written from
    for column, (table, _, _) in analyze.CURVES.items():
        assert column in quantities.SCHEMAS[table].names, column
    with pytest.raises(ValueError, match="not in overparam.schema"):
        analyze.Quantity("typo", False, "", "", "", ("steps.los",), lambda t, o: None)


def test_every_quantity_reads_real_columns_and_has_text_and_a_theory_prediction(du):
    options = QuantityOptions()
    assert [q.name for q in analyze.QUANTITIES] == list(analyze.QUANTITY)
    for q in analyze.QUANTITIES:
        assert q.title and q.text("label", options) and q.text("definition", options), q.name
        for table, column in (c.split(".") for c in q.columns):
            assert column in getattr(du, table), (q.name, table, column)
        assert q.prediction is None or q.prediction.__module__ == theory.__name__, q.name
        expected = q.prediction("du", lr_scaling="constant", depth=1) if q.prediction else None
        assert analyze.predicted_exponent(q.name, "width", param="du") == expected
        assert analyze.predicted_exponent(q.name, "n", param="du") is None
    assert "0.25" in analyze.QUANTITY["steps_to_loss_threshold"].text(
        "label", QuantityOptions(loss_threshold=0.25))
    assert [v.name for v in analyze.X_VARIABLES] == ["width", "n", "depth"]
    assert all(v.name in analyze.SETTINGS and v.symbol and v.axis and v.title
               for v in analyze.X_VARIABLES)


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
def test_cli_bad_input_is_one_error_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "junk.txt").write_text("not results")
    proc = _cli(*(a.format(tmp=tmp_path) for a in args))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "analysis").exists()


def test_cli_reports_a_corrupted_results_directory(du, tmp_path):
    results = tmp_path / "r"
    shutil.copytree(du.path, results, ignore=shutil.ignore_patterns("analysis"))
    (results / "runs.parquet").write_bytes(b"not parquet")
    proc = _cli(f"--results={results}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "corrupted" in proc.stderr
