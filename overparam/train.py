"""The compiled program: K recorded steps of many networks of one shape.

`make_program(static)` returns two jitted functions vmapped over networks:

  init(hyper, X)           -> State        draws each network from its own key
  chunk(state, hyper, X, y) -> (State, records)
                           one lax.scan over `static.chunk_records` records;
                           each measures the current weights, then takes
                           `record_every` optimizer steps.

A network is a function of its `Hyper` row (seed, key tags, lr) and its data,
never of its position in the batch. Records at steps past `static.steps` are
computed on frozen weights and dropped by the host, so every chunk of a sweep
has the same length and the program compiles once per shape.

A network whose loss or gradient stops being finite is frozen at its last
finite weights; its records from then on are NaN and `diverged_step` says
when it happened. Its neighbours in the batch are unaffected.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from overparam import losses, metrics, model, theory

PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "high": jax.lax.Precision.HIGH,
              "default": jax.lax.Precision.DEFAULT}


@dataclasses.dataclass(frozen=True)
class Static:
    """Everything that selects a compiled program (hashable)."""

    width: int
    depth: int
    n: int
    d: int
    batch_size: int
    loss: str
    optimizer: str
    param: str
    reduction: str = "sum"
    momentum: float = 0.0
    train_output: bool = False
    sign_labels: bool = False
    steps: int = 100
    record_every: int = 1
    chunk_records: int = 50
    precision: str = "highest"
    dtype: str = "float32"
    power_tol: float = 1e-6
    power_max_iters: int = 100
    regression_tol: float = 1e-2
    gram_every: int = 0   # record NTK Gram statistics every this many steps (0: never)


class Hyper(NamedTuple):
    """Per-network scalars, vmapped: seed, init_tag, batch_tag (uint32), lr."""

    seed: jax.Array
    init_tag: jax.Array
    batch_tag: jax.Array
    lr: jax.Array


class State(NamedTuple):
    """One network's training state (the engine stacks a leading network axis)."""

    step: jax.Array           # (), int32: the step the current weights are at
    net0: model.Net           # weights at initialization, fixed
    delta: model.Net          # W - W(0); delta.out stays 0 unless train_output
    opt_state: Any
    v: tuple[jax.Array, ...]  # per layer (fan_in, b): warm start of the power iteration
    pattern0: tuple[jax.Array, ...]  # per layer (m, n) bool: 1{z_l > 0} at step 0
    batch_key: jax.Array
    power_key: jax.Array
    alive: jax.Array          # (), bool
    diverged_step: jax.Array  # (), int32: first non-finite step, -1 if none
    init_spectral: jax.Array  # (L,): ||W_l(0)||_2
    gram0: jax.Array          # (n, n): H(0), the NTK Gram at initialization ((0, 0) if unused)
    gram_init_error: jax.Array  # (): ||H(0)/s - H^inf||_2 (NaN if H^inf is not given)


INIT_POWER_ITERS, INIT_POWER_TOL = 1000, 1e-7  # ||W(0)||_2: a cold start, once per network

STEP_FIELDS = ("loss", "train_error", "min_margin", "grad_norm", "radius_output",
               "gram_lambda_min", "gram_change", "gram_init_error")
LAYER_FIELDS = ("radius_spectral", "radius_frobenius", "radius_rowmax", "flip_frac",
                "init_spectral")


def _keys(hyper: Hyper):
    base = jax.random.PRNGKey(hyper.seed)
    return jax.random.fold_in(base, hyper.init_tag), jax.random.fold_in(base, hyper.batch_tag)


def _optimizer(static: Static, lr: jax.Array) -> optax.GradientTransformation:
    return optax.sgd(learning_rate=lr, momentum=static.momentum or None)


def _trainable(static: Static, delta: model.Net):
    return delta if static.train_output else delta.hidden


def _with_trainable(static: Static, delta: model.Net, trained) -> model.Net:
    return trained if static.train_output else delta._replace(hidden=trained)


def _weights(net0: model.Net, delta: model.Net) -> model.Net:
    return jax.tree_util.tree_map(jnp.add, net0, delta)


def init_single(static: Static, hyper: Hyper, X: jax.Array,
                gram_inf: jax.Array | None = None) -> State:
    """State at step 0 of one network. X: (n, d); gram_inf: (n, n) H^inf / s, or None."""
    init_key, batch_key = _keys(hyper)
    net_key, power_key = jax.random.split(init_key)
    dtype = jnp.dtype(static.dtype)
    net0 = model.init(net_key, d=static.d, width=static.width, depth=static.depth,
                      param=static.param, dtype=dtype)
    delta = jax.tree_util.tree_map(jnp.zeros_like, net0)
    _, pre = model.apply(net0, X, param=static.param, precision=PRECISIONS[static.precision])
    v = _power_block(power_key, net0, jnp.zeros((), jnp.int32))
    opt_state = _optimizer(static, hyper.lr).init(_trainable(static, delta))
    precision = PRECISIONS[static.precision]
    init_spectral = jnp.stack([
        metrics.layer_spectral_norm(W, b, tol=INIT_POWER_TOL, max_iters=INIT_POWER_ITERS,
                                    precision=precision)[0]
        for W, b in zip(net0.hidden, _power_block(power_key, net0, -jnp.ones((), jnp.int32)))])
    gram0, gram_err = jnp.zeros((0, 0), dtype), jnp.full((), jnp.nan, dtype)
    if static.gram_every:
        gram0 = _gram(static, net0, X)
        if gram_inf is not None:
            scale = theory.gram_scale(static.param, static.width, depth=static.depth,
                                      train_output=static.train_output)
            gram_err = metrics.symmetric_norm(gram0 / scale - gram_inf)
    return State(step=jnp.zeros((), jnp.int32), net0=net0, delta=delta, opt_state=opt_state,
                 v=v, pattern0=tuple(z > 0 for z in pre), batch_key=batch_key,
                 power_key=power_key, alive=jnp.ones((), bool),
                 diverged_step=-jnp.ones((), jnp.int32), init_spectral=init_spectral,
                 gram0=gram0, gram_init_error=gram_err)


def _gram(static: Static, net: model.Net, X: jax.Array) -> jax.Array:
    return metrics.ntk_gram(net, X, param=static.param, train_output=static.train_output,
                            precision=PRECISIONS[static.precision])


def _gram_stats(static: Static, state: State, X: jax.Array, is_gram_step) -> dict:
    """lambda_min(H(t)), ||H(t) - H(0)||_2 and ||H(0)/s - H^inf||_2 on Gram steps, else NaN."""
    nan = jnp.full((), jnp.nan, state.init_spectral.dtype)
    if not static.gram_every:
        return dict(gram_lambda_min=nan, gram_change=nan, gram_init_error=nan)

    def stats(_):
        H = _gram(static, _weights(state.net0, state.delta), X)
        return (jnp.linalg.eigvalsh(H)[0], metrics.symmetric_norm(H - state.gram0),
                state.gram_init_error)

    lam, change, err = jax.lax.cond(is_gram_step, stats, lambda _: (nan, nan, nan), None)
    return dict(gram_lambda_min=lam, gram_change=change, gram_init_error=err)


def _power_block(power_key: jax.Array, net0: model.Net, step: jax.Array,
                 columns: int | None = None):
    """Random (fan_in, b) blocks of every layer for `step`: b = metrics.block_size(fan_in),
    or `columns`. One draw for all layers (fewer PRNG calls compile faster)."""
    shapes = [(W.shape[1], columns or metrics.block_size(W.shape[1])) for W in net0.hidden]
    key = jax.random.fold_in(power_key, step)
    z = jax.random.normal(key, (sum(k * b for k, b in shapes),), net0.out.dtype)
    pieces = jnp.split(z, np.cumsum([k * b for k, b in shapes])[:-1])
    return tuple(p.reshape(shape) for p, shape in zip(pieces, shapes))


def _batch_loss(static: Static, net0: model.Net, delta: model.Net, trained, X, y):
    net = _weights(net0, _with_trainable(static, delta, trained))
    f, pre = model.apply(net, X, param=static.param, precision=PRECISIONS[static.precision])
    loss = losses.reduce(losses.per_example(static.loss, f, y), reduction=static.reduction,
                         n=static.n)
    return loss, (f, pre)


def _gradient(static: Static, state: State, X: jax.Array, y: jax.Array):
    """Loss, (f, pre) and gradient on this step's batch (all of X for GD)."""
    if static.optimizer == "sgd":
        key = jax.random.fold_in(state.batch_key, state.step)
        idx = jax.random.permutation(key, static.n)[: static.batch_size]
        X, y = X[idx], y[idx]
    grad_fn = jax.value_and_grad(functools.partial(_batch_loss, static), argnums=2,
                                 has_aux=True)
    (loss, aux), grads = grad_fn(state.net0, state.delta, _trainable(static, state.delta), X, y)
    return loss, aux, grads


def _update(static: Static, hyper: Hyper, state: State, loss, grads) -> State:
    """One optimizer step; frozen if not finite or past the last step."""
    ok = jnp.isfinite(loss) & jnp.isfinite(metrics.global_norm(grads))
    trained = _trainable(static, state.delta)
    updates, opt_state = _optimizer(static, hyper.lr).update(grads, state.opt_state, trained)
    new_delta = _with_trainable(static, state.delta, optax.apply_updates(trained, updates))
    active = state.alive & ok & (state.step < static.steps)
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, old)
    died = state.alive & ~ok
    return state._replace(
        step=state.step + 1, delta=keep(new_delta, state.delta),
        opt_state=keep(opt_state, state.opt_state), alive=state.alive & ok,
        diverged_step=jnp.where(died, state.step, state.diverged_step))


def _measure(static: Static, state: State, X, y, loss, f, pre, grads, is_gram_step, fresh):
    """Step and layer records of the current weights, and the new power vectors.

    fresh: per layer (fan_in, 1), this step's random vector for the power iteration.
    """
    precision = PRECISIONS[static.precision]
    spectral, vs = [], []
    for D, v, r in zip(state.delta.hidden, state.v, fresh):
        sigma, v = metrics.layer_spectral_norm(D, v, r, tol=static.power_tol,
                                               max_iters=static.power_max_iters,
                                               precision=precision)
        spectral.append(sigma)
        vs.append(v)
    if static.sign_labels:
        error, margin = metrics.zero_one_error(f, y), metrics.min_margin(f, y)
    else:
        error = metrics.regression_error(f, y, static.regression_tol)
        margin = jnp.full((), jnp.nan, f.dtype)
    step_rec = dict(loss=loss, train_error=error.astype(f.dtype), min_margin=margin,
                    grad_norm=metrics.global_norm(grads),
                    radius_output=jnp.linalg.norm(state.delta.out),
                    **_gram_stats(static, state, X, is_gram_step))
    layer_rec = dict(
        radius_spectral=jnp.stack(spectral),
        radius_frobenius=jnp.stack([metrics.frobenius_norm(D) for D in state.delta.hidden]),
        radius_rowmax=jnp.stack([metrics.rowmax_norm(D) for D in state.delta.hidden]),
        flip_frac=jnp.stack([metrics.flip_fraction(z, p).astype(f.dtype)
                             for z, p in zip(pre, state.pattern0)]),
        init_spectral=state.init_spectral)
    return step_rec, layer_rec, tuple(vs)


def _record_then_train(static: Static, hyper: Hyper, X, y, start, state: State, xs):
    """Measures the weights at state.step, then takes record_every steps.

    xs: (i, fresh). start + i * record_every is the step, as an unbatched value,
    so that the Gram matrix is computed (lax.cond) only on Gram steps, also
    under vmap; fresh: the power iteration's random vectors for that step.
    """
    i, fresh = xs
    step = start + i * static.record_every
    is_gram_step = (step % static.gram_every == 0) if static.gram_every else False
    batch_loss, (f, pre), grads = _gradient(static, state, X, y)
    loss = batch_loss
    if static.optimizer == "sgd":  # metrics are over the full training set
        loss, (f, pre) = _batch_loss(static, state.net0, state.delta,
                                     _trainable(static, state.delta), X, y)
    step_rec, layer_rec, v = _measure(static, state, X, y, loss, f, pre, grads, is_gram_step,
                                      fresh)
    alive = state.alive & jnp.isfinite(loss) & jnp.isfinite(step_rec["grad_norm"])
    nan_if_dead = lambda x: jnp.where(alive, x, jnp.nan)
    record = dict(step=state.step, **jax.tree_util.tree_map(nan_if_dead, step_rec),
                  **jax.tree_util.tree_map(nan_if_dead, layer_rec))
    state = state._replace(v=jax.tree_util.tree_map(lambda a, b: jnp.where(alive, a, b),
                                                    v, state.v))
    state = _update(static, hyper, state, batch_loss, grads)

    def plain_step(_, s):
        loss, _, grads = _gradient(static, s, X, y)
        return _update(static, hyper, s, loss, grads)

    state = jax.lax.fori_loop(0, static.record_every - 1, plain_step, state)
    return state, record


def chunk_single(static: Static, state: State, hyper: Hyper, X: jax.Array, y: jax.Array,
                 start: jax.Array):
    """`static.chunk_records` records of one network from step `start` (= state.step,
    unbatched). X: (n, d), y: (n,)."""
    body = functools.partial(_record_then_train, static, hyper, X, y, start)
    i = jnp.arange(static.chunk_records, dtype=jnp.int32)
    # The random vectors of all the chunk's records at once: drawn step by step
    # inside the scan they cost about a tenth of the metrics at width 256.
    fresh = jax.vmap(lambda step: _power_block(state.power_key, state.net0, step, columns=1))(
        start + i * static.record_every)
    return jax.lax.scan(body, state, (i, fresh))


class Program(NamedTuple):
    init: Any
    chunk: Any


@functools.cache
def make_program(static: Static) -> Program:
    """The jitted, vmapped (over networks) init and chunk functions of one shape."""
    init = jax.jit(jax.vmap(functools.partial(init_single, static)))
    chunk = jax.jit(jax.vmap(functools.partial(chunk_single, static),
                             in_axes=(0, 0, 0, 0, None)))
    return Program(init=init, chunk=chunk)
