"""The lazy and rich regimes measured directly (overparam.lazy; docs/THEORY.md section 10),
each against a slow reference: the twin against an explicit Jacobian in float64 and against
u_lin(k+1) = u_lin(k) - eta H(0) (u_lin(k) - y) iterated by hand, the infinite-width
trajectory against the same iteration with its kernel, the features against a plain forward
pass, the alignment against its formula in NumPy; a network with its twin alone = in a batch;
and off by default."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overparam import chunks, data, lazy, metrics, schema, theory, train, trainstate

N, D = 8, 5


def _static(**kw):
    base = dict(width=16, depth=1, n=N, d=D, batch_size=N, loss="squared", optimizer="gd",
                param="ntk", chunk_records=4)
    return train.Static(**{**base, **kw})


def _data(k=1, dtype=np.float32, n_test=0):
    ds = data.make_dataset(dict(dataset="sphere", labels="gaussian", n=N, d=D, seed=0,
                                dtype="float32", teacher_width=4), n_test=n_test)
    X, y = jnp.asarray(ds.X, dtype), jnp.asarray(ds.y, dtype)
    out = trainstate.Data(jnp.stack([X] * k), jnp.stack([y] * k))
    if n_test:
        out = out._replace(X_test=jnp.stack([jnp.asarray(ds.X_test, dtype)] * k),
                           y_test=jnp.stack([jnp.asarray(ds.y_test, dtype)] * k))
    return out


def _scalars(lrs, alpha=1.0, dtype=jnp.float32):
    k = len(lrs)
    return trainstate.RunScalars(
        seed=jnp.arange(1, k + 1, dtype=jnp.uint32), init_tag=jnp.full((k,), 2, jnp.uint32),
        batch_tag=jnp.full((k,), 3, jnp.uint32), lr=jnp.asarray(lrs, dtype),
        output_scale=jnp.full((k,), alpha, dtype))


def _run(static, scalars, d):
    program = chunks.jit_program(static)
    state = program.init(trainstate.batch_keys(scalars), d)
    state, rec = program.chunk(state, scalars, d, jnp.int32(0))
    return state, chunks.columns(jax.device_get(rec), static)


def _one(tree):
    return jax.tree_util.tree_map(lambda a: a[0], tree)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mlp", "overparam.modules:MLP"])
def test_linear_output_is_f0_plus_jacobian_times_displacement_in_float64(arch):
    with jax.enable_x64(True):
        static = _static(arch=arch, depth=2, dtype="float64", linear_twin=True)
        d = _data(dtype=np.float64)
        state = _one(chunks.jit_program(static).init(trainstate.batch_keys(_scalars([0.1])), d))
        trained = trainstate.trainable(static, state.delta)
        leaves, treedef = jax.tree_util.tree_flatten(trained)
        keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
        lin = jax.tree_util.tree_unflatten(treedef, [
            0.1 * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])
        X = d.X[0]
        net = trainstate.network(static)

        def f(flat):
            t = jax.tree_util.tree_unflatten(treedef, unravel(flat))
            return net.apply(trainstate.weights(state.net0, trainstate.with_trainable(
                static, state.delta, t)), X)[0]

        sizes = [a.size for a in leaves]
        unravel = lambda flat: [p.reshape(a.shape) for p, a in
                                zip(jnp.split(flat, np.cumsum(sizes)[:-1]), leaves)]
        zero = jnp.zeros(sum(sizes))
        J = np.asarray(jax.jacrev(f)(zero))                                    # (n, P)
        disp = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(lin)])
        f0, f_lin = lazy.linear_output(static, state.net0, lin, X)
        np.testing.assert_allclose(f0, f(zero), rtol=1e-12)
        np.testing.assert_allclose(f_lin, np.asarray(f(zero)) + J @ disp, rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("param,alpha", [("mup", 0.5)])
def test_twin_follows_the_kernel_iteration_with_h0(param, alpha):
    """GD, squared loss (sum, 1/2): u_lin(k+1) = u_lin(k) - eta H(0) (u_lin(k) - y), H(0)
    the NTK Gram with the multipliers (mup's), for any output scale; in float64."""
    with jax.enable_x64(True):
        static = _static(param=param, depth=2, dtype="float64", linear_twin=True,
                         chunk_records=6)
        d, lr = _data(dtype=np.float64), 0.3
        state0 = _one(chunks.jit_program(static).init(
            trainstate.batch_keys(_scalars([lr], alpha, jnp.float64)), d))
        _, cols = _run(static, _scalars([lr], alpha, jnp.float64), d)
        H = np.asarray(trainstate.network(static).gram(state0.net0, d.X[0], False))
        y = np.asarray(d.y[0])
        u = alpha * np.asarray(trainstate.network(static).apply(state0.net0, d.X[0])[0])
        want = []
        for _ in range(6):
            want.append(0.5 * np.sum((u - y) ** 2))
            u = u - lr * H @ (u - y)
        np.testing.assert_allclose(cols["lin_loss"][0], want, rtol=1e-9)
        assert cols["lin_distance"][0, 0] < 1e-12 and np.isnan(cols["lin_distance_rel"][0, 0])
        assert (cols["lin_distance"][0, 1:] > 0).all()


@pytest.mark.slow
def test_infinite_width_trajectory_is_the_twin_when_given_h0():
    """The infinite-width trajectory is kernel GD with s H^inf: handed H(0) / s for H^inf,
    it is the twin's trajectory, so ||g - g_inf|| = ||g - g_lin|| at every record (zou:
    s = m); and with H^inf it is y + (I - eta s H^inf)^k (u(0) - y) (float64)."""
    with jax.enable_x64(True):
        static = _static(param="zou", dtype="float64", linear_twin=True, infinite_width=True)
        d, lr = _data(dtype=np.float64), 0.05
        scalars = _scalars([lr], 1.0, jnp.float64)
        state0 = _one(chunks.jit_program(static).init(trainstate.batch_keys(scalars), d))
        H0 = trainstate.network(static).gram(state0.net0, d.X[0], False)
        s = theory.gram_scale("zou", 16)
        _, cols = _run(static, scalars, d._replace(H_inf=(H0 / s)[None]))
        np.testing.assert_allclose(cols["inf_distance"], cols["lin_distance"], rtol=1e-8,
                                   atol=1e-12)
        H_inf = theory.gram_inf(np.asarray(d.X[0]), param="zou", depth=1)
        state = state0
        one = _one(scalars)
        data1 = trainstate.Data(d.X[0], d.y[0], H_inf=jnp.asarray(H_inf))
        u0, y = np.asarray(state0.f_inf), np.asarray(d.y[0])
        for k in range(4):
            want = y + np.linalg.matrix_power(np.eye(N) - lr * s * H_inf, k) @ (u0 - y)
            np.testing.assert_allclose(state.f_inf, want, rtol=1e-10)
            state = lazy.inf_step(static, one, state, data1)


@pytest.mark.slow
def test_features_are_those_of_a_plain_forward_pass():
    static = _static(depth=2, param="mup", track_features=True, chunk_records=1)
    d, scalars = _data(), _scalars([0.05])
    program = chunks.jit_program(static)
    state = program.init(trainstate.batch_keys(scalars), d)
    net = trainstate.network(static)
    h0 = [jax.nn.relu(z) for z in net.apply(_one(state).net0, d.X[0])[1]]
    for c in range(3):
        weights = trainstate.weights(_one(state).net0, _one(state).delta)
        h = [np.asarray(jax.nn.relu(z)) for z in net.apply(weights, d.X[0])[1]]
        state, rec = program.chunk(state, scalars, d, jnp.int32(c))
        cols = chunks.columns(jax.device_get(rec), static)
        np.testing.assert_allclose(cols["feature_rms"][0, 0],
                                   [np.sqrt(np.mean(a ** 2)) for a in h], rtol=1e-5)
        np.testing.assert_allclose(cols["feature_change_rms"][0, 0],
                                   [np.sqrt(np.mean((a - b) ** 2)) for a, b in zip(h, h0)],
                                   rtol=1e-4, atol=1e-7)
    assert (cols["feature_change_rms"][0, 0] > 0).all()


@pytest.mark.slow
def test_alignment_is_the_numpy_formula():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(N, N))
    H, y = A @ A.T, rng.normal(size=N)
    C = np.eye(N) - np.ones((N, N)) / N
    K, c = C @ H @ C, C @ y
    want = np.sum(K * np.outer(c, c)) / (np.linalg.norm(K) * (c @ c))
    np.testing.assert_allclose(metrics.kernel_alignment(jnp.asarray(H), jnp.asarray(y)), want,
                               rtol=1e-5)
    static = _static(gram_every=2, track_alignment=True)
    d, scalars = _data(), _scalars([0.1])
    program = chunks.jit_program(static)
    state = program.init(trainstate.batch_keys(scalars), d)
    _, rec = program.chunk(state, scalars, d, jnp.int32(0))
    cols = chunks.columns(jax.device_get(rec), static)
    H0, y0 = np.asarray(state.gram0[0], np.float64), np.asarray(d.y[0], np.float64)
    K, c = C @ H0 @ C, C @ y0
    want = np.sum(K * np.outer(c, c)) / (np.linalg.norm(K) * (c @ c))
    np.testing.assert_allclose(cols["kernel_alignment"][0, 0], want, rtol=1e-4)
    assert np.isnan(cols["kernel_alignment"][0, 1]) and np.isfinite(cols["kernel_alignment"][0, 2])


@pytest.mark.slow
def test_a_network_and_its_twin_alone_equal_them_in_a_batch():
    static = _static(optimizer="sgd", batch_size=4, momentum=0.9, linear_twin=True,
                     track_features=True, n_test=N)
    d, lrs = _data(3, n_test=N), [0.05, 0.2, 0.1]
    _, together = _run(static, _scalars(lrs), d)
    alone = _run(static, jax.tree_util.tree_map(lambda a: a[1:2], _scalars(lrs)),
                 jax.tree_util.tree_map(lambda a: a[1:2], d))[1]
    for k in schema.optional("steps", static) + schema.optional("layers", static):
        np.testing.assert_allclose(together[k][1:2], alone[k], rtol=1e-5, atol=1e-7,
                                   err_msg=k)
    assert np.isfinite(together["lin_distance_test"][:, 1:]).all()


def test_everything_is_off_by_default():
    static = _static()
    assert train.step_fields(static) == train.STEP_FIELDS
    assert train.layer_fields(static) == train.LAYER_FIELDS
    state = chunks.jit_program(static).init(trainstate.batch_keys(_scalars([0.1])), _data())
    assert state.twin is None and state.f_inf is None and state.h0 is None
    on = _static(linear_twin=True, infinite_width=True, track_features=True,
                 track_alignment=True, gram_every=1)
    assert train.step_fields(on)[len(train.STEP_FIELDS):] == tuple(
        c for c, *_ in schema.OPTIONAL["steps"])
    # the infinite-width trajectory exists only for kernel GD on the mlp: NaN otherwise
    assert not train.kernel_gd(_static(infinite_width=True, param="mup"))
    assert not train.kernel_gd(_static(infinite_width=True, optimizer="sgd"))
    assert train.kernel_gd(_static(infinite_width=True, param="du"))


@pytest.mark.slow
def test_a_sweep_writes_loads_and_analyzes_the_optional_columns(tmp_path):
    """Through the engine: the optional columns are written where asked, verified by load
    (their schema is the manifest's fields'), and the analysis computes their quantities;
    a sweep that asks for none has none of them."""
    import overparam
    from overparam import config as config_lib
    from overparam import engine
    from overparam.analysis import per_run

    base = dict(name="t", widths=(8,), depths=(2,), num_seeds=1, n=(N,), d=D, steps=4,
                chunk_steps=4, lr=(0.1,), param=("ntk", "mup"), n_test=4)
    on = dict(linear_twin=True, infinite_width=True, track_features=True, gram_every=2,
              track_alignment=True, sharpness_every=2)
    engine.run_sweep(config_lib.validate({**base, **on}), tmp_path / "on", show_progress=False)
    engine.run_sweep(config_lib.validate(base), tmp_path / "off", show_progress=False)
    r, off = overparam.load(tmp_path / "on"), overparam.load(tmp_path / "off")
    assert list(off.steps.columns) == schema.STEPS.names
    assert list(off.layers.columns) == schema.LAYERS.names
    assert list(r.steps.columns) == schema.STEPS.names + [c for c, *_ in
                                                          schema.OPTIONAL["steps"]]
    assert list(r.layers.columns) == schema.LAYERS.names + ["feature_rms", "feature_change_rms"]
    mup = r.runs.run_id[r.runs.param == "mup"]
    assert r.steps.inf_distance[r.steps.run_id.isin(mup)].isna().all()
    assert r.steps.inf_distance[~r.steps.run_id.isin(mup)].notna().all()
    # the plain columns do not depend on what else is recorded
    key = ["run_id", "step"]
    np.testing.assert_allclose(r.steps.sort_values(key).loss, off.steps.sort_values(key).loss,
                               rtol=1e-6)
    quantities = set(per_run.per_run_quantities(r).quantity)
    assert {"max_lin_distance", "max_inf_distance", "max_feature_movement",
            "max_alignment_change", "eta_lambda0", "loss_peak_ratio"} <= quantities


@pytest.mark.slow
def test_a_resumed_batch_goes_on_with_its_twin_and_its_infinite_width_trajectory(tmp_path):
    """The twin and f_inf change as the network trains: a checkpoint keeps them
    (checkpoint.TRAINED_FIELDS), so a batch restored into a fresh init goes on as if
    never stopped."""
    from overparam import checkpoint

    static = _static(linear_twin=True, infinite_width=True, chunk_records=2)
    d, scalars = _data(), _scalars([0.3])
    d = d._replace(H_inf=jnp.asarray(theory.gram_inf(np.asarray(d.X[0], np.float64),
                                                     param="ntk", depth=1), jnp.float32)[None])
    program = chunks.jit_program(static)
    fresh = program.init(trainstate.batch_keys(scalars), d)
    state, _ = program.chunk(fresh, scalars, d, jnp.int32(0))
    meta = checkpoint.CheckpointMeta(chunks_done=1, step=2)
    checkpoint.save(tmp_path, 0, meta, checkpoint.fetch_trained(state))
    restored = checkpoint.restore(tmp_path, 0, program.init(trainstate.batch_keys(scalars), d),
                                  meta)
    _, straight = program.chunk(state, scalars, d, jnp.int32(2))
    _, resumed = program.chunk(restored, scalars, d, jnp.int32(2))
    a, b = (chunks.columns(jax.device_get(r), static) for r in (straight, resumed))
    for k in ("lin_distance", "lin_loss", "inf_distance", "loss"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (a["inf_distance"] > 0).all() and (a["lin_distance"] > 0).all()
