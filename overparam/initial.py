"""A network's state at step 0: the init program's body, and a run's initial weights.

Owns what initialization computes from a network's keys and data (`init_from_keys`:
the weights W(0), their step-0 patterns and outputs, ||W_l(0)||_2, the NTK Gram at
initialization and its distance to H^inf, the random starts of the power and
Lanczos iterations), and `initial_net`, which rebuilds a run's W(0) from its row
of runs.parquet with the same keys: `store.Results.initial_net` imports this
module when called (reading results needs no JAX), the one import against the
chain (docs/DESIGN.md section 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from overparam import (
    lazy,
    measurements,
    metrics,
    model,
    networks,
    optimize,
    store,
    theory,
    train,
    trainstate,
)


def init_single(static: train.Static, scalars: trainstate.RunScalars,
                data: trainstate.Data) -> trainstate.State:
    """The state at step 0 of one network from its scalars (its keys derived from them) and
    its `trainstate.Data` without a networks axis: X (n, d); H_inf (n, n) H^inf / s, or
    None; X_test (n_test, d), None without test points (y and y_test are not read)."""
    return init_from_keys(static, trainstate.derive_keys(scalars), data)


def init_from_keys(static: train.Static, keys: trainstate.Keys,
                   data: trainstate.Data) -> trainstate.State:
    """`init_single` from the network's derived keys (what the init program runs)."""
    X = data.X
    dtype = jnp.dtype(static.dtype)
    net = trainstate.network(static)
    with jax.named_scope(trainstate.TRAINING):
        net0 = net.init(keys.hidden, keys.out, X)
        f0, pre = net.apply(net0, X)
    delta = jax.tree_util.tree_map(jnp.zeros_like, net0)
    matrices = [net.matrix(layer, W) for layer, W in enumerate(net0.hidden, start=1)]
    v = _power_block(keys.power, matrices, dtype)
    # The optimizer's state holds no step size: 1.0 stands for the run's.
    opt_state = optimize.optimizer(static, 1.0).init(trainstate.trainable(static, delta))
    precision = model.PRECISIONS[static.measure_precision]
    with jax.named_scope(trainstate.MEASURING):
        init_spectral = jnp.stack([metrics.initial_spectral_norm(W, b, precision=precision)
                                   for W, b in zip(matrices, v)])
    gram0, gram_err = jnp.zeros((0, 0), dtype), jnp.full((), jnp.nan, dtype)
    if static.gram_every:
        gram0 = measurements.gram(static, net0, X)
        if data.H_inf is not None:
            scale = theory.gram_scale(static.param, static.width, depth=static.depth,
                                      train_output=static.train_output)
            with jax.named_scope(trainstate.MEASURING):
                gram_err = metrics.symmetric_norm(gram0 / scale - data.H_inf)
    return trainstate.State(
        step=jnp.zeros((), jnp.int32), net0=net0, delta=delta, opt_state=opt_state,
        v=v, conv_v=_conv_starts(static, keys.power, dtype),
        pattern0=tuple(z > 0 for z in pre), batch_key=keys.batch,
        alive=jnp.ones((), bool),
        diverged_step=-jnp.ones((), jnp.int32), init_spectral=init_spectral,
        gram0=gram0, gram_init_error=gram_err,
        f0=f0 if static.center_output else jnp.zeros((0,), dtype),
        f0_test=measurements.held_out_output(static, net0, data.X_test) if static.center_output
        else jnp.zeros((0,), dtype),
        sharp_v=_sharpness_start(static, keys.power, delta),
        twin=lazy.init_twin(static, delta, opt_state), f_inf=lazy.init_f_inf(static, f0),
        h0=lazy.init_h0(static, pre))


def _conv_starts(static: train.Static, power_key: jax.Array, dtype) -> tuple:
    """Random (2, s, s, c_in) starts of each convolution's operator-norm iteration (None for
    a dense layer), from the power key's second stream."""
    net = trainstate.network(static)
    shapes = [net.conv_shape(layer) for layer in range(1, static.depth + 1)]
    keys = jax.random.split(jax.random.fold_in(power_key, 2), static.depth)
    return tuple(None if shape is None else jax.random.normal(k, (2, *shape), dtype)
                 for k, shape in zip(keys, shapes))


def _sharpness_start(static: train.Static, power_key: jax.Array, delta: model.Net):
    """A random start of the first sharpness's Lanczos iteration, shaped as the trained
    weights (a zero-size array when sharpness is off)."""
    trained = trainstate.trainable(static, delta)
    if not static.sharpness_every:
        return jnp.zeros((0,), jnp.dtype(static.dtype))
    leaves, treedef = jax.tree_util.tree_flatten(trained)
    keys = jax.random.split(jax.random.fold_in(power_key, 1), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [
        jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def _power_block(power_key: jax.Array, matrices, dtype):
    """Random (2, fan_in) starts of every layer's spectral-norm iteration, for the layers'
    weights as matrices (one draw for all layers: fewer PRNG calls compile faster)."""
    fan_ins = [W.shape[1] for W in matrices]
    z = jax.random.normal(power_key, (2, sum(fan_ins)), dtype)
    return tuple(jnp.split(z, np.cumsum(fan_ins)[:-1], axis=1))


def initial_net(runs: pd.DataFrame, run_id: str, *, modules: Sequence[str] = (),
                source: Path | str = "runs.parquet"):
    """The initial weights of run `run_id` of a runs table (`store.Results.initial_net`,
    which documents it), rebuilt bit-identically from its seed and key tags with the
    keys the engine derives (`trainstate.derive_keys`): a `model.Net` of NumPy arrays.

    source: the runs table's file, named in errors. Raises store.ResultsError for a
    run_id not in `runs`, or whose arch is a flax module that overparam does not ship
    and that `modules` does not name (then nothing is imported).
    """
    rows = runs[runs["run_id"] == run_id]
    if rows.empty:
        raise store.ResultsError(f"run_id {run_id!r} is not in {source}")
    run = rows.iloc[0]
    arch, modules = run["arch"], (modules,) if isinstance(modules, str) else modules
    if not networks.shipped(arch) and not (
            arch in modules or str(arch).partition(":")[0] in modules):
        raise store.ResultsError(f"{source}: run {run_id}'s arch {arch!r} is not a network "
                                 "overparam ships; it is imported only when named: "
                                 f"initial_net({run_id!r}, modules=[{arch!r}])")
    with jax.enable_x64(run["dtype"] == "float64"):
        tags = (np.uint32(run[k]) for k in ("seed", "init_tag", "batch_tag"))
        keys = trainstate.derive_keys(trainstate.RunScalars(*tags, lr=np.float32(0),
                                                            output_scale=np.float32(1)))
        if run["arch"] == "mlp":
            net = jax.jit(model.init_from_keys, static_argnames=(
                "d", "width", "depth", "param", "dtype"))(
                keys.hidden, keys.out, d=int(run["d"]), width=int(run["width"]),
                depth=int(run["depth"]), param=run["param"], dtype=run["dtype"])
        else:
            network = networks.network_of(
                run["arch"], run["param"], int(run["width"]), int(run["depth"]),
                int(run["d"]), run["dtype"], run["precision"])
            X = np.zeros((1, int(run["d"])), run["dtype"])
            net = jax.jit(network.init)(keys.hidden, keys.out, X)
        return jax.tree_util.tree_map(np.asarray, net)
