"""Identities of the compiled program: batching, chunking, scanning, compiling, divergence."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import overparam
from overparam import chunks, data, engine, initial, losses, model, programs, train, trainstate
from overparam import config as config_lib

N, D = 12, 6


def _static(**kw):
    base = dict(width=16, depth=2, n=N, d=D, batch_size=N, loss="squared", optimizer="gd",
                param="du", chunk_records=3)
    return train.Static(**{**base, **kw})


def _data(labels="gaussian", seed=0):
    ds = data.make_dataset(dict(dataset="sphere", labels=labels, n=N, d=D, seed=seed,
                                dtype="float32", teacher_width=4))
    return jnp.asarray(ds.X), jnp.asarray(ds.y)


def _hyper(seeds, lrs):
    k = len(seeds)
    return trainstate.RunScalars(seed=jnp.asarray(seeds, jnp.uint32),
                                 init_tag=jnp.full((k,), 11, jnp.uint32),
                                 batch_tag=jnp.full((k,), 5, jnp.uint32),
                                 lr=jnp.asarray(lrs, jnp.float32),
                                 output_scale=jnp.ones((k,), jnp.float32))


def _run_all(static, hyper, X, y, num_chunks):
    """Records of every chunk, concatenated along the record axis."""
    program = chunks.jit_program(static)
    state = program.init(trainstate.batch_keys(hyper), trainstate.Data(X, y))
    out = []
    for c in range(num_chunks):
        start = jnp.int32(c * static.chunk_records * static.record_every)
        state, rec = program.chunk(state, hyper, trainstate.Data(X, y), start)
        out.append(chunks.columns(jax.device_get(rec)))
    return state, {k: np.concatenate([r[k] for r in out], axis=1) for k in out[0]}


def _assert_records_close(a, b, rtol=1e-5, atol=1e-7):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,loss,labels", [("gd", "squared", "gaussian"),
                                                   ("sgd", "logistic", "random_sign")])
def test_network_alone_equals_network_in_batch(optimizer, loss, labels):
    static = _static(optimizer=optimizer, loss=loss, batch_size=4,
                     sign_labels=labels != "gaussian")
    X, y = _data(labels)
    seeds, lrs = [3, 1, 4, 1, 5], [0.05, 0.1, 0.02, 0.2, 0.1]
    Xs, ys = jnp.stack([X] * 5), jnp.stack([y] * 5)
    _, together = _run_all(static, _hyper(seeds, lrs), Xs, ys, 3)
    for i in (0, 3):
        _, alone = _run_all(static, _hyper([seeds[i]], [lrs[i]]), Xs[:1], ys[:1], 3)
        _assert_records_close({k: v[i:i + 1] for k, v in together.items()}, alone)


@pytest.mark.slow
def test_scan_of_k_records_equals_k_single_records():
    X, y = _data()
    hyper = _hyper([2, 7], [0.1, 0.05])
    Xs, ys = jnp.stack([X, X]), jnp.stack([y, y])
    state_k, scanned = _run_all(_static(chunk_records=9), hyper, Xs, ys, 1)
    state_1, single = _run_all(_static(chunk_records=1), hyper, Xs, ys, 9)
    _assert_records_close(scanned, single)
    for a, b in zip(jax.tree_util.tree_leaves(state_k.delta),
                    jax.tree_util.tree_leaves(state_1.delta)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # The power iteration's random vectors are drawn per chunk, as a function of the step.
    for a, b in zip(state_k.v, state_1.v):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_gd_step_is_minus_lr_times_gradient():
    static = _static(depth=1, chunk_records=1)
    X, y = _data()
    lr = 0.3
    init = jax.jit(functools.partial(initial.init_single, static))
    chunk = jax.jit(functools.partial(chunks.chunk_single, static))
    hyper = trainstate.RunScalars(
        *(jnp.asarray(v) for v in (np.uint32(1), np.uint32(2), np.uint32(3),
                                   np.float32(lr), np.float32(1))))
    state = init(hyper, trainstate.Data(X, y))

    def loss_fn(W):
        f, _ = model.apply(model.Net((W,), state.net0.out), X, param="du")
        return losses.reduce(losses.per_example("squared", f, y), reduction="sum", n=N)

    grad = jax.grad(loss_fn)(state.net0.hidden[0])
    state, rec = chunk(state, hyper, trainstate.Data(X, y), jnp.int32(0))
    rec = chunks.columns(rec)
    np.testing.assert_allclose(state.delta.hidden[0], -lr * grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rec["grad_norm"][0], np.linalg.norm(grad), rtol=1e-5)
    assert rec["radius_spectral"][0, 0] == 0 and rec["flip_frac"][0, 0] == 0


@pytest.mark.slow
def test_chunk_does_not_recompile_on_second_call():
    static = _static(width=24)
    X, y = _data()
    program = chunks.jit_program(static)
    hyper = _hyper([0, 1, 2], [0.1] * 3)
    Xs, ys = jnp.stack([X] * 3), jnp.stack([y] * 3)
    state = program.init(trainstate.batch_keys(hyper), trainstate.Data(Xs, ys))
    state, _ = program.chunk(state, hyper, trainstate.Data(Xs, ys), jnp.int32(0))
    state, _ = program.chunk(state, hyper, trainstate.Data(Xs, ys),
                             jnp.int32(static.chunk_records))
    assert program.chunk._cache_size() == 1
    assert program.init._cache_size() == 1


@pytest.mark.slow
def test_train_output_moves_the_output_layer():
    static = _static(train_output=True)
    X, y = _data()
    _, rec = _run_all(static, _hyper([0], [0.1]), X[None], y[None], 3)
    assert rec["radius_output"][0, 0] == 0
    assert np.all(rec["radius_output"][0, 1:] > 0)
    _, frozen = _run_all(_static(), _hyper([0], [0.1]), X[None], y[None], 3)
    assert np.all(frozen["radius_output"] == 0)


@pytest.mark.slow
def test_momentum_differs_from_plain_gd_after_the_first_step():
    X, y = _data()
    _, plain = _run_all(_static(), _hyper([0], [0.05]), X[None], y[None], 3)
    _, heavy = _run_all(_static(momentum=0.9), _hyper([0], [0.05]), X[None], y[None], 3)
    np.testing.assert_allclose(plain["loss"][0, :2], heavy["loss"][0, :2], rtol=1e-6)
    assert not np.allclose(plain["loss"][0, 3:], heavy["loss"][0, 3:])


@pytest.mark.slow
def test_divergent_network_is_frozen_and_leaves_its_neighbours_alone():
    X, y = _data()
    Xs, ys = jnp.stack([X] * 3), jnp.stack([y] * 3)
    static = _static(chunk_records=9)
    state, rec = _run_all(static, _hyper([0, 1, 2], [0.1, 1e4, 0.05]), Xs, ys, 1)
    d = int(state.diverged_step[1])
    assert d >= 0 and state.diverged_step[0] == -1 and state.diverged_step[2] == -1
    assert np.all(np.isnan(rec["loss"][1, d:])) and np.all(np.isfinite(rec["loss"][1, :d]))
    assert np.all(np.isnan(rec["radius_spectral"][1, d:]))
    _, sane = _run_all(static, _hyper([0, 2], [0.1, 0.05]), Xs[:2], ys[:2], 1)
    _assert_records_close({k: v[[0, 2]] for k, v in rec.items()}, sane)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,loss,labels", [("gd", "squared", "gaussian"),
                                                   ("sgd", "logistic", "random_sign")])
def test_cache_groups_change_nothing(optimizer, loss, labels):
    """A batch run as groups of networks (chunks.chunk_batch's lax.map) gives the
    records and the state of the whole batch at once, to float32 rounding (the
    products' batch dimension differs)."""
    kw = dict(optimizer=optimizer, loss=loss, batch_size=4, sign_labels=labels != "gaussian")
    X, y = _data(labels)
    hyper = _hyper([3, 1, 4, 1, 5, 9], [0.05, 0.1, 0.02, 0.2, 0.1, 0.3])
    Xs, ys = jnp.stack([X] * 6), jnp.stack([y] * 6)
    state_a, whole = _run_all(_static(**kw), hyper, Xs, ys, 2)
    for group in (1, 2, 3):
        state_b, grouped = _run_all(_static(**kw, cache_group=group), hyper, Xs, ys, 2)
        _assert_records_close(whole, grouped, rtol=1e-6, atol=0)
        for a, b in zip(*(jax.tree_util.tree_leaves((s.delta, s.opt_state))
                          for s in (state_a, state_b))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        for a, b in zip(state_a.v, state_b.v):  # Ritz vectors: as in the test above
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        for field in ("step", "alive", "diverged_step"):
            np.testing.assert_array_equal(getattr(state_a, field), getattr(state_b, field))


@pytest.mark.parametrize("kw", [
    dict(gram_every=1, sharpness_every=2, chunk_records=4),          # both, a period of 2
    dict(gram_every=6, record_every=2, chunk_records=3, optimizer="sgd", batch_size=4),
    dict(sharpness_every=3, chunk_records=3, depth=1, width=80),  # passes over D
])
@pytest.mark.slow
def test_the_accelerators_programs_record_what_the_cpus_do(kw):
    """fixed_loops (a fixed count of power iterations; Gram and sharpness records at static
    positions, each chunk whole periods of them) against the CPU's programs (early stop,
    lax.cond on the step), chunk after chunk: the same records to 1e-5 (the radii differ
    by the iterations' rounding), NaN on the same steps, the same training."""
    X, y = _data()
    hyper = _hyper([2, 7, 1], [0.1, 0.05, 0.2])
    Xs, ys = jnp.stack([X] * 3), jnp.stack([y] * 3)
    cpu = _static(**kw)
    state_a, early = _run_all(cpu, hyper, Xs, ys, 3)
    state_b, fixed = _run_all(dataclasses.replace(cpu, fixed_loops=True), hyper, Xs, ys, 3)
    for k in early:
        np.testing.assert_array_equal(np.isnan(early[k]), np.isnan(fixed[k]), err_msg=k)
    _assert_records_close(early, fixed, rtol=1e-5, atol=1e-6)
    for name, every in (("gram_lambda_max", cpu.gram_every),
                        ("sharpness", cpu.sharpness_every)):
        measured = np.isfinite(fixed[name][0])
        assert measured.tolist() == [bool(every) and s % every == 0 for s in fixed["step"][0]]
    for a, b in zip(*(jax.tree_util.tree_leaves((s.delta, s.opt_state, s.sharp_v))
                      for s in (state_a, state_b))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_the_accelerators_chunk_holds_whole_periods():
    X, y = _data()
    static = _static(gram_every=2, sharpness_every=3, chunk_records=4, fixed_loops=True)
    with pytest.raises(ValueError, match="whole periods of 6 records"):
        _run_all(static, _hyper([1], [0.1]), X[None], y[None], 1)
    assert chunks.record_kinds(static) == [((True, True), 1), ((False, False), 1),
                                          ((True, False), 1), ((False, True), 1),
                                          ((True, False), 1), ((False, False), 1)]


def test_a_cache_group_must_divide_the_batch():
    X, y = _data()
    hyper = _hyper([1, 2, 3], [0.1] * 3)
    with pytest.raises(ValueError, match="group 2 does not divide the batch of 3"):
        _run_all(_static(cache_group=2), hyper, jnp.stack([X] * 3), jnp.stack([y] * 3), 1)


# ---------------------------------------------------------------- through the engine


def _sweep(**kw):
    base = dict(name="t", widths=(8, 16), depths=(1,), num_seeds=3, n=(N,), d=D, steps=10,
                chunk_steps=4, lr=(0.1, 0.05))
    return config_lib.validate({**base, **kw})


def _tables(out):
    r = overparam.load(out)
    return r, r.steps.set_index(["run_id", "step"]), r.layers.set_index(["run_id", "step",
                                                                          "layer"])


@pytest.mark.slow
def test_tables_do_not_depend_on_chunking_or_batching(tmp_path):
    engine.run_sweep(_sweep(), tmp_path / "a", show_progress=False)
    engine.run_sweep(_sweep(chunk_steps=3, memory_budget_mb=0.01), tmp_path / "b",
                     show_progress=False)
    ra, sa, la = _tables(tmp_path / "a")
    rb, sb, lb = _tables(tmp_path / "b")
    assert len(sa) == 12 * 11 and len(la) == 12 * 11
    for a, b in ((sa, sb), (la, lb)):
        b = b.loc[a.index]
        np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-5, atol=1e-7)
    cols = ["run_id", "status", "final_loss"]
    a, b = (r.runs[cols].sort_values("run_id", ignore_index=True) for r in (ra, rb))
    assert a.run_id.tolist() == b.run_id.tolist() and a.status.tolist() == b.status.tolist()
    np.testing.assert_allclose(a.final_loss, b.final_loss, rtol=1e-5)


@pytest.mark.slow
def test_a_sweep_on_the_accelerators_programs_writes_the_cpus_tables(tmp_path, monkeypatch):
    """The whole engine with the programs an accelerator runs (programs.fixed_loops()
    faked True): the planner's chunks of whole Gram and sharpness periods, the fixed
    programs, the donated state and its checkpoints after every chunk; the tables equal the
    CPU's to 1e-5 (radii: the power iterations' rounding)."""
    kw = dict(gram_every=2, sharpness_every=2, steps=12, chunk_steps=5, n_test=4,
              checkpoint_seconds=0)
    engine.run_sweep(_sweep(**kw), tmp_path / "cpu", show_progress=False)
    monkeypatch.setattr(programs, "fixed_loops", lambda: True)
    logs = []
    engine.run_sweep(_sweep(**kw), tmp_path / "acc", show_progress=False, log_fn=logs.append)
    assert "chunks of 4 records" in logs[0], logs[0]  # whole periods of 2 steps
    ra, sa, la = _tables(tmp_path / "cpu")
    rb, sb, lb = _tables(tmp_path / "acc")
    assert len(sa) == len(sb) == 12 * 13 and sb.gram_lambda_max.notna().sum() == 12 * 7
    for a, b in ((sa, sb), (la, lb)):
        b = b.loc[a.index]
        np.testing.assert_array_equal(a.isna().to_numpy(), b.isna().to_numpy())
        np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-5, atol=1e-6)
    assert ra.runs.run_id.tolist() == rb.runs.run_id.tolist()


@pytest.mark.slow
@pytest.mark.cpu_only  # cache groups are the CPU's (programs.cache_bytes)
def test_tables_do_not_depend_on_cache_groups(tmp_path, monkeypatch):
    engine.run_sweep(_sweep(), tmp_path / "a", show_progress=False)
    # 1536 B: groups of 4 networks of width 8 (6 padded to 8), of 2 of width 16 (N = 12).
    monkeypatch.setattr(programs, "CPU_CACHE_BYTES", 2 * N * 16 * 4)
    logs = []
    engine.run_sweep(_sweep(), tmp_path / "b", show_progress=False, log_fn=logs.append)
    assert "(+2 pad) width=8" in logs[0] and "in groups of 4" in logs[0], logs[0]
    assert "in groups of 2" in logs[0]
    _, sa, la = _tables(tmp_path / "a")
    _, sb, lb = _tables(tmp_path / "b")
    assert len(sb) == len(sa) == 12 * 11 and len(lb) == len(la)
    for a, b in ((sa, sb), (la, lb)):
        np.testing.assert_allclose(a.to_numpy(float), b.loc[a.index].to_numpy(float),
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_a_run_alone_matches_the_same_run_in_a_big_sweep(tmp_path):
    engine.run_sweep(_sweep(), tmp_path / "many", show_progress=False)
    engine.run_sweep(_sweep(widths=(16,), lr=(0.05,), num_seeds=1, seed=2), tmp_path / "one",
                     show_progress=False)
    _, s_many, l_many = _tables(tmp_path / "many")
    r_one, s_one, l_one = _tables(tmp_path / "one")
    assert len(r_one.runs) == 1
    np.testing.assert_allclose(s_one.to_numpy(float), s_many.loc[s_one.index].to_numpy(float),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(l_one.to_numpy(float), l_many.loc[l_one.index].to_numpy(float),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_sweep_compiles_once_per_shape(tmp_path, monkeypatch):
    traces = []
    original = chunks.chunk_batch

    def counting(*args, **kw):
        traces.append(args[0])
        return original(*args, **kw)

    monkeypatch.setattr(chunks, "chunk_batch", counting)
    chunks.jit_program.cache_clear()
    sweep = _sweep(widths=(8, 16, 24), num_seeds=4, lr=(0.1, 0.05, 0.02), steps=12,
                   chunk_steps=4)
    summary = engine.run_sweep(sweep, tmp_path / "r", show_progress=False)
    chunks.jit_program.cache_clear()
    assert summary.num_runs == 36
    assert sorted(s.width for s in traces) == [8, 16, 24]  # 3 shapes, 4 chunks each: 3 traces
    assert summary.num_compiles == 3


@pytest.mark.slow
def test_record_every_keeps_every_rth_step(tmp_path):
    engine.run_sweep(_sweep(widths=(8,), steps=12), tmp_path / "all", show_progress=False)
    engine.run_sweep(_sweep(widths=(8,), steps=12, record_every=3), tmp_path / "some",
                     show_progress=False)
    _, s_all, _ = _tables(tmp_path / "all")
    r, s_some, _ = _tables(tmp_path / "some")
    assert sorted(s_some.index.get_level_values("step").unique()) == [0, 3, 6, 9, 12]
    np.testing.assert_allclose(s_some.to_numpy(float), s_all.loc[s_some.index].to_numpy(float),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_diverged_runs_are_marked_and_counted(tmp_path):
    summary = engine.run_sweep(_sweep(widths=(8,), lr=(0.1, 1e5), num_seeds=2),
                               tmp_path / "r", show_progress=False)
    r = overparam.load(tmp_path / "r")
    bad = r.runs[r.runs.lr == 1e5]
    assert summary.num_diverged == 2 and set(bad.status) == {"diverged"}
    assert bad.diverged_step.notna().all()
    assert set(r.runs[r.runs.lr == 0.1].status) == {"ok"}
    assert r.steps[r.steps.run_id.isin(bad.run_id)].loss.isna().any()


@pytest.mark.slow
def test_float64_sweep_runs_in_float64(tmp_path):
    engine.run_sweep(_sweep(widths=(8,), num_seeds=1, lr=(0.1,), dtype="float64"),
                     tmp_path / "r", show_progress=False)
    r = overparam.load(tmp_path / "r")
    X, _ = r.dataset(r.runs.dataset_id[0])
    assert X.dtype == np.float64 and r.manifest["config"]["dtype"] == "float64"
    assert jnp.zeros(1).dtype == jnp.float32  # the global flag is untouched


# A value other than _static's (below: base) for each field that init_static resets.
INIT_IGNORES = dict(batch_size=4, loss="logistic", optimizer="sgd", reduction="mean",
                    sign_labels=True, record_every=7, chunk_records=5, power_tol=1e-3,
                    power_max_iters=5, regression_tol=0.5, momentum=0.5, gram_every=7,
                    sharpness_every=7, sharpness_iters=5, cache_group=2, fixed_loops=True,
                    power_iters=3, track_alignment=True)


@pytest.mark.slow
def test_init_reads_none_of_the_fields_init_static_resets():
    """Shapes with one init_static share an init program, so init must give the same
    state for every value of the fields init_static sets to one value: every one of them
    (those whose program flag is not INIT) is varied here."""
    X, _ = _data()
    keys = trainstate.batch_keys(_hyper([0, 1], [0.1, 0.2]))
    Xs = jnp.stack([X, X])
    base = _static(momentum=0.9, gram_every=2, sharpness_every=2)
    resets = {f.name for f in dataclasses.fields(base)
              if f.metadata["program"] != config_lib.INIT}
    assert set(INIT_IGNORES) == resets
    other = dataclasses.replace(base, **INIT_IGNORES)
    assert [k for k in resets if getattr(other, k) == getattr(base, k)] == []
    assert train.init_static(base) == train.init_static(other)
    arrays = trainstate.Data(Xs, None)
    a = jax.vmap(functools.partial(initial.init_from_keys, base))(keys, arrays)
    b = jax.vmap(functools.partial(initial.init_from_keys, other))(keys, arrays)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_init_static_keeps_what_init_reads():
    """init_static changes no field that init reads (INIT), and keeps whether a NONZERO
    field is zero."""
    base = _static(momentum=0.9, gram_every=2)
    reset = train.init_static(base)
    for f in dataclasses.fields(base):
        if f.metadata["program"] == config_lib.INIT:
            assert getattr(reset, f.name) == getattr(base, f.name), f.name
        if f.metadata["program"] == config_lib.NONZERO:
            assert bool(getattr(reset, f.name)) == bool(getattr(base, f.name)), f.name


def test_batch_keys_are_each_networks_own_keys():
    """Derived in padded blocks on the host, the keys are those of each network alone."""
    seeds = list(range(trainstate.KEY_BLOCK + 3))   # more than one block, padded
    hyper = _hyper(seeds, [0.1] * len(seeds))
    keys = trainstate.batch_keys(hyper)
    for i in (0, trainstate.KEY_BLOCK - 1, trainstate.KEY_BLOCK + 2):
        alone = trainstate.derive_keys(jax.tree_util.tree_map(lambda a, i=i: a[i], hyper))
        for got, want in zip(keys, alone, strict=True):
            np.testing.assert_array_equal(got[i], want)
    base = jax.random.PRNGKey(seeds[5])
    np.testing.assert_array_equal(keys.batch[5], jax.random.fold_in(base, 5))


def test_a_batchs_absent_or_unread_arrays_change_no_program():
    """trainstate.Data: an absent array (None) is no argument of a program, and one it does
    not read is pruned, so init lowers to one program with or without y, and the chunk
    with or without H_inf (as before the arrays were one pytree)."""
    static = _static(gram_every=2)
    keys, scalars, arrays = programs.abstract_arguments(static, 2)
    assert arrays.H_inf is not None and arrays.X_test is None and arrays.y_test is None
    program = chunks.jit_program(static)
    init = program.init.trace(keys, arrays)
    assert init.lower().as_text() == program.init.lower(keys, arrays._replace(y=None)).as_text()
    start = jax.ShapeDtypeStruct((), jnp.int32)
    with_h = program.chunk.lower(init.out_info, scalars, arrays, start).as_text()
    assert with_h == program.chunk.lower(init.out_info, scalars, arrays._replace(H_inf=None),
                                         start).as_text()
    assert "tensor<2x12x12xf32>" in init.lower().as_text()  # init reads H^inf (n = 12)
