"""The compiled program: K recorded steps of many networks of one shape.

`make_program(static)` returns two jitted functions over a batch of networks:

  init(keys, X, H, X_test) -> State        draws each network from its own keys
  chunk(state, hyper, X, y, start, X_test, y_test) -> (State, Records)
                           one lax.scan over `static.chunk_records` records,
                           its body vmapped over networks; each record
                           measures the current weights (on the training set,
                           and on the held-out test points where the program
                           has them: static.n_test > 0), then takes
                           `record_every` optimizer steps.

A network is a function of its `Hyper` row (seed, key tags, lr) and its data,
never of its position in the batch. The number of steps of the sweep is not
part of a program: every chunk has the same length, the last one's records
past the sweep's last step are dropped by the host, so a shape compiles once
whatever the number of steps (and a sweep of another length finds its
programs in the persistent compilation cache).

A network whose loss or gradient stops being finite is frozen at its last
finite weights; its records from then on are NaN and `diverged_step` says
when it happened (the host ignores a divergence past the last step). Its
neighbours in the batch are unaffected.

Two variants of the chunk, one computation (`Static.fixed_loops`):

  early stop (the CPU)    the spectral-norm iterations stop once sigma settles
                          (lax.while_loop), and a record is a Gram or sharpness
                          step by its step number (lax.cond);
  fixed loops (GPU, TPU)  no data-dependent control flow: power_iters
                          warm-started iterations per record, and the Gram and
                          sharpness records at static positions of the chunk
                          (`record_kinds`). On XLA:GPU each data-dependent loop
                          or conditional copies its predicate to the host: a
                          round trip per iteration per layer, and per record.

Two precisions: `precision`, of every matmul of training (the forward and
backward passes; the loss, errors, margins and flips a record holds are those
of its forward pass, on the training and the test points), and
`measure_precision`, of the measurements of the weights (the radii's power
iterations, ||W(0)||_2, the NTK Gram matrix, the sharpness's Hessian-vector
products): a GPU can train in TF32 and measure in float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from overparam import config, losses, metrics, model, networks, schema, theory

# The fields of `Static` that are not a declared field's (config's `program` flag gives
# those): resolved per run or chosen by the plan. (name, type, default, what the init
# program reads of it: config.INIT or CHUNK; `init_static`.)
_OWN_FIELDS = (
    ("batch_size", int, dataclasses.MISSING, config.CHUNK),  # examples per step (GD: n)
    ("sign_labels", bool, False, config.CHUNK),  # +-1 labels (config.Sweep.sign_labels)
    ("n_test", int, 0, config.INIT),         # held-out test points measured at every record
    ("chunk_records", int, 50, config.CHUNK),  # records per chunk
    ("cache_group", int, 0, config.CHUNK),   # networks trained together through a chunk (0: all)
    ("fixed_loops", bool, False, config.CHUNK),  # no data-dependent control flow (accelerators)
)


def static_class(fields: tuple[dataclasses.Field, ...] = config.FIELDS) -> type:
    """The class of `Static` for the field declarations `fields`: a frozen (hashable,
    keyword-only) dataclass with a field for each declared field that a compiled program
    reads (`config.program_fields`: one run's value, by its run name, with the default
    sweep's default) and `_OWN_FIELDS`; each field's metadata["program"] says what the
    init program reads of it (`init_static`)."""
    specs = [(name, kind, dataclasses.field(default=default, metadata={"program": program}))
             for name, kind, default, program in (*config.program_fields(fields), *_OWN_FIELDS)]
    cls = dataclasses.make_dataclass("Static", specs, frozen=True, kw_only=True)
    cls.__module__ = __name__
    cls.__doc__ = ("Everything that selects a compiled program (hashable): the declared fields "
                   "a program reads (config's `program` flag) and " +
                   ", ".join(name for name, *_ in _OWN_FIELDS) + ".")
    return cls


Static = static_class()


class Hyper(NamedTuple):
    """Per-network scalars, vmapped: seed, init_tag, batch_tag (uint32), lr and
    output_scale (alpha: the model is alpha f, the loss divided by alpha^2)."""

    seed: jax.Array
    init_tag: jax.Array
    batch_tag: jax.Array
    lr: jax.Array
    output_scale: jax.Array


class State(NamedTuple):
    """One network's training state (the engine stacks a leading network axis)."""

    step: jax.Array           # (), int32: the step the current weights are at
    net0: model.Net           # weights at initialization, fixed
    delta: model.Net          # W - W(0); delta.out stays 0 unless train_output
    opt_state: Any
    v: tuple[jax.Array, ...]  # per layer (2, fan_in): warm start of the power iteration
    conv_v: tuple             # per layer: (2, s, s, c_in) warm start of a convolution's
                              # operator norm (None for a dense layer)
    pattern0: tuple[jax.Array, ...]  # per layer (m, n) bool: 1{z_l > 0} at step 0
    batch_key: jax.Array
    alive: jax.Array          # (), bool
    diverged_step: jax.Array  # (), int32: first non-finite step, -1 if none
    init_spectral: jax.Array  # (L,): ||W_l(0)||_2
    gram0: jax.Array          # (n, n): H(0), the NTK Gram at initialization ((0, 0) if unused)
    gram_init_error: jax.Array  # (): ||H(0)/s - H^inf||_2 (NaN if H^inf is not given)
    f0: jax.Array             # (n,): f(x_i) at step 0 with center_output, else (0,)
    f0_test: jax.Array        # (n_test,): f at step 0 on the test points, likewise
    sharp_v: Any              # shaped as the trained weights: the sharpness's warm start
                              # (a (0,) array when sharpness is off)


# Named scopes of the matmuls at each precision: `precision` (training's) and
# `measure_precision` (tests/test_lowering.py finds every dot of a program in one of them).
TRAINING, MEASURING = "training", "measuring"

# What a record holds, in the order of the results schema's columns (overparam.schema).
STEP_FIELDS = schema.measured("steps")
LAYER_FIELDS = schema.measured("layers")


class Keys(NamedTuple):
    """A network's random keys, (2,) uint32 each: its initial hidden and output weights,
    the start of its spectral-norm iterations, its SGD batches."""

    hidden: jax.Array
    out: jax.Array
    power: jax.Array
    batch: jax.Array


def derive_keys(hyper: Hyper) -> Keys:
    """The keys of one network from its identity (config.Run documents the derivation):
    init = fold_in(PRNGKey(seed), init_tag), split into the network's key and the
    power key, the network's key split into hidden and output keys as `model.init`
    does; batch = fold_in(PRNGKey(seed), batch_tag)."""
    base = jax.random.PRNGKey(hyper.seed)
    net_key, power_key = jax.random.split(jax.random.fold_in(base, hyper.init_tag))
    hidden_key, out_key = jax.random.split(net_key)
    return Keys(hidden_key, out_key, power_key, jax.random.fold_in(base, hyper.batch_tag))


KEY_BLOCK = 64  # keys are derived in blocks of this many networks: one compile per process
_derive_batch = jax.jit(jax.vmap(derive_keys))


def batch_keys(hyper: Hyper) -> Keys:
    """derive_keys of every network of a batch (arrays with a networks axis), on the host.

    A separate small program, padded to a multiple of KEY_BLOCK so that it
    compiles once whatever the batch sizes: the init programs then hold no key
    derivation (each PRNG call costs its program about a dozen kernels to compile).
    """
    hyper = jax.tree_util.tree_map(np.asarray, hyper)
    size = len(hyper.seed)
    padded = -(-size // KEY_BLOCK) * KEY_BLOCK
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], padded - size, axis=0)])
    keys = _derive_batch(jax.tree_util.tree_map(pad, hyper))
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[:size], keys)


def _optimizer(static: Static, lr: jax.Array) -> optax.GradientTransformation:
    return optax.sgd(learning_rate=lr, momentum=static.momentum or None)


def network(static: Static, *, measure: bool = False):
    """The network of `static` (overparam.networks), its matmuls at the training precision
    (`static.precision`), or at the measurements' (`static.measure_precision`) with
    measure."""
    return networks.network_of(static.arch, static.param, static.width, static.depth,
                               static.d, static.dtype,
                               static.measure_precision if measure else static.precision)


def _power_iterations(static: Static) -> dict:
    """The stopping rule of the spectral-norm iterations of a record: early (power_tol,
    at most power_max_iters) or, with fixed_loops, exactly power_iters (warm-started from
    the previous record's Ritz vectors, as the early stop is). The default 16 meets the
    accuracy tests with a margin: 8 iterations kept every dense layer's radius within
    3e-7 of an SVD at every step (tests/test_radius.py's bar: 1e-5), but a convolution's
    operator norm under steps of lr = 20 within 1e-3 only (12: 1e-4, the bar; 16: 8e-6).
    Where the early stop needs 2 or 3 iterations, 16 passes are the price of no round
    trip to the host per iteration: on wide layers (passes over D) a smaller count is
    cheaper and less exact."""
    if static.fixed_loops:
        return dict(tol=static.power_tol, max_iters=static.power_iters, fixed=True)
    return dict(tol=static.power_tol, max_iters=static.power_max_iters)


def _multipliers(static: Static, delta: model.Net):
    """Each trained leaf's step-size multiplier (the network's: 1 but under mup), as the
    trained tree's structure of Python floats; None where every one is 1."""
    hidden, out = network(static).multipliers()
    if all(mu == 1.0 for mu in (*hidden, out)):
        return None
    ones = jax.tree_util.tree_map(lambda _: 1.0, delta.other)
    if static.train_output:
        return model.Net(hidden, jax.tree_util.tree_map(lambda _: out, delta.out), ones)
    return hidden, ones


def _trainable(static: Static, delta: model.Net):
    """The trained part of the weights: the measured layers and the other weights, and the
    output layer with train_output."""
    return delta if static.train_output else (delta.hidden, delta.other)


def _with_trainable(static: Static, delta: model.Net, trained) -> model.Net:
    if static.train_output:
        return trained
    return delta._replace(hidden=trained[0], other=trained[1])


def _weights(net0: model.Net, delta: model.Net) -> model.Net:
    return jax.tree_util.tree_map(jnp.add, net0, delta)


def init_single(static: Static, hyper: Hyper, X: jax.Array,
                gram_inf: jax.Array | None = None, X_test: jax.Array | None = None) -> State:
    """State at step 0 of one network. X: (n, d); gram_inf: (n, n) H^inf / s, or None;
    X_test: (n_test, d) (None without test points)."""
    return init_from_keys(static, derive_keys(hyper), X, gram_inf, X_test)


def init_from_keys(static: Static, keys: Keys, X: jax.Array,
                   gram_inf: jax.Array | None = None, X_test: jax.Array | None = None) -> State:
    """`init_single` from the network's derived keys (what the init program runs)."""
    dtype = jnp.dtype(static.dtype)
    net = network(static)
    with jax.named_scope(TRAINING):
        net0 = net.init(keys.hidden, keys.out, X)
        f0, pre = net.apply(net0, X)
    delta = jax.tree_util.tree_map(jnp.zeros_like, net0)
    matrices = [net.matrix(layer, W) for layer, W in enumerate(net0.hidden, start=1)]
    v = _power_block(keys.power, matrices, dtype)
    opt_state = _optimizer(static, 1.0).init(_trainable(static, delta))  # no lr in it
    precision = model.PRECISIONS[static.measure_precision]
    with jax.named_scope(MEASURING):
        init_spectral = jnp.stack([metrics.initial_spectral_norm(W, b, precision=precision)
                                   for W, b in zip(matrices, v)])
    gram0, gram_err = jnp.zeros((0, 0), dtype), jnp.full((), jnp.nan, dtype)
    if static.gram_every:
        gram0 = _gram(static, net0, X)
        if gram_inf is not None:
            scale = theory.gram_scale(static.param, static.width, depth=static.depth,
                                      train_output=static.train_output)
            with jax.named_scope(MEASURING):
                gram_err = metrics.symmetric_norm(gram0 / scale - gram_inf)
    return State(step=jnp.zeros((), jnp.int32), net0=net0, delta=delta, opt_state=opt_state,
                 v=v, conv_v=_conv_starts(static, keys.power, dtype),
                 pattern0=tuple(z > 0 for z in pre), batch_key=keys.batch,
                 alive=jnp.ones((), bool),
                 diverged_step=-jnp.ones((), jnp.int32), init_spectral=init_spectral,
                 gram0=gram0, gram_init_error=gram_err,
                 f0=f0 if static.center_output else jnp.zeros((0,), dtype),
                 f0_test=_test_output(static, net0, X_test) if static.center_output
                 else jnp.zeros((0,), dtype),
                 sharp_v=_sharpness_start(static, keys.power, delta))


def _conv_starts(static: Static, power_key: jax.Array, dtype) -> tuple:
    """Random (2, s, s, c_in) starts of each convolution's operator-norm iteration (None for
    a dense layer), from the power key's second stream."""
    net = network(static)
    shapes = [net.conv_shape(layer) for layer in range(1, static.depth + 1)]
    keys = jax.random.split(jax.random.fold_in(power_key, 2), static.depth)
    return tuple(None if shape is None else jax.random.normal(k, (2, *shape), dtype)
                 for k, shape in zip(keys, shapes))


def _test_output(static: Static, net: model.Net, X_test: jax.Array | None) -> jax.Array:
    """f on the test points (n_test,) ((0,) without them)."""
    if not static.n_test:
        return jnp.zeros((0,), jnp.dtype(static.dtype))
    if X_test is None:
        raise ValueError(f"the program has n_test={static.n_test} test points: pass X_test")
    with jax.named_scope(TRAINING):
        return network(static).apply(net, X_test)[0]


def _errors(static: Static, g: jax.Array, y: jax.Array) -> jax.Array:
    """The 0-1 error of +-1 labels, else the fraction of |g - y| > regression_tol."""
    if static.sign_labels:
        return metrics.zero_one_error(g, y).astype(g.dtype)
    return metrics.regression_error(g, y, static.regression_tol).astype(g.dtype)


def _test_metrics(static: Static, hyper: Hyper, state: State, X_test, y_test) -> dict:
    """test_loss and test_error of the current weights on the held-out points: the loss of
    the model's output with the sweep's reduction in the units of the training loss (a
    sum is rescaled to n points: (n / n_test) sum), and the error as train_error's; NaN
    without test points."""
    nan = jnp.full((), jnp.nan, state.init_spectral.dtype)
    if not static.n_test:
        return dict(test_loss=nan, test_error=nan)
    f = _test_output(static, _weights(state.net0, state.delta), X_test)
    g = model_output(static, hyper, f, state.f0_test)
    loss = losses.reduce(losses.per_example(static.loss, g, y_test),
                         reduction=static.reduction, n=static.n)
    return dict(test_loss=loss, test_error=_errors(static, g, y_test))


def _sharpness_start(static: Static, power_key: jax.Array, delta: model.Net):
    """A random start of the first sharpness's Lanczos iteration, shaped as the trained
    weights (a zero-size array when sharpness is off)."""
    trained = _trainable(static, delta)
    if not static.sharpness_every:
        return jnp.zeros((0,), jnp.dtype(static.dtype))
    leaves, treedef = jax.tree_util.tree_flatten(trained)
    keys = jax.random.split(jax.random.fold_in(power_key, 1), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [
        jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def _gram(static: Static, net: model.Net, X: jax.Array) -> jax.Array:
    with jax.named_scope(MEASURING):
        return network(static, measure=True).gram(net, X, static.train_output)


def _when(flag, compute, otherwise):
    """compute() where flag, else otherwise(): flag a Python bool (a record's static
    position in the chunk says: no conditional in the program) or a traced bool
    (lax.cond: only the branch taken runs, also under vmap, since it is unbatched)."""
    if isinstance(flag, bool):
        return compute(None) if flag else otherwise(None)
    return jax.lax.cond(flag, compute, otherwise, None)


def _gram_stats(static: Static, state: State, X: jax.Array, is_gram_step) -> dict:
    """lambda_min(H(t)), lambda_max(H(t)), ||H(t) - H(0)||_2 and ||H(0)/s - H^inf||_2 on Gram
    steps, else NaN. is_gram_step: a Python or a traced bool (`_when`)."""
    nan = jnp.full((), jnp.nan, state.init_spectral.dtype)
    names = ("gram_lambda_min", "gram_lambda_max", "gram_change", "gram_init_error")
    if not static.gram_every or is_gram_step is False:
        return dict.fromkeys(names, nan)

    def stats(_):
        H = _gram(static, _weights(state.net0, state.delta), X)
        with jax.named_scope(MEASURING):
            eigenvalues = jnp.linalg.eigvalsh(H)
            change = metrics.symmetric_norm(H - state.gram0)
        return eigenvalues[0], eigenvalues[-1], change, state.gram_init_error

    values = _when(is_gram_step, stats, lambda _: (nan,) * 4)
    return dict(zip(names, values))


def _sharpness(static: Static, hyper: Hyper, state: State, X, y, is_sharpness_step):
    """(sharpness, the next warm start): on sharpness steps the largest eigenvalue of the
    Hessian of the full-batch objective (the loss of alpha (f - f0) divided by alpha^2)
    with respect to the trained weights, by `metrics.lanczos_top` from state.sharp_v
    on forward-over-reverse Hessian-vector products (at the measurements' precision);
    NaN and sharp_v unchanged on the other steps. is_sharpness_step: a Python or a
    traced bool (`_when`).

    Under mup, whose layers step by eta * mu_l, it is the Hessian in the coordinates
    that GD steps uniformly: M^1/2 Hess M^1/2, M = diag(mu) (for every other
    parameterization M = I): GD on a quadratic is stable iff eta < 2 / sharpness.
    """
    nan = jnp.full((), jnp.nan, state.init_spectral.dtype)
    if not static.sharpness_every or is_sharpness_step is False:
        return nan, state.sharp_v
    trained = _trainable(static, state.delta)
    mus = _multipliers(static, state.delta)
    root = lambda v: v if mus is None else jax.tree_util.tree_map(
        lambda leaf, mu: math.sqrt(mu) * leaf, v, mus)

    def objective(w):
        return _objective(static, hyper, state.net0, state.delta, w, X, y, state.f0,
                          measure=True)[0]

    def hvp(v):
        return root(jax.jvp(jax.grad(objective), (trained,), (root(v),))[1])

    def compute(_):
        with jax.named_scope(MEASURING):
            return metrics.lanczos_top(hvp, state.sharp_v, iters=static.sharpness_iters,
                                       precision=model.PRECISIONS[static.measure_precision])

    return _when(is_sharpness_step, compute, lambda _: (nan, state.sharp_v))


def _power_block(power_key: jax.Array, matrices, dtype):
    """Random (2, fan_in) starts of every layer's spectral-norm iteration, for the layers'
    weights as matrices (one draw for all layers: fewer PRNG calls compile faster)."""
    fan_ins = [W.shape[1] for W in matrices]
    z = jax.random.normal(power_key, (2, sum(fan_ins)), dtype)
    return tuple(jnp.split(z, np.cumsum(fan_ins)[:-1], axis=1))


def model_output(static: Static, hyper: Hyper, f: jax.Array, f0: jax.Array) -> jax.Array:
    """The output g that the loss sees: alpha f, or alpha (f - f0) with center_output
    (Chizat, Oyallon & Bach 2019's scaled and centered model). f, f0: (b,)."""
    return hyper.output_scale * (f - f0 if static.center_output else f)


def _objective(static: Static, hyper: Hyper, net0: model.Net, delta: model.Net, trained, X, y,
               f0, *, measure: bool = False):
    """(objective, (g, pre, loss)) on a batch X: (b, d), y: (b,), f0: (b,) (f(0) there;
    (0,) without center_output): loss = the reduced loss of g = `model_output`, and the
    objective GD minimizes, loss / alpha^2 (Chizat et al. 2019). Its matmuls at the
    training precision, or the measurements' with measure (the sharpness's)."""
    net = _weights(net0, _with_trainable(static, delta, trained))
    with jax.named_scope(MEASURING if measure else TRAINING):
        f, pre = network(static, measure=measure).apply(net, X)
    g = model_output(static, hyper, f, f0)
    loss = losses.reduce(losses.per_example(static.loss, g, y), reduction=static.reduction,
                         n=static.n)
    return loss / hyper.output_scale**2, (g, pre, loss)


def _gradient(static: Static, hyper: Hyper, state: State, X: jax.Array, y: jax.Array):
    """Objective, (g, pre, loss) and gradient on this step's batch (all of X for GD)."""
    f0 = state.f0
    if static.optimizer == "sgd":
        key = jax.random.fold_in(state.batch_key, state.step)
        idx = jax.random.permutation(key, static.n)[: static.batch_size]
        X, y = X[idx], y[idx]
        f0 = f0[idx] if static.center_output else f0
    grad_fn = jax.value_and_grad(functools.partial(_objective, static, hyper), argnums=2,
                                 has_aux=True)
    (objective, aux), grads = grad_fn(state.net0, state.delta, _trainable(static, state.delta),
                                      X, y, f0)
    return objective, aux, grads


def _update(static: Static, hyper: Hyper, state: State, loss, grads) -> State:
    """One optimizer step; frozen from the first step whose loss or gradient is not finite.
    Under mup each layer's gradient is scaled by its step-size multiplier first (with
    momentum too, this is SGD with per-layer step sizes eta * mu_l)."""
    ok = jnp.isfinite(loss) & jnp.isfinite(metrics.global_norm(grads))
    trained = _trainable(static, state.delta)
    mus = _multipliers(static, state.delta)
    if mus is not None:
        grads = jax.tree_util.tree_map(lambda g, mu: g * mu, grads, mus)
    updates, opt_state = _optimizer(static, hyper.lr).update(grads, state.opt_state, trained)
    new_delta = _with_trainable(static, state.delta, optax.apply_updates(trained, updates))
    active = state.alive & ok
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, old)
    died = state.alive & ~ok
    return state._replace(
        step=state.step + 1, delta=keep(new_delta, state.delta),
        opt_state=keep(opt_state, state.opt_state), alive=state.alive & ok,
        diverged_step=jnp.where(died, state.step, state.diverged_step))


def _measure(static: Static, state: State, X, y, loss, f, pre, grads, is_gram_step):
    """Step and layer records of the current weights (but the test metrics and the
    sharpness), and the new power vectors (matrices' and convolutions'). f: the model's
    output g (`model_output`) on X; loss: its reduced loss."""
    precision = model.PRECISIONS[static.measure_precision]
    iterations = _power_iterations(static)
    net = network(static)
    matrices = [net.matrix(layer, D) for layer, D in enumerate(state.delta.hidden, start=1)]
    iterated = _iterated(static, state, grads)
    iterated_matrices = (matrices if not static.fixed_loops else
                         [net.matrix(layer, M) for layer, M in enumerate(iterated, start=1)])
    spectral, vs, operator, conv_vs = [], [], [], []
    for M, v in zip(iterated_matrices, state.v):
        sigma, v = metrics.spectral_norm(M, v, precision=precision, **iterations)
        spectral.append(sigma)
        vs.append(v)
    for M, v in zip(iterated, state.conv_v):
        if v is None:  # a dense layer: its operator norm is radius_spectral
            operator.append(jnp.full((), jnp.nan, M.dtype))
            conv_vs.append(None)
            continue
        sigma, v = metrics.conv_operator_norm(M, v, precision=precision, **iterations)
        operator.append(sigma)
        conv_vs.append(v)
    if static.fixed_loops:  # the weights have not moved at step 0: radii 0
        moved = state.step > 0
        spectral = [jnp.where(moved, sigma, 0.0) for sigma in spectral]
        operator = [jnp.where(moved, sigma, 0.0) if v is not None else sigma
                    for sigma, v in zip(operator, state.conv_v)]
    margin = (metrics.min_margin(f, y) if static.sign_labels
              else jnp.full((), jnp.nan, f.dtype))
    step_rec = dict(loss=loss, train_error=_errors(static, f, y), min_margin=margin,
                    grad_norm=metrics.global_norm(grads),
                    radius_output=_norm(state.delta.out),
                    **_gram_stats(static, state, X, is_gram_step))
    layer_rec = dict(
        radius_spectral=jnp.stack(spectral),
        radius_frobenius=jnp.stack([metrics.frobenius_norm(D) for D in matrices]),
        radius_rowmax=jnp.stack([metrics.rowmax_norm(D) for D in matrices]),
        radius_operator=jnp.stack(operator),
        flip_frac=jnp.stack([metrics.flip_fraction(z, p).astype(f.dtype)
                             for z, p in zip(pre, state.pattern0)]),
        init_spectral=state.init_spectral)
    return step_rec, layer_rec, tuple(vs), tuple(conv_vs)


def _iterated(static: Static, state: State, grads) -> tuple:
    """What each layer's spectral-norm iterations run on (as the network stores the layer's
    weight), for the matrices and for the convolutions: D_l = W_l - W_l(0), but with
    fixed_loops at step 0 (D_l = 0) the layer's gradient G_l, the direction of the first
    step's change of D_l (-eta mu_l G_l, with momentum too): its Ritz vectors are then
    those of D_l(1), and step 1 starts warm, where its start would otherwise be the
    random one (with a fixed count of iterations the cold start is the hard case: e.g.
    8 iterations gave 3e-5 relative error at step 1 of a depth-3 zou network, 2e-8 at
    every later step)."""
    if not static.fixed_loops:
        return state.delta.hidden
    hidden = grads.hidden if static.train_output else grads[0]
    return tuple(jnp.where(state.step == 0, G, D) for G, D in zip(hidden, state.delta.hidden))


def _norm(tree) -> jax.Array:
    """||x||_2 of a weight array (the output layer's), or of all of a tree's leaves."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.linalg.norm(leaves[0].ravel()) if len(leaves) == 1 else metrics.global_norm(tree)


class Records(NamedTuple):
    """One chunk's records. Batched (the `chunk` program): step (K,), steps (K, B, F),
    layers (K, B, L, G); for one network (`chunk_single`): steps (K, F), layers
    (K, L, G). F indexes STEP_FIELDS, G LAYER_FIELDS: two stacked arrays rather than
    one per field keep the compiled program small; `columns` unpacks them."""

    step: jax.Array
    steps: jax.Array
    layers: jax.Array


def columns(records: Records) -> dict[str, np.ndarray]:
    """{field: array} of (device-fetched) records: 'step' and each STEP_FIELDS field
    (B, K) ((K,) for one network), each LAYER_FIELDS field (B, K, L) ((K, L))."""
    steps, layers = np.asarray(records.steps), np.asarray(records.layers)
    if steps.ndim == 3:  # (K, B, ...) -> (B, K, ...)
        steps, layers = steps.swapaxes(0, 1), layers.swapaxes(0, 1)
        step = np.broadcast_to(np.asarray(records.step), steps.shape[:2])
    else:
        step = np.asarray(records.step)
    out = {"step": step}
    out.update({name: steps[..., j] for j, name in enumerate(STEP_FIELDS)})
    out.update({name: layers[..., j] for j, name in enumerate(LAYER_FIELDS)})
    return out


def _record_then_train(static: Static, hyper: Hyper, X, y, X_test, y_test, state: State,
                       step, *, kinds: tuple[bool, bool] | None = None):
    """Measures the weights at state.step (= `step`), then takes record_every steps.

    kinds: (is_gram_step, is_sharpness_step) as Python bools, where the record's
    position in the chunk decides them (`record_kinds`: no conditional in the
    program); None: decided from `step`, an unbatched value, so that the Gram
    matrix and the sharpness are computed (lax.cond) only on their steps, also
    under vmap. Returns the new state and this record's (STEP_FIELDS values (F,),
    LAYER_FIELDS values (L, G)).
    """
    if kinds is None:
        kinds = tuple((step % every == 0) if every else False
                      for every in (static.gram_every, static.sharpness_every))
    is_gram_step, is_sharpness_step = kinds
    objective, (f, pre, loss), grads = _gradient(static, hyper, state, X, y)
    if static.optimizer == "sgd":  # metrics are over the full training set
        _, (f, pre, loss) = _objective(static, hyper, state.net0, state.delta,
                                       _trainable(static, state.delta), X, y, state.f0)
    with jax.named_scope(MEASURING):
        step_rec, layer_rec, v, conv_v = _measure(static, state, X, y, loss, f, pre, grads,
                                                  is_gram_step)
    step_rec.update(_test_metrics(static, hyper, state, X_test, y_test))
    step_rec["sharpness"], sharp_v = _sharpness(static, hyper, state, X, y, is_sharpness_step)
    alive = state.alive & jnp.isfinite(loss) & jnp.isfinite(step_rec["grad_norm"])
    step_values = jnp.stack([step_rec[name] for name in STEP_FIELDS])
    layer_values = jnp.stack([layer_rec[name] for name in LAYER_FIELDS], axis=-1)
    record = (jnp.where(alive, step_values, jnp.nan), jnp.where(alive, layer_values, jnp.nan))
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(alive, a, b), new, old)
    state = state._replace(v=keep(v, state.v), conv_v=keep(conv_v, state.conv_v),
                           sharp_v=keep(sharp_v, state.sharp_v))
    state = _update(static, hyper, state, objective, grads)

    def plain_step(_, s):
        objective, _, grads = _gradient(static, hyper, s, X, y)
        return _update(static, hyper, s, objective, grads)

    state = jax.lax.fori_loop(0, static.record_every - 1, plain_step, state)
    return state, record


def record_period(record_every: int, gram_every: int, sharpness_every: int) -> int:
    """Records from one record that is both a Gram and a sharpness record to the next: the
    least common multiple of gram_every and sharpness_every (those that are on, 0 is off)
    over record_every; 1 when neither is on. With fixed_loops a chunk holds whole periods
    and starts at a multiple of one (plan.chunking makes every chunk so)."""
    everies = [every // record_every for every in (gram_every, sharpness_every) if every]
    return math.lcm(*everies) if everies else 1


def _period(static: Static) -> int:
    return record_period(static.record_every, static.gram_every, static.sharpness_every)


def record_kinds(static: Static) -> list[tuple[tuple[bool, bool], int]]:
    """The records of one period (`record_period`) as runs of consecutive records of one
    kind: ((is_gram_step, is_sharpness_step), how many). Record k of a period is a Gram
    step iff k record_every is a multiple of gram_every (likewise for sharpness): e.g.
    gram_every = 10 records: [((True, False), 1), ((False, False), 9)]."""
    runs = []
    for k in range(_period(static)):
        kind = tuple(bool(every) and (k * static.record_every) % every == 0
                     for every in (static.gram_every, static.sharpness_every))
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + 1)
        else:
            runs.append((kind, 1))
    return runs


def _scan_records(static: Static, record, state, steps: jax.Array):
    """The records at `steps` (K,), from `state`: (state, (step values (K, ...), layer values
    (K, ...))). record(state, step, kinds) measures and trains one record (`kinds` as
    `_record_then_train` takes them).

    Without fixed_loops, one lax.scan whose records decide from their step whether they
    are Gram or sharpness steps (lax.cond). With it, a lax.scan over the chunk's periods
    (`record_period`), each period its runs of records of one kind (`record_kinds`) in
    order, a run of one record inline and a longer one as a lax.scan: every record's
    kind is static, and every loop has a fixed trip count.
    """
    if not static.fixed_loops:
        return jax.lax.scan(lambda s, t: record(s, t, None), state, steps)
    period = _period(static)
    if len(steps) % period:
        raise ValueError(f"with fixed_loops a chunk holds whole periods of {period} records "
                         f"(gram_every, sharpness_every); got {len(steps)} records")
    runs = record_kinds(static)
    if runs == [((False, False), period)]:  # nothing but plain records: one scan
        return jax.lax.scan(lambda s, t: record(s, t, (False, False)), state, steps)

    def one_period(state, period_steps):
        values, at = [], 0
        for kind, count in runs:
            part = period_steps[at:at + count]
            if count == 1:
                state, value = record(state, part[0], kind)
                value = jax.tree_util.tree_map(lambda a: a[None], value)
            else:
                state, value = jax.lax.scan(
                    lambda s, t, kind=kind: record(s, t, kind), state, part)
            values.append(value)
            at += count
        return state, jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *values)

    state, values = jax.lax.scan(one_period, state, steps.reshape(-1, period))
    return state, jax.tree_util.tree_map(lambda a: a.reshape(len(steps), *a.shape[2:]), values)


def chunk_batch(static: Static, state: State, hyper: Hyper, X: jax.Array, y: jax.Array,
                start: jax.Array, X_test: jax.Array | None = None,
                y_test: jax.Array | None = None) -> tuple[State, Records]:
    """`static.chunk_records` records of a batch of networks from step `start`
    (= state.step, unbatched). Every argument but `start` has a leading networks
    axis (B); X: (B, n, d), y: (B, n); X_test: (B, n_test, d), y_test: (B, n_test)
    where static.n_test > 0 (else None).

    One lax.scan over records whose body is vmapped over networks: the records
    come out (K, B, ...) as the scan stacks them, with no transposing copy
    (with fixed_loops, a scan over periods of records, `_scan_records`: then
    `start` must be a multiple of a `record_period` of records). With
    static.cache_group = g < B, the batch runs as B/g groups of g networks, one group
    after the other through the whole chunk (lax.map), so that a group's
    activations stay in the CPU's caches from step to step (g divides B: the
    planner's job).
    """
    steps = start + jnp.arange(static.chunk_records, dtype=jnp.int32) * static.record_every
    if static.n_test and X_test is None:
        raise ValueError(f"the program has n_test={static.n_test} test points: pass them")

    def run(args):
        state, hyper, data = args

        def record(state, step, kinds):
            one = functools.partial(_record_then_train, static, kinds=kinds)
            return jax.vmap(one, in_axes=(0, 0, 0, 0, 0, 0, None))(hyper, *data, state, step)

        return _scan_records(static, record, state, steps)

    data = (X, y, X_test, y_test)
    B = X.shape[0]
    g = static.cache_group or B
    if g >= B:
        state, (step_values, layer_values) = run((state, hyper, data))
    else:
        if B % g:
            raise ValueError(f"group {g} does not divide the batch of {B} networks")
        tree = jax.tree_util.tree_map
        state, values = jax.lax.map(run, tree(lambda a: a.reshape(B // g, g, *a.shape[1:]),
                                              (state, hyper, data)))
        state = tree(lambda a: a.reshape(B, *a.shape[2:]), state)
        step_values, layer_values = (  # (B/g, K, g, ...) -> (K, B, ...)
            jnp.swapaxes(v, 0, 1).reshape(v.shape[1], B, *v.shape[3:]) for v in values)
    return state, Records(step=steps, steps=step_values, layers=layer_values)


def chunk_single(static: Static, state: State, hyper: Hyper, X: jax.Array, y: jax.Array,
                 start: jax.Array, X_test: jax.Array | None = None,
                 y_test: jax.Array | None = None) -> tuple[State, Records]:
    """`chunk_batch` for one network (no networks axis). X: (n, d), y: (n,); X_test:
    (n_test, d), y_test: (n_test,) or None."""
    add = lambda tree: jax.tree_util.tree_map(lambda a: a[None], tree)
    state, records = chunk_batch(static, add(state), add(hyper), X[None], y[None], start,
                                 add(X_test), add(y_test))
    return (jax.tree_util.tree_map(lambda a: a[0], state),
            records._replace(steps=records.steps[:, 0], layers=records.layers[:, 0]))


class Program(NamedTuple):
    init: Any   # init(keys, X, H, X_test) -> State, every argument with a networks axis
    chunk: Any  # chunk(state, hyper, X, y, start, X_test, y_test) -> (State, Records)


def init_static(static: Static) -> Static:
    """`static` with every field that the init program does not read set to one value:
    shapes that differ only in those (GD and SGD, losses, schedules) share one init
    program. What init reads of a field is its metadata["program"] (`static_class`):
    a CHUNK field is set to its default (batch_size, which has none, to n), a NONZERO
    one to 0 or 1. tests/test_train.py varies every such field and checks that init
    gives the same state."""
    def one_value(f: dataclasses.Field) -> Any:
        if f.metadata["program"] == config.NONZERO:
            return type(getattr(static, f.name))(bool(getattr(static, f.name)))
        return static.n if f.default is dataclasses.MISSING else f.default

    return dataclasses.replace(static, **{f.name: one_value(f) for f in dataclasses.fields(static)
                                          if f.metadata["program"] != config.INIT})


@functools.cache
def _init_program(static: Static):
    return jax.jit(jax.vmap(functools.partial(init_from_keys, static)))


@functools.cache
def make_program(static: Static, donate: bool = False) -> Program:
    """The jitted init (vmapped over networks) and chunk functions of one shape.

    donate: the chunk donates its state argument, whose buffers the new state
    then takes (XLA aliases them): a batch holds one state rather than two, and
    a state passed to the chunk is deleted (what the engine trains with; a
    caller that calls the chunk twice on one state leaves it False).
    """
    chunk = jax.jit(functools.partial(chunk_batch, static),
                    donate_argnums=(0,) if donate else ())
    return Program(init=_init_program(init_static(static)), chunk=chunk)
