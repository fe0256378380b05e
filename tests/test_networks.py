"""Architectures: the flax modules against the hand-written MLP and against slow definitions.

- The flax twin of the MLP (overparam.modules.MLP), run as a user's module through the
  generic path, trains to the hand-written MLP's tables bit for bit (every metric but the
  Gram statistics, which the generic path forms from the Jacobian: to rounding).
- The CNN and ResNet forward passes against a NumPy loop over positions and channels; a
  convolution's radii against its kernel as an explicit matrix, and its operator norm
  against the singular values of the explicit convolution matrix; flips against the
  signs of every (example, position, channel) pre-activation.
- A batch of networks equals each network alone; the module protocol's errors are one
  line naming config.arch; a ResNet sweep on digits runs through the command line and
  resumes after a kill to the same tables; the example module of examples/ runs.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from tables import assert_same_tables

import overparam
import overparam.analyze
from overparam import (
    chunks,
    data,
    engine,
    initial,
    metrics,
    model,
    modules,
    networks,
    train,
    trainstate,
)
from overparam import config as config_lib

ROOT = Path(__file__).resolve().parents[1]


def _tables(out):
    r = overparam.load(out)
    key = {rid: (s, w, d, p) for rid, s, w, d, p in
           zip(r.runs.run_id, r.runs.seed, r.runs.width, r.runs.depth, r.runs.param)}
    steps = r.steps.assign(run_id=r.steps.run_id.map(key))
    layers = r.layers.assign(run_id=r.layers.run_id.map(key))
    return (steps.sort_values(["run_id", "step"], ignore_index=True),
            layers.sort_values(["run_id", "step", "layer"], ignore_index=True))


@pytest.mark.parametrize("extra", [
    dict(param=("du", "zou", "ntk", "standard", "mup"), depths=(1, 2)),
    dict(param=("ntk", "mup"), depths=(2,), optimizer=("sgd",), batch_size=(4,),
         momentum=0.5, train_output=True, center_output=True, output_scale=(2.0,),
         sharpness_every=3),
], ids=["every-param", "sgd-momentum-output-centered-sharpness"])
@pytest.mark.slow
def test_the_flax_mlp_trains_to_the_hand_written_mlps_tables_bit_for_bit(tmp_path, extra):
    base = dict(name="t", widths=(8,), n=(10,), d=6, num_seeds=2, steps=6, chunk_steps=4,
                lr=(0.05,), **extra)
    for arch in ("mlp", "overparam.modules:MLP"):
        engine.run_sweep(config_lib.validate(dict(base, arch=(arch,))), tmp_path / arch[:3],
                         show_progress=False)
    for a, b in zip(_tables(tmp_path / "mlp"), _tables(tmp_path / "ove")):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.slow
def test_the_flax_mlps_gram_statistics_are_the_mlps_to_rounding(tmp_path):
    base = dict(name="t", widths=(16,), depths=(2,), n=(8,), d=5, num_seeds=2, steps=6,
                gram_every=3, param=("ntk",), lr=(0.1,))
    for arch in ("mlp", "overparam.modules:MLP"):
        engine.run_sweep(config_lib.validate(dict(base, arch=(arch,))), tmp_path / arch[:3],
                         show_progress=False)
    (a, _), (b, _) = _tables(tmp_path / "mlp"), _tables(tmp_path / "ove")
    on = a.step % 3 == 0
    scale = float(a.gram_lambda_max.max())  # float32 rounding of H: relative to ||H||
    for column in ("gram_lambda_min", "gram_lambda_max", "gram_change"):
        np.testing.assert_allclose(b[column][on], a[column][on], rtol=0, atol=1e-5 * scale,
                                   err_msg=column)
    assert a.gram_init_error[on].notna().all() and b.gram_init_error.isna().all()  # no H^inf


# ------------------------------------------------------------------ slow definitions


def _np_conv(h, W):
    """'SAME' 3x3 convolution, stride 1, a loop over positions. h (s, s, c_in), W (3, 3,
    c_in, c_out) -> (s, s, c_out)."""
    s = h.shape[0]
    padded = np.pad(h, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((s, s, W.shape[-1]))
    for i in range(s):
        for j in range(s):
            out[i, j] = np.einsum("abc,abck->k", padded[i:i + 3, j:j + 3], W)
    return out


def _np_forward(arch, param, params, x, width, depth):
    """The module docstring's network in NumPy float64 (one example): (f, [z_1..z_L])."""
    s = math.isqrt(len(x))
    h = x.reshape(s, s, 1)
    zs = []
    for layer in range(1, depth + 1):
        W = np.asarray(params[f"layer_{layer}"]["kernel"], np.float64)
        c = math.sqrt(2.0 / (9 * h.shape[-1])) if param == "ntk" else 1.0
        z = c * _np_conv(h, W)
        zs.append(z)
        branch = np.maximum(z, 0.0)
        h = h + branch / depth if arch == "resnet" and layer > 1 else branch
    c_out = math.sqrt(2.0 / width) if param == "ntk" else 1.0
    a = np.asarray(params["readout"]["weight"], np.float64)
    return c_out * h.mean(axis=(0, 1)) @ a, zs


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["cnn", "resnet"])
@pytest.mark.parametrize("param", ["ntk", "standard", "mup"])
def test_conv_networks_are_their_definition(arch, param):
    width, depth, d = 5, 3, 16
    with jax.enable_x64(True):
        net = networks.network_of(arch, param, width, depth, d, "float64", "highest")
        X = jax.random.normal(jax.random.PRNGKey(0), (3, d), jnp.float64)
        weights = net.init(jax.random.PRNGKey(1), jax.random.PRNGKey(2), X)
        f, pre = net.apply(weights, X)
        params = net._join(weights)
    for i, x in enumerate(np.asarray(X)):
        f_ref, z_ref = _np_forward(arch, param, params, x, width, depth)
        np.testing.assert_allclose(f[i], f_ref, rtol=1e-10, atol=1e-12)
        for z, zr in zip(pre, z_ref, strict=True):
            np.testing.assert_allclose(z[i], zr, rtol=1e-10, atol=1e-12)
    # Init laws: N(0, 1) kernels under ntk, N(0, 2 / fan_in) otherwise.
    W = np.asarray(params["layer_2"]["kernel"])
    want = 1.0 if param == "ntk" else math.sqrt(2.0 / (9 * width))
    assert W.shape == (3, 3, width, width) and abs(W.std() / want - 1) < 0.35


def _explicit_conv_matrix(D, s):
    """The convolution v -> conv(v, D) on (s, s, c_in) as an (s s c_out, s s c_in) matrix."""
    c_in = D.shape[2]
    cols = []
    for k in range(s * s * c_in):
        e = np.zeros(s * s * c_in)
        e[k] = 1.0
        cols.append(_np_conv(e.reshape(s, s, c_in), D).ravel())
    return np.stack(cols, axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("kh,kw", [(3, 3), (1, 1), (5, 3), (2, 4)])
def test_conv_same_is_xlas_same_convolution(kh, kw):
    """model.conv_same (patches times the kernel as a matrix) is lax.conv_general_dilated
    with 'SAME' padding, odd and even kernels, in float64 to rounding."""
    with jax.enable_x64(True):
        k1, k2 = jax.random.split(jax.random.PRNGKey(kh * 10 + kw))
        h = jax.random.normal(k1, (3, 7, 6, 4), jnp.float64)
        kernel = jax.random.normal(k2, (kh, kw, 4, 5), jnp.float64)
        want = jax.lax.conv_general_dilated(h, kernel, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        np.testing.assert_allclose(model.conv_same(h, kernel), want, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_conv_operator_norm_is_the_explicit_convolutions_top_singular_value():
    rng = np.random.default_rng(0)
    for s, c_in, c_out in ((4, 1, 3), (3, 2, 2), (5, 3, 4)):
        D = rng.standard_normal((3, 3, c_in, c_out))
        want = np.linalg.norm(_explicit_conv_matrix(D, s), 2)
        with jax.enable_x64(True):
            sigma, V = metrics.conv_operator_norm(jnp.asarray(D), jnp.asarray(
                rng.standard_normal((2, s, s, c_in))), tol=1e-12, max_iters=2000)
        assert abs(float(sigma) - want) <= 1e-8 * want, (s, c_in, c_out)
        assert V.shape == (2, s, s, c_in)


@pytest.mark.slow
@pytest.mark.parametrize("arch,fixed_loops", [("cnn", False), ("resnet", False),
                                               ("cnn", True)])  # power_iters per record
def test_conv_layer_records_are_their_slow_definitions_at_every_step(arch, fixed_loops):
    width, depth, n, d = 4, 2, 6, 16
    ds = data.make_dataset(dict(dataset="sphere", labels="gaussian", n=n, d=d, seed=0,
                                dtype="float32"))
    static = train.Static(width=width, depth=depth, n=n, d=d, batch_size=n, loss="squared",
                          optimizer="gd", param="ntk", arch=arch, chunk_records=1,
                          power_tol=1e-7, power_max_iters=500, fixed_loops=fixed_loops)
    hyper = trainstate.RunScalars(
        *(jnp.asarray(v) for v in (np.uint32(1), np.uint32(2), np.uint32(3))),
        lr=jnp.float32(20.0), output_scale=jnp.float32(1))
    init = jax.jit(functools.partial(initial.init_single, static))
    chunk = jax.jit(functools.partial(chunks.chunk_single, static))
    X, y = jnp.asarray(ds.X), jnp.asarray(ds.y)
    state = init(hyper, trainstate.Data(X, y))
    net = trainstate.network(static)
    _, pre0 = net.apply(state.net0, X)
    side = math.isqrt(d)
    for t in range(6):
        deltas = [np.asarray(D, np.float64) for D in state.delta.hidden]
        weights = jax.tree_util.tree_map(jnp.add, state.net0, state.delta)
        _, pre = net.apply(weights, X)
        state, rec = chunk(state, hyper, trainstate.Data(X, y), jnp.int32(t))
        cols = chunks.columns(jax.device_get(rec))
        for layer, D in enumerate(deltas, start=1):
            matrix = np.moveaxis(D, -1, 0).reshape(width, -1)  # (c_out, kh kw c_in)
            got = {k: cols[k][0, layer - 1] for k in ("radius_spectral", "radius_frobenius",
                                                      "radius_rowmax", "radius_operator",
                                                      "flip_frac")}
            tol = 1e-5 * max(np.linalg.norm(matrix, 2), 1e-6)
            assert abs(got["radius_spectral"] - np.linalg.norm(matrix, 2)) <= tol + 1e-7
            assert abs(got["radius_frobenius"] - np.linalg.norm(matrix)) <= tol + 1e-7
            assert abs(got["radius_rowmax"] - np.linalg.norm(matrix, axis=1).max()) <= tol
            op = np.linalg.norm(_explicit_conv_matrix(D, side), 2)
            assert abs(got["radius_operator"] - op) <= 1e-4 * max(op, 1e-6) + 1e-7, (t, layer)
            z, z0 = np.asarray(pre[layer - 1]), np.asarray(pre0[layer - 1])
            assert z.shape == (n, side, side, width)  # every (example, position, channel)
            assert got["flip_frac"] == pytest.approx(np.mean((z > 0) != (z0 > 0)), abs=1e-7)
    assert np.asarray(state.delta.hidden[0]).any()  # it trained


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["cnn", "resnet"])
def test_a_conv_network_alone_equals_it_in_a_batch(arch):
    n, d = 6, 16
    static = train.Static(width=4, depth=2, n=n, d=d, batch_size=3, loss="squared",
                          optimizer="sgd", param="mup", arch=arch, chunk_records=3,
                          gram_every=2 if arch == "resnet" else 0,
                          sharpness_every=2 if arch == "cnn" else 0)
    ds = data.make_dataset(dict(dataset="sphere", labels="gaussian", n=n, d=d, seed=1,
                                dtype="float32"))
    program = chunks.jit_program(static)
    seeds, lrs = [3, 1, 4], [0.5, 1.0, 2.0]

    def run(index):
        k = len(index)
        hyper = trainstate.RunScalars(seed=jnp.asarray([seeds[i] for i in index], jnp.uint32),
                                      init_tag=jnp.full((k,), 7, jnp.uint32),
                                      batch_tag=jnp.full((k,), 5, jnp.uint32),
                                      lr=jnp.asarray([lrs[i] for i in index], jnp.float32),
                                      output_scale=jnp.ones((k,), jnp.float32))
        X, y = jnp.stack([ds.X] * k), jnp.stack([ds.y] * k)
        state = program.init(trainstate.batch_keys(hyper), trainstate.Data(X, y))
        _, rec = program.chunk(state, hyper, trainstate.Data(X, y), jnp.int32(0))
        return chunks.columns(jax.device_get(rec))

    together = run([0, 1, 2])
    alone = run([1])
    for k in together:
        np.testing.assert_allclose(together[k][1:2], alone[k], rtol=1e-5, atol=1e-6,
                                   err_msg=k)


# ------------------------------------------------------------------ the protocol


class _Good(nn.Module):
    width: int
    depth: int
    parameterization: str = "standard"

    @nn.compact
    def __call__(self, x):
        h = x
        for layer in range(1, self.depth + 1):
            z = nn.Dense(self.width, name=f"layer_{layer}")(h)
            if not getattr(self, "skip_sow", False):
                self.sow("preactivations", f"z_{layer}", z)
            h = nn.relu(z)
        return nn.Dense(1, name="readout")(h)[:, 0]


class _NoSow(_Good):
    skip_sow: bool = True


class _NoReadout(nn.Module):
    width: int
    depth: int
    parameterization: str = "standard"

    @nn.compact
    def __call__(self, x):
        z = nn.Dense(self.width, name="layer_1")(x)
        self.sow("preactivations", "z_1", z)
        return nn.Dense(1, name="head")(nn.relu(z))[:, 0]


class _BatchNorm(_Good):
    @nn.compact
    def __call__(self, x):
        x = nn.BatchNorm(use_running_average=False)(x)
        return super().__call__(x)


class _Matrix(_Good):
    @nn.compact
    def __call__(self, x):
        return jnp.stack([super().__call__(x)] * 2, axis=1)


@pytest.mark.parametrize("module,depth,message", [
    (_NoSow, 2, "is not sown"),
    (_NoReadout, 1, "no output layer 'readout'"),
    (_Good, 3, "no measured layer 'layer_3'"),
    (_Good, 1, "has a layer_2"),
    (_BatchNorm, 2, "keeps state 'batch_stats'"),
    (_Matrix, 2, "returns shape"),
])
def test_a_module_off_the_protocol_is_one_line_naming_arch(module, depth, message):
    built = module(width=4, depth=2 if module is _Good else depth)
    with pytest.raises(config_lib.ConfigError) as info:
        networks.FlaxNetwork(built, 5, "float32", depth)
    assert str(info.value).startswith("config.arch:") and message in str(info.value)
    assert "\n" not in str(info.value)


# Modules on the protocol but for state or randomness, as a user's file (importable by
# the arch 'stateful_modules:Class', in this process and in a command line's).
STATEFUL = """
import flax.linen as nn
import jax


class _Net(nn.Module):
    width: int
    depth: int
    parameterization: str = "standard"

    def hidden(self, x):
        h = x
        for layer in range(1, self.depth + 1):
            z = nn.Dense(self.width, name=f"layer_{layer}")(h)
            self.sow("preactivations", f"z_{layer}", z)
            h = nn.relu(z)
        return h

    def readout(self, h):
        return nn.Dense(1, name="readout")(h)[:, 0]


class Dropout(_Net):
    @nn.compact
    def __call__(self, x):
        return self.readout(nn.Dropout(0.5, deterministic=False)(self.hidden(x)))


class Noise(_Net):
    @nn.compact
    def __call__(self, x):
        h = self.hidden(x)
        return self.readout(h + 0.1 * jax.random.normal(self.make_rng("noise"), h.shape))


class BatchNorm(_Net):
    @nn.compact
    def __call__(self, x):
        return self.readout(nn.BatchNorm(use_running_average=False)(self.hidden(x)))


class Cache(_Net):
    @nn.compact
    def __call__(self, x):
        calls = self.variable("cache", "calls", lambda: 0)
        calls.value += 1
        return self.readout(self.hidden(x))


class CacheWhenApplied(_Net):  # no state after init: only applying it shows its cache
    @nn.compact
    def __call__(self, x):
        if not self.is_initializing():
            self.variable("cache", "calls", lambda: 0).value += 1
        return self.readout(self.hidden(x))


class Intermediates(_Net):
    @nn.compact
    def __call__(self, x):
        h = self.hidden(x)
        self.sow("intermediates", "h", h)
        return self.readout(h)
"""


@pytest.fixture
def stateful(tmp_path, monkeypatch):
    """The module `stateful_modules` (STATEFUL), importable; yields its folder."""
    (tmp_path / "stateful_modules.py").write_text(STATEFUL)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("stateful_modules", None)


@pytest.mark.parametrize("name,message", [
    ("Dropout", "it draws random numbers when applied (rng 'dropout'"),
    ("Noise", "it draws random numbers when applied (rng 'noise'"),
    ("BatchNorm", "it keeps state 'batch_stats' besides params (after init"),
    ("Cache", "it keeps state 'cache' besides params (after init"),
    ("CacheWhenApplied", "it keeps state 'cache' besides params (when applied"),
    ("Intermediates", "it keeps state 'intermediates' besides params (when applied"),
])
def test_a_module_with_state_or_randomness_is_one_line_naming_arch(stateful, name, message):
    import stateful_modules

    module = getattr(stateful_modules, name)(width=4, depth=2)
    with pytest.raises(config_lib.ConfigError) as info:
        networks.FlaxNetwork(module, 5, "float32", 2)
    text = str(info.value)
    assert text.startswith(f"config.arch: stateful_modules:{name} does not follow"), text
    assert message in text and "\n" not in text and info.value.field == "arch"


@pytest.mark.slow
def test_a_sweep_of_a_module_with_dropout_is_refused_before_anything_compiles(stateful,
                                                                              tmp_path):
    compiled = []
    listener = lambda event, seconds, **kw: compiled.append(event)
    sweep = config_lib.validate(dict(name="s", arch=("mlp", "stateful_modules:Dropout"),
                                     param=("standard",), widths=(4, 8), n=(8,), d=5,
                                     num_seeds=1, steps=2))
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with pytest.raises(config_lib.ConfigError, match="rng 'dropout'") as info:
            engine.run_sweep(sweep, tmp_path / "r", show_progress=False)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert info.value.field == "arch"
    assert "/jax/core/compile/backend_compile_duration" not in compiled, compiled
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_module_on_the_protocol_is_read_as_it_says():
    net = networks.FlaxNetwork(_Good(width=4, depth=2), 5, "float32", 2)
    weights = net.init(jax.random.PRNGKey(0), jax.random.PRNGKey(1), jnp.ones((3, 5)))
    assert [W.shape for W in weights.hidden] == [(5, 4), (4, 4)]  # flax's (in, out)
    assert net.matrix(1, weights.hidden[0]).shape == (4, 5)       # rows: the 4 neurons
    assert set(weights.other["layer_1"]) == {"bias"}              # trained, not measured
    f, pre = net.apply(weights, jnp.ones((3, 5)))
    assert f.shape == (3,) and [z.shape for z in pre] == [(3, 4), (3, 4)]
    assert net.conv_shape(1) is None and not net.is_conv
    cnn = networks.network_of("cnn", "ntk", 4, 2, 16, "float32", "highest")
    assert cnn.conv_shape(1) == (4, 4, 1) and cnn.conv_shape(2) == (4, 4, 4)


@pytest.mark.slow
def test_the_example_module_runs_with_its_biases_trained(tmp_path):
    sweep = config_lib.validate(dict(name="e", arch=("examples.modules:BiasMLP",),
                                     param=("standard",), widths=(8,), depths=(2,), n=(8,),
                                     d=5, num_seeds=2, steps=6, lr=(0.05,), gram_every=3))
    engine.run_sweep(sweep, tmp_path / "r", show_progress=False)
    r = overparam.load(tmp_path / "r")
    assert (r.runs.arch == "examples.modules:BiasMLP").all()
    first = r.layers[r.layers.step == 0]
    for run in r.runs.itertuples():
        net = r.initial_net(run.run_id, modules=["examples.modules"])  # named: imported
        assert set(net.other["layer_1"]) == {"bias"}
        for layer, W in enumerate(net.hidden, start=1):
            got = first[(first.run_id == run.run_id) & (first.layer == layer)].init_spectral
            assert float(got.iloc[0]) == pytest.approx(np.linalg.norm(W.T, 2), rel=1e-5)
    last = r.layers[r.layers.step == 6]
    assert (last.radius_spectral > 0).all() and last.radius_operator.isna().all()
    assert r.steps.gram_lambda_min.notna().any()
    with pytest.raises(config_lib.ConfigError, match="standard parameterization only"):
        engine.run_sweep(config_lib.validate(dict(sweep.to_dict(), param=("ntk",),
                                                  name="e2")), tmp_path / "r2",
                         show_progress=False, dry_run=True)


# ------------------------------------------------------------------ the command line


def _cli(out, *args, crash=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    if crash:
        env["OVERPARAM_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-m", "overparam.sweep", "--config=sweeps/digits.py",
                           "--progress=false", "--config.arch=resnet",
                           "--config.param=(ntk,mup)", "--config.widths=(4,)",
                           "--config.depths=(3,)", "--config.n=(16,)", "--config.n_test=20",
                           "--config.digits_task=0v1", "--config.num_seeds=1",
                           "--config.lr=(2.0,)", "--config.steps=8", "--config.record_every=1",
                           "--config.chunk_steps=3", "--config.checkpoint_seconds=0",
                           f"--out={out}", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_resnet_sweep_on_digits_runs_from_the_command_line_and_resumes(tmp_path):
    proc = _cli(tmp_path / "ref")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = overparam.load(tmp_path / "ref")
    assert set(r.runs.arch) == {"resnet"} and set(r.runs.param) == {"ntk", "mup"}
    assert r.layers.radius_operator.notna().all() and (r.layers.layer.max() == 3)
    assert r.steps.test_error.notna().all() and r.runs.lambda0.isna().all()
    per_run = overparam.analyze.per_run_quantities(r)
    got = per_run[per_run.quantity == "max_radius_operator"].set_index(["run_id", "layer"]).value
    want = r.layers.groupby(["run_id", "layer"]).radius_operator.max()
    np.testing.assert_allclose(got.sort_index().to_numpy(), want.sort_index().to_numpy())
    assert _cli(tmp_path / "r", crash="chunk:2").returncode == -signal.SIGKILL
    proc = _cli(tmp_path / "r")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_same_tables(tmp_path / "ref", tmp_path / "r")


@pytest.mark.slow
def test_the_command_line_refuses_a_module_with_randomness_in_one_line(stateful, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(stateful), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "overparam.sweep", "--config=sweeps/default.py",
                           "--progress=false", "--config.arch=stateful_modules:Noise",
                           "--config.param=standard", "--config.widths=(4,)",
                           "--config.num_seeds=1", "--config.steps=2",
                           f"--out={tmp_path / 'r'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: config.arch: stateful_modules:Noise") and "rng 'noise'" in line
    assert not (tmp_path / "r").exists() and proc.stdout == ""


def test_conv_architectures_refuse_what_they_cannot_take():
    for fields, field in ((dict(arch=("cnn",), param=("du",), d=16), "param"),
                          (dict(arch=("resnet",), param=("ntk",), d=10), "d"),
                          (dict(arch=("cnn",), param=("ntk",), d=16, lr=("theory",)), "lr"),
                          (dict(arch=("no_such_module:Net",)), "arch"),
                          (dict(arch=("cnn2",)), "arch")):
        with pytest.raises(config_lib.ConfigError) as info:
            config_lib.validate(fields)
        assert info.value.field == field, fields
    assert modules.CNN(width=2, depth=1).parameterization == "ntk"
