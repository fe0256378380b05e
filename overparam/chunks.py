"""The compiled program's body: K recorded steps of many networks of one shape.

`jit_program(static)` returns two jitted functions over a batch of networks
(`Jitted`):

  init(keys, data) -> State          draws each network from its own keys
                                     (overparam.initial)
  chunk(state, scalars, data, start) -> (State, Records)
                           one lax.scan over `static.chunk_records` records,
                           its body vmapped over networks; each record
                           measures the current weights (on the training set,
                           and on the held-out test points where the program
                           has them: static.n_test > 0), then takes
                           `record_every` optimizer steps.

keys: `trainstate.Keys`, scalars: `trainstate.RunScalars`, data:
`trainstate.Data`, each with a leading networks axis. A network is a function
of its scalars (seed, key tags, lr) and its data, never of its position in the
batch. The number of steps of the sweep is not part of a program: every chunk
has the same length, the last one's records past the sweep's last step are
dropped by the host, so a shape compiles once whatever the number of steps (and
a sweep of another length finds its programs in the persistent compilation
cache).

A network whose loss or gradient stops being finite is frozen at its last
finite weights; its records from then on are NaN and `diverged_step` says
when it happened (the host ignores a divergence past the last step). Its
neighbours in the batch are unaffected.

Two variants of the chunk, one computation (`train.Static.fixed_loops`):

  early stop (the CPU)    the spectral-norm iterations stop once sigma settles
                          (lax.while_loop), and a record is a Gram or sharpness
                          step by its step number (lax.cond);
  fixed loops (GPU, TPU)  no data-dependent control flow: power_iters
                          warm-started iterations per record, and the Gram and
                          sharpness records at static positions of the chunk
                          (`record_kinds`). On XLA:GPU each data-dependent loop
                          or conditional copies its predicate to the host: a
                          round trip per iteration per layer, and per record.

Two precisions: `precision`, of every matmul of training (overparam.optimize:
the forward and backward passes; the loss, errors, margins and flips a record
holds are those of its forward pass, on the training and the test points), and
`measure_precision`, of the measurements of the weights (overparam.measurements:
the radii's power iterations, ||W(0)||_2, the NTK Gram matrix, the sharpness's
Hessian-vector products): a GPU can train in TF32 and measure in float32.

Owns the scanned records (`Records`, `columns`, `record_kinds`), the chunk
(`chunk_batch`, `chunk_single`) and the jitted pair (`Jitted`, `jit_program`).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from overparam import initial, lazy, measurements, optimize, train, trainstate


class Records(NamedTuple):
    """One chunk's records. Batched (the `chunk` program): step (K,), steps (K, B, F),
    layers (K, B, L, G); for one network (`chunk_single`): steps (K, F), layers
    (K, L, G). F indexes train.STEP_FIELDS, G train.LAYER_FIELDS: two stacked arrays rather than
    one per field keep the compiled program small; `columns` unpacks them."""

    step: jax.Array
    steps: jax.Array
    layers: jax.Array


def columns(records: Records, static: train.Static | None = None) -> dict[str, np.ndarray]:
    """{field: array} of (device-fetched) records: 'step' and each train.STEP_FIELDS field
    (B, K) ((K,) for one network), each train.LAYER_FIELDS field (B, K, L) ((K, L)); with
    the program's `static`, also its optional columns (train.step_fields, layer_fields)."""
    step_fields, layer_fields = ((train.STEP_FIELDS, train.LAYER_FIELDS) if static is None
                                 else (train.step_fields(static), train.layer_fields(static)))
    steps, layers = np.asarray(records.steps), np.asarray(records.layers)
    if steps.ndim == 3:  # (K, B, ...) -> (B, K, ...)
        steps, layers = steps.swapaxes(0, 1), layers.swapaxes(0, 1)
        step = np.broadcast_to(np.asarray(records.step), steps.shape[:2])
    else:
        step = np.asarray(records.step)
    out = {"step": step}
    out.update({name: steps[..., j] for j, name in enumerate(step_fields)})
    out.update({name: layers[..., j] for j, name in enumerate(layer_fields)})
    return out


def _record_then_train(static: train.Static, scalars: trainstate.RunScalars,
                       data: trainstate.Data, state: trainstate.State, step, *,
                       kinds: tuple[bool, bool] | None = None):
    """Measures the weights at state.step (= `step`), then takes record_every steps.
    data: one network's arrays (its X and y; X_test and y_test where the program has
    test points).

    kinds: (is_gram_step, is_sharpness_step) as Python bools, where the record's
    position in the chunk decides them (`record_kinds`: no conditional in the
    program); None: decided from `step`, an unbatched value, so that the Gram
    matrix and the sharpness are computed (lax.cond) only on their steps, also
    under vmap. Returns the new state and this record's (STEP_FIELDS values (F,),
    LAYER_FIELDS values (L, G)).
    """
    X, y = data.X, data.y
    if kinds is None:
        kinds = tuple((step % every == 0) if every else False
                      for every in (static.gram_every, static.sharpness_every))
    is_gram_step, is_sharpness_step = kinds
    objective, (f, pre, loss), grads = optimize.gradient(static, scalars, state, X, y)
    if static.optimizer == "sgd":  # metrics are over the full training set
        _, (f, pre, loss) = optimize.objective(static, scalars, state.net0, state.delta,
                                               trainstate.trainable(static, state.delta), X, y,
                                               state.f0)
    with jax.named_scope(trainstate.MEASURING):
        step_rec, layer_rec, v, conv_v = measurements.measure(static, state, X, y, loss, f, pre,
                                                              grads, is_gram_step)
    step_rec.update(measurements.held_out_metrics(static, scalars, state, data.X_test,
                                                  data.y_test))
    step_rec["sharpness"], sharp_v = measurements.sharpness(static, scalars, state, X, y,
                                                            is_sharpness_step)
    lazy_steps, lazy_layers = lazy.record(static, scalars, state, data, f, pre)
    step_rec.update(lazy_steps)
    layer_rec.update(lazy_layers)
    alive = state.alive & jnp.isfinite(loss) & jnp.isfinite(step_rec["grad_norm"])
    step_values = jnp.stack([step_rec[name] for name in train.step_fields(static)])
    layer_values = jnp.stack([layer_rec[name] for name in train.layer_fields(static)], axis=-1)
    record = (jnp.where(alive, step_values, jnp.nan), jnp.where(alive, layer_values, jnp.nan))
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(alive, a, b), new, old)
    state = state._replace(v=keep(v, state.v), conv_v=keep(conv_v, state.conv_v),
                           sharp_v=keep(sharp_v, state.sharp_v))
    state = optimize.update(static, scalars, lazy.step(static, scalars, state, data), objective,
                            grads)

    def plain_step(_, s):
        objective, _, grads = optimize.gradient(static, scalars, s, X, y)
        return optimize.update(static, scalars, lazy.step(static, scalars, s, data), objective,
                               grads)

    state = jax.lax.fori_loop(0, static.record_every - 1, plain_step, state)
    return state, record


def _period(static: train.Static) -> int:
    return train.record_period(static.record_every, static.gram_every, static.sharpness_every)


def record_kinds(static: train.Static) -> list[tuple[tuple[bool, bool], int]]:
    """The records of one period (`train.record_period`) as runs of consecutive records of one
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


def _scan_records(static: train.Static, record, state, steps: jax.Array):
    """The records at `steps` (K,), from `state`: (state, (step values (K, ...), layer values
    (K, ...))). record(state, step, kinds) measures and trains one record (`kinds` as
    `_record_then_train` takes them).

    Without fixed_loops, one lax.scan whose records decide from their step whether they
    are Gram or sharpness steps (lax.cond). With it, a lax.scan over the chunk's periods
    (`train.record_period`), each period its runs of records of one kind (`record_kinds`) in
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


def chunk_batch(static: train.Static, state: trainstate.State, scalars: trainstate.RunScalars,
                data: trainstate.Data, start: jax.Array) -> tuple[trainstate.State, Records]:
    """`static.chunk_records` records of a batch of networks from step `start`
    (= state.step, unbatched). Every other argument has a leading networks axis (B);
    data: X (B, n, d), y (B, n), and X_test (B, n_test, d), y_test (B, n_test) where
    static.n_test > 0 (else None); its H_inf is not read.

    One lax.scan over records whose body is vmapped over networks: the records
    come out (K, B, ...) as the scan stacks them, with no transposing copy
    (with fixed_loops, a scan over periods of records, `_scan_records`: then
    `start` must be a multiple of a `train.record_period` of records). With
    static.cache_group = g < B, the batch runs as B/g groups of g networks, one group
    after the other through the whole chunk (lax.map), so that a group's
    activations stay in the CPU's caches from step to step (g divides B: the
    planner's job).
    """
    steps = start + jnp.arange(static.chunk_records, dtype=jnp.int32) * static.record_every
    if static.n_test and data.X_test is None:
        raise ValueError(f"the program has n_test={static.n_test} test points: pass them")
    if not train.kernel_gd(static):  # no argument of the program
        data = data._replace(H_inf=None)
    elif data.H_inf is None:
        raise ValueError("the program follows the infinite-width trajectory: pass H_inf")

    def run(args):
        state, scalars, data = args

        def record(state, step, kinds):
            one = functools.partial(_record_then_train, static, kinds=kinds)
            return jax.vmap(one, in_axes=(0, 0, 0, None))(scalars, data, state, step)

        return _scan_records(static, record, state, steps)

    B = data.X.shape[0]
    g = static.cache_group or B
    if g >= B:
        state, (step_values, layer_values) = run((state, scalars, data))
    else:
        if B % g:
            raise ValueError(f"group {g} does not divide the batch of {B} networks")
        tree = jax.tree_util.tree_map
        state, values = jax.lax.map(run, tree(lambda a: a.reshape(B // g, g, *a.shape[1:]),
                                              (state, scalars, data)))
        state = tree(lambda a: a.reshape(B, *a.shape[2:]), state)
        step_values, layer_values = (  # (B/g, K, g, ...) -> (K, B, ...)
            jnp.swapaxes(v, 0, 1).reshape(v.shape[1], B, *v.shape[3:]) for v in values)
    return state, Records(step=steps, steps=step_values, layers=layer_values)


def chunk_single(static: train.Static, state: trainstate.State, scalars: trainstate.RunScalars,
                 data: trainstate.Data, start: jax.Array) -> tuple[trainstate.State, Records]:
    """`chunk_batch` for one network (no networks axis): data's X (n, d), y (n,); X_test
    (n_test, d), y_test (n_test,) or None."""
    add = lambda tree: jax.tree_util.tree_map(lambda a: a[None], tree)
    state, records = chunk_batch(static, add(state), add(scalars), add(data), start)
    return (jax.tree_util.tree_map(lambda a: a[0], state),
            records._replace(steps=records.steps[:, 0], layers=records.layers[:, 0]))


class Jitted(NamedTuple):
    """The jitted (not yet compiled) init and chunk functions of one shape (`jit_program`);
    `programs.Executables` compiles them per batch size. Every argument but `start`
    has a networks axis:

      init(keys, data) -> State                 keys: trainstate.Keys, data: trainstate.Data
      chunk(state, scalars, data, start) -> (State, Records)
    """

    init: Any
    chunk: Any


@functools.cache
def _init_program(static: train.Static):
    return jax.jit(jax.vmap(functools.partial(initial.init_from_keys, static)))


@functools.cache
def jit_program(static: train.Static, donate: bool = False) -> Jitted:
    """The jitted init (vmapped over networks) and chunk functions of one shape. Shapes
    with the same `train.init_static` share their init function.

    donate: the chunk donates its state argument, whose buffers the new state
    then takes (XLA aliases them): a batch holds one state rather than two, and
    a state passed to the chunk is deleted (what the engine trains with; a
    caller that calls the chunk twice on one state leaves it False).
    """
    chunk = jax.jit(functools.partial(chunk_batch, static),
                    donate_argnums=(0,) if donate else ())
    return Jitted(init=_init_program(train.init_static(static)), chunk=chunk)
