"""The lazy and the rich regimes measured directly (docs/THEORY.md section 10).

Each quantity is behind a field, off by default; a program whose fields ask for none
holds none of this (its state, records and tables are those of before):

  linear_twin      the linearized twin: f_lin(x; theta) = f(x; theta_0) + J(x; theta_0)
                   (theta - theta_0), a jax.jvp of the network at theta_0, trained beside
                   the network in the same program from the same theta_0, by the same
                   optimizer, step sizes, multipliers, output scale and SGD batches
                   (`twin_step`); recorded: ||g - g_lin|| on the training and the test
                   points, absolute and relative to ||g - g(0)||, and the twin's loss
                   (`twin_record`). g: the model's output (optimize.model_output).
  infinite_width   the infinite-width trajectory of the mlp under du, zou or ntk, squared
                   loss, full-batch GD without momentum (train.kernel_gd): kernel GD with
                   s H^inf (theory.gram_scale s, theory.gram_inf H^inf) from the network's
                   own g(0), g_inf(k+1) = g_inf(k) - eta s H^inf grad_g loss(g_inf(k)),
                   which for the sum-reduced squared loss is u(k+1) = u(k) - eta s H^inf
                   (u(k) - y); recorded: ||g - g_inf|| on the training points.
  track_features   per hidden layer, the RMS of the coordinates of h_l = relu(z_l) over
                   the training inputs and of h_l - h_l(0) (`feature_record`): feature
                   movement is their ratio to the RMS at step 0, the coordinate check is
                   both at the first steps against the width.
  track_alignment  the centered kernel-target alignment of H(t) at Gram steps
                   (metrics.kernel_alignment; measurements.gram_stats computes it).

Why g_lin and g_inf follow the network's GD: a step moves theta by -eta M grad_theta
(loss(alpha f) / alpha^2), M the step-size multipliers, so f moves to first order by
-(eta / alpha) J M J^T grad_g loss = -(eta / alpha) H grad_g loss, H the NTK Gram that
the network's `gram` computes; the twin's H is H(0) exactly, the limit's s H^inf.

Owns the twin's state (`Twin`) and every quantity above but the alignment; pure functions
of one network, which overparam.initial (the state at step 0) and overparam.chunks (the
records and the steps) call.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from overparam import losses, metrics, model, optimize, theory, train, trainstate


class Twin(NamedTuple):
    """The linearized twin's state: theta_lin - theta_0 shaped as the trained weights
    (trainstate.trainable), its optimizer state, and whether it is still finite (it is
    frozen at its last finite weights as a network is: optimize.update)."""

    trained: Any
    opt_state: Any
    alive: jax.Array


# ------------------------------------------------------------------------ state at step 0

def init_twin(static: train.Static, delta, opt_state) -> Twin | None:
    """The twin at step 0 (theta_lin = theta_0), None without linear_twin. delta: the
    network's zero offset; opt_state: its optimizer's initial state."""
    if not static.linear_twin:
        return None
    return Twin(trainstate.trainable(static, delta), opt_state, jnp.ones((), bool))


def init_f_inf(static: train.Static, f0: jax.Array) -> jax.Array | None:
    """f_inf at step 0: the network's own f(0) on the training points (n,); None where
    there is no infinite-width trajectory."""
    return f0 if train.kernel_gd(static) else None


def init_h0(static: train.Static, pre) -> tuple | None:
    """h_l(0) = relu(z_l(0)) of every hidden layer, None without track_features."""
    return tuple(jax.nn.relu(z) for z in pre) if static.track_features else None


# ------------------------------------------------------------------------ the twin

def linear_output(static: train.Static, net0, lin, X: jax.Array):
    """(f(X; theta_0), f_lin(X; theta_0 + lin)), each (b,): one jax.jvp of the network at
    theta_0 (at the training precision) in the direction lin (shaped as the trained
    weights)."""
    zero = jax.tree_util.tree_map(jnp.zeros_like, net0)
    network = trainstate.network(static)

    def f(trained):
        net = trainstate.weights(net0, trainstate.with_trainable(static, zero, trained))
        return network.apply(net, X)[0]

    with jax.named_scope(trainstate.TRAINING):
        f0, df = jax.jvp(f, (trainstate.trainable(static, zero),), (lin,))
    return f0, f0 + df


def _loss(static: train.Static, g: jax.Array, y: jax.Array) -> jax.Array:
    return losses.reduce(losses.per_example(static.loss, g, y), reduction=static.reduction,
                         n=static.n)


def twin_objective(static: train.Static, scalars: trainstate.RunScalars, net0, lin, X, y, f0):
    """The twin's objective on a batch: loss(g_lin) / alpha^2, as optimize.objective's."""
    g = optimize.model_output(static, scalars, linear_output(static, net0, lin, X)[1], f0)
    return _loss(static, g, y) / scalars.output_scale**2


def twin_step(static: train.Static, scalars: trainstate.RunScalars, state: trainstate.State,
              X: jax.Array, y: jax.Array) -> trainstate.State:
    """The twin's step from state.step on the network's batch of that step
    (optimize.step_batch), by the network's optimizer (optimize.update: its multipliers,
    momentum, freezing); the state unchanged without a twin."""
    twin = state.twin
    if twin is None:
        return state
    Xb, yb, f0 = optimize.step_batch(static, state, X, y)
    value, grads = jax.value_and_grad(twin_objective, argnums=3)(static, scalars, state.net0,
                                                                 twin.trained, Xb, yb, f0)
    shadow = state._replace(delta=trainstate.with_trainable(static, state.delta, twin.trained),
                            opt_state=twin.opt_state, alive=twin.alive)
    new = optimize.update(static, scalars, shadow, value, grads)
    return state._replace(twin=Twin(trainstate.trainable(static, new.delta), new.opt_state,
                                    new.alive))


def twin_record(static: train.Static, scalars: trainstate.RunScalars, state: trainstate.State,
                g: jax.Array, data: trainstate.Data) -> dict:
    """The twin's steps columns (schema.OPTIONAL's lin_*) at state.step: g, the network's
    model output on the training points (n,); NaN once the twin has diverged, and the test
    columns NaN without test points. {} without a twin."""
    twin = state.twin
    if twin is None:
        return {}
    nan = jnp.full((), jnp.nan, g.dtype)

    def distances(X, f_start, g_now):
        f0, f_lin = linear_output(static, state.net0, twin.trained, X)
        g0 = optimize.model_output(static, scalars, f0, f_start)
        g_lin = optimize.model_output(static, scalars, f_lin, f_start)
        dist = jnp.linalg.norm(g_now - g_lin)
        rel = jnp.where(state.step > 0, dist / jnp.linalg.norm(g_now - g0), jnp.nan)
        return dist, rel, g_lin

    dist, rel, g_lin = distances(data.X, state.f0, g)
    out = dict(lin_distance=dist, lin_distance_rel=rel, lin_distance_test=nan,
               lin_distance_test_rel=nan, lin_loss=_loss(static, g_lin, data.y))
    if static.n_test:
        net = trainstate.weights(state.net0, state.delta)
        with jax.named_scope(trainstate.TRAINING):
            f_test = trainstate.network(static).apply(net, data.X_test)[0]
        g_test = optimize.model_output(static, scalars, f_test, state.f0_test)
        out["lin_distance_test"], out["lin_distance_test_rel"], _ = distances(
            data.X_test, state.f0_test, g_test)
    return {k: jnp.where(twin.alive, v, nan) for k, v in out.items()}


# ------------------------------------------------------------------------ infinite width

def _kernel(static: train.Static, H_inf: jax.Array) -> jax.Array:
    """s H^inf: the limit of H(0) in the network's own units (theory.gram_scale)."""
    return theory.gram_scale(static.param, static.width, depth=static.depth,
                             train_output=static.train_output) * H_inf


def inf_step(static: train.Static, scalars: trainstate.RunScalars, state: trainstate.State,
             data: trainstate.Data) -> trainstate.State:
    """One step of kernel GD with s H^inf (module docstring), in f's units:
    f_inf -= (eta / alpha) s H^inf grad_g loss(g_inf); the state unchanged without it."""
    if state.f_inf is None:
        return state
    g = optimize.model_output(static, scalars, state.f_inf, state.f0)
    grad = jax.grad(lambda g: _loss(static, g, data.y))(g)
    with jax.named_scope(trainstate.MEASURING):
        move = jnp.matmul(_kernel(static, data.H_inf), grad,
                          precision=model.PRECISIONS[static.measure_precision])
    return state._replace(f_inf=state.f_inf - scalars.lr / scalars.output_scale * move)


def inf_record(static: train.Static, scalars: trainstate.RunScalars, state: trainstate.State,
               g: jax.Array) -> dict:
    """inf_distance = ||g - g_inf|| on the training points ({} without infinite_width, NaN
    for a run without an infinite-width trajectory)."""
    if not static.infinite_width:
        return {}
    if state.f_inf is None:
        return dict(inf_distance=jnp.full((), jnp.nan, g.dtype))
    g_inf = optimize.model_output(static, scalars, state.f_inf, state.f0)
    return dict(inf_distance=jnp.linalg.norm(g - g_inf))


# ------------------------------------------------------------------------ features

def feature_record(static: train.Static, state: trainstate.State, pre) -> dict:
    """Per hidden layer (L,): feature_rms, the RMS of h_l(t) = relu(z_l(t)), and
    feature_change_rms, that of h_l(t) - h_l(0), over the training inputs (pre: the
    pre-activations of the full training set). {} without track_features."""
    if state.h0 is None:
        return {}
    h = [jax.nn.relu(z) for z in pre]
    return dict(feature_rms=jnp.stack([metrics.rms(a) for a in h]),
                feature_change_rms=jnp.stack([metrics.rms(a - a0)
                                              for a, a0 in zip(h, state.h0)]))


# ------------------------------------------------------------------------ together

def step(static: train.Static, scalars: trainstate.RunScalars, state: trainstate.State,
         data: trainstate.Data) -> trainstate.State:
    """The twin's and the infinite-width trajectory's step from state.step (call it before
    the network's own step: the twin's SGD batch is that step's)."""
    return inf_step(static, scalars, twin_step(static, scalars, state, data.X, data.y), data)


def record(static: train.Static, scalars: trainstate.RunScalars, state: trainstate.State,
           data: trainstate.Data, g: jax.Array, pre) -> tuple[dict, dict]:
    """The optional steps and layers columns of this module (but the alignment) at
    state.step: ({steps column: ()}, {layers column: (L,)})."""
    return ({**twin_record(static, scalars, state, g, data),
             **inf_record(static, scalars, state, g)}, feature_record(static, state, pre))
