"""Real images and held-out points: scikit-learn's digits, test splits, test metrics, and
Arora et al.'s measure, each against its definition.

The digits pipeline is checked against scikit-learn's raw images (centered by the mean
image, unit norm; labels from each image's digit; train and test disjoint as samples);
the test metrics of the compiled program against a float64 NumPy evaluation of the same
weights, a loop over test points; arora_bound against sqrt(2 y^T (H^inf)^-1 y / n)
computed with an explicit inverse from the training split written to datasets/.
"""

from __future__ import annotations

import functools
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

import overparam
from overparam import chunks, data, engine, initial, losses, model, theory, train, trainstate
from overparam import config as config_lib


def _ident(**kw):
    base = dict(dataset="digits", labels="task", n=40, d=64, seed=0, dtype="float64",
                digits_task="3v8")
    return {**base, **kw}


@functools.cache
def _raw():
    images, digits = load_digits(return_X_y=True)
    return np.asarray(images, np.float64), np.asarray(digits)


def _image_key(x):
    return tuple(np.round(x, 12))


@functools.cache
def _catalogue():
    """{unit image (rounded): [digits of the raw images that give it]}."""
    images, digits = _raw()
    unit = images - images.mean(axis=0)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    out: dict = {}
    for x, dig in zip(unit, digits):
        out.setdefault(_image_key(x), []).append(int(dig))
    return out


def test_digits_images_are_the_centered_images_on_the_unit_sphere():
    images, digits = data.digits_images()
    raw, raw_digits = _raw()
    assert images.shape == (1797, 64) and images.dtype == np.float64
    np.testing.assert_array_equal(digits, raw_digits)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, rtol=1e-13)
    centered = raw - raw.mean(axis=0)  # the mean image of all 1,797, pixel by pixel
    np.testing.assert_allclose(images * np.linalg.norm(centered, axis=1)[:, None], centered,
                               atol=1e-12)
    assert tuple(np.bincount(digits)) == config_lib.DIGIT_COUNTS


@pytest.mark.parametrize("task,labels", [("3v8", "task"), ("even_odd", "task"),
                                         ("value", "task"), ("0v1", "random_sign")])
def test_a_draw_is_disjoint_samples_of_the_tasks_images_with_their_labels(task, labels):
    ds = data.make_dataset(_ident(digits_task=task, labels=labels, n=60), n_test=250)
    assert ds.X.shape == (60, 64) and ds.X_test.shape == (250, 64)
    catalogue = _catalogue()
    used = Counter(_image_key(x) for x in np.concatenate([ds.X, ds.X_test]))
    for key, count in used.items():  # every point is an image, no sample drawn twice
        assert key in catalogue and count <= len(catalogue[key])
    pair = config_lib.digit_pair(task)
    raw_digits = _raw()[1]
    for X, y in ((ds.X, ds.y), (ds.X_test, ds.y_test)):
        np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-13)
        digit = np.array([catalogue[_image_key(x)][0] for x in X])
        if pair:
            assert set(digit) <= set(pair)
        if labels == "random_sign":
            assert set(y) == {-1.0, 1.0}
        elif pair:
            np.testing.assert_array_equal(y, np.where(digit == pair[0], 1.0, -1.0))
        elif task == "even_odd":
            np.testing.assert_array_equal(y, np.where(digit % 2 == 0, 1.0, -1.0))
        else:
            want = (digit - raw_digits.mean()) / raw_digits.std()
            np.testing.assert_allclose(y, want, rtol=1e-13)
    assert np.isnan(ds.separation) == (task == "value")


def test_n_test_zero_is_no_test_split_and_minus_one_the_automatic_one():
    runs = config_lib.expand(config_lib.validate(dict(dataset="digits", n=(359,), n_test=0)))
    assert {r.n_test for r in runs} == {0}  # all 360 images of 0v1 but one may train
    runs = config_lib.expand(config_lib.validate(dict(dataset="digits", n=(60,))))
    assert {r.n_test for r in runs} == {300}
    runs = config_lib.expand(config_lib.validate(dict(dataset="digits", n=(60,),
                                                      digits_task="even_odd")))
    assert {r.n_test for r in runs} == {config_lib.TEST_CAP}
    runs = config_lib.expand(config_lib.validate(dict(n=(20,))))
    assert {r.n_test for r in runs} == {20}  # synthetic: as many as it trains on


def test_a_draw_larger_than_the_tasks_images_is_refused():
    with pytest.raises(ValueError, match="357 images"):
        data.make_dataset(_ident(n=60), n_test=298)  # 3v8: 183 + 174 images


def test_draws_are_per_seed_exactly_reproducible_and_n_test_only_adds_points():
    a = data.make_dataset(_ident(), n_test=50)
    b = data.make_dataset(_ident(), n_test=50)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    other = data.make_dataset(_ident(seed=1), n_test=50)
    assert not np.array_equal(a.X, other.X)
    more = data.make_dataset(_ident(), n_test=120)
    np.testing.assert_array_equal(more.X, a.X)          # the training set never moves
    np.testing.assert_array_equal(more.X_test[:50], a.X_test)
    none = data.make_dataset(_ident(), n_test=0)
    np.testing.assert_array_equal(none.X, a.X)
    assert none.X_test.shape == (0, 64)


@pytest.mark.parametrize("ident", [
    dict(dataset="sphere", labels="gaussian", n=20, d=5),
    dict(dataset="zou", labels="teacher", n=20, d=5, mu=0.5, teacher_width=4),
    dict(dataset="zou", labels="random_sign", n=20, d=5, mu=0.5, phi=0.4),
    dict(dataset="sphere", labels="teacher_regression", n=20, d=5, teacher_width=4)])
def test_synthetic_test_points_follow_the_training_sets_law_and_leave_it_alone(ident):
    ident = dict(ident, seed=3, dtype="float64")
    ds = data.make_dataset(ident, n_test=30)
    alone = data.make_dataset(ident)
    np.testing.assert_array_equal(ds.X, alone.X)  # results written before the split hold
    np.testing.assert_array_equal(ds.y, alone.y)
    assert ds.X_test.shape == (30, 5) and ds.y_test.shape == (30,)
    np.testing.assert_allclose(np.linalg.norm(ds.X_test, axis=1), 1.0, rtol=1e-12)
    if ident["dataset"] == "zou":
        np.testing.assert_allclose(ds.X_test[:, -1], 0.5)
    if ident.get("phi"):  # separated from every point of the other class, train included
        X, y = np.concatenate([ds.X, ds.X_test]), np.concatenate([ds.y, ds.y_test])
        assert theory.separation(X, y) >= 0.4
    if ident["labels"] == "teacher_regression":  # the training targets' scale for both
        assert abs(np.std(ds.y) - 1.0) < 1e-12 and 0.3 < np.std(ds.y_test) < 3.0


# ------------------------------------------------------------------ test metrics


def _numpy_outputs(static, net, delta, X):
    """f(x) of the network net + delta (float64), one point at a time."""
    hidden = [np.asarray(a, np.float64) + np.asarray(b, np.float64)
              for a, b in zip(net.hidden, delta.hidden)]
    out = np.asarray(net.out, np.float64) + np.asarray(delta.out, np.float64)
    scales, c_out = model.forward_scales(static.param, d=static.d, width=static.width,
                                         depth=static.depth)
    f = np.zeros(len(X))
    for i, x in enumerate(np.asarray(X, np.float64)):
        h = x
        for W, c in zip(hidden, scales):
            h = np.maximum(c * (W @ h), 0.0)
        f[i] = c_out * float(out @ h)
    return f


def _numpy_test_metrics(static, net0, delta, X, y, f0, alpha):
    """The held-out loss and error of net0 + delta, in float64, and the fraction of points
    whose error float32 rounding may decide (within 1e-4 of the threshold: the centered
    model's outputs at step 0 are 0 up to rounding)."""
    f = _numpy_outputs(static, net0, delta, X)
    g = alpha * (f - f0 if static.center_output else f)
    y = np.asarray(y, np.float64)
    per = np.asarray(losses.per_example(static.loss, jnp.asarray(g), jnp.asarray(y)))
    loss = per.sum() * static.n / len(X) if static.reduction == "sum" else per.mean()
    margin = y * g if static.sign_labels else static.regression_tol - np.abs(g - y)
    error = np.mean(margin <= 0) if static.sign_labels else np.mean(margin < 0)
    return loss, error, np.mean(np.abs(margin) < 1e-4)


@pytest.mark.parametrize("param,loss,task,center,alpha,reduction", [
    ("du", "squared", "3v8", False, 1.0, "sum"),
    ("ntk", "logistic", "even_odd", True, 2.0, "mean"),
    ("mup", "squared", "value", False, 1.0, "mean"),
])
@pytest.mark.slow
def test_test_metrics_are_a_numpy_evaluation_of_the_same_network(param, loss, task, center,
                                                                 alpha, reduction):
    n, n_test = 24, 40
    ds = data.make_dataset(_ident(digits_task=task, n=n, dtype="float32"), n_test=n_test)
    sign = task != "value"
    static = train.Static(width=16, depth=2, n=n, d=64, batch_size=n, loss=loss,
                          optimizer="gd", param=param, reduction=reduction, sign_labels=sign,
                          chunk_records=1, center_output=center, n_test=n_test,
                          regression_tol=0.3)
    hyper = trainstate.RunScalars(
        *(jnp.asarray(v) for v in (np.uint32(1), np.uint32(2), np.uint32(3))),
        lr=jnp.float32(0.2), output_scale=jnp.float32(alpha))
    X, y, Xt, yt = (jnp.asarray(a) for a in (ds.X, ds.y, ds.X_test, ds.y_test))
    init = jax.jit(functools.partial(initial.init_single, static))
    chunk = jax.jit(functools.partial(chunks.chunk_single, static))
    state = init(hyper, trainstate.Data(X, y, X_test=Xt, y_test=yt))
    f0 = _numpy_outputs(static, state.net0, state.delta, Xt)  # delta is 0 at step 0
    for t in range(6):
        want_loss, want_error, edge = _numpy_test_metrics(static, state.net0, state.delta, Xt,
                                                          yt, f0, alpha)
        state, rec = chunk(state, hyper, trainstate.Data(X, y, X_test=Xt, y_test=yt),
                           jnp.int32(t))
        cols = chunks.columns(jax.device_get(rec))
        np.testing.assert_allclose(cols["test_loss"][0], want_loss, rtol=2e-5, atol=1e-7)
        assert abs(cols["test_error"][0] - want_error) <= edge + 1e-6, (t, edge)


@pytest.mark.slow
def test_a_program_with_test_points_needs_them():
    static = train.Static(width=8, depth=1, n=6, d=4, batch_size=6, loss="squared",
                          optimizer="gd", param="du", chunk_records=1, n_test=3)
    hyper = trainstate.RunScalars(
        *(jnp.asarray(v) for v in (np.uint32(1), np.uint32(2), np.uint32(3))),
        lr=jnp.float32(0.1), output_scale=jnp.float32(1))
    X, y = jnp.ones((6, 4)), jnp.ones(6)
    state = initial.init_single(static, hyper, trainstate.Data(X, y))
    with pytest.raises(ValueError, match="n_test=3"):
        chunks.chunk_single(static, state, hyper, trainstate.Data(X, y), jnp.int32(0))


# ------------------------------------------------------------------ a digits sweep


@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "r"
    sweep = config_lib.validate(dict(
        name="dg", dataset="digits", digits_task=("0v1", "even_odd"), widths=(32,),
        depths=(1, 2), n=(30,), n_test=100, num_seeds=2, steps=10, lr=("theory",),
        param=("du", "ntk")))
    engine.run_sweep(sweep, out, show_progress=False)
    return overparam.load(out)


@pytest.mark.slow
def test_a_digits_sweep_records_test_metrics_and_writes_both_splits(digits_sweep):
    r = digits_sweep
    assert set(r.runs.digits_task) == {"0v1", "even_odd"} and (r.runs.n_test == 100).all()
    assert r.steps.test_loss.notna().all() and r.steps.test_error.between(0, 1).all()
    run = r.runs.iloc[0]
    X, y = r.dataset(run.dataset_id)
    Xt, yt = r.dataset(run.dataset_id, "test")
    assert X.shape == (30, 64) and Xt.shape == (100, 64) and set(yt) <= {-1.0, 1.0}
    again = data.make_dataset(config_lib.data_identity(
        config_lib.validate(dict(r.manifest["config"])), seed=int(run.seed), n=30,
        task=run.digits_task), n_test=100)
    np.testing.assert_array_equal(Xt, again.X_test)
    # Step 0's test metrics of each run from its rebuilt initial weights, in NumPy.
    for _, run in r.runs.iterrows():
        net0 = r.initial_net(run.run_id)
        Xt, yt = r.dataset(run.dataset_id, "test")
        static = train.Static(width=32, depth=int(run.depth), n=30, d=64, batch_size=30,
                              loss="squared", optimizer="gd", param=run.param,
                              sign_labels=True)
        zero = jax.tree_util.tree_map(np.zeros_like, net0)
        loss, error, edge = _numpy_test_metrics(static, net0, zero, Xt, yt, None, 1.0)
        row = r.steps[(r.steps.run_id == run.run_id) & (r.steps.step == 0)].iloc[0]
        np.testing.assert_allclose(row.test_loss, loss, rtol=1e-5)
        assert abs(row.test_error - error) <= edge + 1e-6


@pytest.mark.slow
def test_arora_bound_is_the_measure_of_each_runs_training_set(digits_sweep):
    r = digits_sweep
    for _, run in r.runs.iterrows():
        X, y = r.dataset(run.dataset_id)
        H = theory.gram_inf(X.astype(np.float64), param=run.param, depth=int(run.depth))
        if run.param == "du" and run.depth == 1:
            np.testing.assert_allclose(H, theory.du_gram_inf(X), rtol=1e-12)
        y = y.astype(np.float64)
        direct = np.sqrt(2.0 * y @ np.linalg.inv(H) @ y / len(y))  # an inverse, on purpose
        assert run.arora_bound == pytest.approx(direct, rel=1e-8)


def test_arora_bound_of_a_singular_kernel_is_nan():
    X = np.eye(3)[[0, 1, 1]]  # two equal points: H^inf is singular
    assert np.isnan(theory.arora_bound(theory.du_gram_inf(X), np.array([1.0, -1.0, 1.0])))


@pytest.mark.parametrize("fields,field", [
    (dict(dataset="digits", d=32), "d"),
    (dict(labels="task"), "labels"),
    (dict(dataset="digits", n=(400,)), "n"),
    (dict(dataset="digits", n=(400,), n_test=0), "n"),
    (dict(dataset="digits", n_test=-2), "n_test"),
    (dict(dataset="digits", n=(300,), n_test=100), "n_test"),
    (dict(digits_task=("0v1", "2v3")), "digits_task"),
    (dict(dataset="digits", digits_task=("4v4",)), "digits_task"),
    (dict(dataset="digits", digits_task=("value", "0v1")), "digits_task"),
    (dict(dataset="digits", digits_task=("value",), loss=("hinge",)), "digits_task"),
    (dict(dataset="digits", phi=0.3), "phi"),
])
def test_bad_digits_settings_are_one_line_naming_the_field(fields, field):
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.validate(fields)
    assert info.value.field == field and "\n" not in str(info.value)


@pytest.mark.slow
def test_a_sweep_without_test_points_records_nan_test_metrics(tmp_path):
    sweep = config_lib.validate(dict(name="s", widths=(8,), num_seeds=2, n=(6,), d=4,
                                     steps=3, n_test=0))
    engine.run_sweep(sweep, tmp_path / "r", show_progress=False)
    r = overparam.load(tmp_path / "r")
    assert r.steps.test_loss.isna().all() and r.steps.test_error.isna().all()
    assert (r.runs.n_test == 0).all() and r.dataset(r.runs.dataset_id[0], "test")[0].shape \
        == (0, 4)


@pytest.mark.slow
def test_the_bound_fit_is_a_least_squares_line_through_each_groups_runs(digits_sweep,
                                                                       tmp_path):
    from scipy import stats

    from overparam import analyze
    from overparam.analysis import fits

    per_run = analyze.per_run_quantities(digits_sweep)
    table = fits.bound_fit_table(per_run, n_boot=200)
    assert len(table) == 4  # param x depth; the task (and n) vary within each
    runs = digits_sweep.runs
    steps = digits_sweep.steps
    last = steps[steps.step == steps.step.max()].set_index("run_id").test_error
    for row in table.itertuples():
        mine = runs[(runs.param == row.param) & (runs.depth == row.depth)]
        x, y = mine.arora_bound.to_numpy(), last.loc[mine.run_id].to_numpy(float)
        slope, intercept = np.polyfit(x, y, 1)
        assert row.n_runs == len(mine) == 4 and row.n_seeds == 2  # 2 tasks x 2 seeds
        assert row.slope == pytest.approx(slope, rel=1e-9, abs=1e-12)
        assert row.intercept == pytest.approx(intercept, rel=1e-9, abs=1e-12)
        assert row.below_bound == np.mean(y <= x)
        if len(np.unique(y)) > 1:
            assert row.spearman == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-12)
        assert row.slope_low <= row.slope <= row.slope_high
    analyze.run_analysis(digits_sweep.path, out=tmp_path / "a", n_boot=100, plots=False)
    written = pd.read_csv(tmp_path / "a" / "generalization.csv")
    assert len(written) == 4 and "## Generalization" in (tmp_path / "a" / "report.md").read_text()
    fig = analyze.plot_bound(per_run, table)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 4
    for ax in axes:  # the runs, the fitted line and the line test error = measure
        dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        assert len(dashed) == 1 and np.allclose(*dashed[0].get_data())
