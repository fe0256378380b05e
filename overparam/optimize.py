"""The objective and the optimizer step of one network.

Owns what training computes (at `static.precision`, under the TRAINING scope):
the model's output alpha f or alpha (f - f0) (`model_output`), the reduced loss
and the objective loss / alpha^2 (`objective`), its gradient on a step's batch
(`gradient`: all of X for GD, a key-derived subset for SGD), one optimizer step
that freezes a network once it diverges (`update`), and the training error
(`errors`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from overparam import losses, metrics, model, train, trainstate


def optimizer(static: train.Static, lr: jax.Array) -> optax.GradientTransformation:
    """SGD at step size lr (a traced scalar), with the sweep's momentum (0: none)."""
    return optax.sgd(learning_rate=lr, momentum=static.momentum or None)


def errors(static: train.Static, g: jax.Array, y: jax.Array) -> jax.Array:
    """The 0-1 error of +-1 labels, else the fraction of |g - y| > regression_tol."""
    if static.sign_labels:
        return metrics.zero_one_error(g, y).astype(g.dtype)
    return metrics.regression_error(g, y, static.regression_tol).astype(g.dtype)


def model_output(static: train.Static, scalars: trainstate.RunScalars, f: jax.Array,
                 f0: jax.Array) -> jax.Array:
    """The output g that the loss sees: alpha f, or alpha (f - f0) with center_output
    (Chizat, Oyallon & Bach 2019's scaled and centered model). f, f0: (b,)."""
    return scalars.output_scale * (f - f0 if static.center_output else f)


def objective(static: train.Static, scalars: trainstate.RunScalars, net0: model.Net,
              delta: model.Net, trained, X, y, f0, *, measure: bool = False):
    """(objective, (g, pre, loss)) on a batch X: (b, d), y: (b,), f0: (b,) (f(0) there;
    (0,) without center_output): loss = the reduced loss of g = `model_output`, and the
    objective GD minimizes, loss / alpha^2 (Chizat et al. 2019). Its matmuls at the
    training precision, or the measurements' with measure (the sharpness's)."""
    net = trainstate.weights(net0, trainstate.with_trainable(static, delta, trained))
    with jax.named_scope(trainstate.MEASURING if measure else trainstate.TRAINING):
        f, pre = trainstate.network(static, measure=measure).apply(net, X)
    g = model_output(static, scalars, f, f0)
    loss = losses.reduce(losses.per_example(static.loss, g, y), reduction=static.reduction,
                         n=static.n)
    return loss / scalars.output_scale**2, (g, pre, loss)


def step_batch(static: train.Static, state: trainstate.State, X: jax.Array, y: jax.Array):
    """(X, y, f0) of the step from state.step: all of them for GD, for SGD the batch_size
    examples drawn from the network's batch key and the step (f0 likewise, if centered)."""
    f0 = state.f0
    if static.optimizer == "sgd":
        key = jax.random.fold_in(state.batch_key, state.step)
        idx = jax.random.permutation(key, static.n)[: static.batch_size]
        X, y = X[idx], y[idx]
        f0 = f0[idx] if static.center_output else f0
    return X, y, f0


def gradient(static: train.Static, scalars: trainstate.RunScalars, state: trainstate.State,
             X: jax.Array, y: jax.Array):
    """Objective, (g, pre, loss) and gradient on this step's batch (all of X for GD)."""
    X, y, f0 = step_batch(static, state, X, y)
    grad_fn = jax.value_and_grad(functools.partial(objective, static, scalars), argnums=2,
                                 has_aux=True)
    (value, aux), grads = grad_fn(state.net0, state.delta,
                                  trainstate.trainable(static, state.delta), X, y, f0)
    return value, aux, grads


def update(static: train.Static, scalars: trainstate.RunScalars, state: trainstate.State,
           loss, grads) -> trainstate.State:
    """One optimizer step; frozen from the first step whose loss or gradient is not finite.
    Under mup each layer's gradient is scaled by its step-size multiplier first (with
    momentum too, this is SGD with per-layer step sizes eta * mu_l)."""
    ok = jnp.isfinite(loss) & jnp.isfinite(metrics.global_norm(grads))
    trained = trainstate.trainable(static, state.delta)
    mus = trainstate.multipliers(static, state.delta)
    if mus is not None:
        grads = jax.tree_util.tree_map(lambda g, mu: g * mu, grads, mus)
    updates, opt_state = optimizer(static, scalars.lr).update(grads, state.opt_state, trained)
    new_delta = trainstate.with_trainable(static, state.delta,
                                          optax.apply_updates(trained, updates))
    active = state.alive & ok
    keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, old)
    died = state.alive & ~ok
    return state._replace(
        step=state.step + 1, delta=keep(new_delta, state.delta),
        opt_state=keep(opt_state, state.opt_state), alive=state.alive & ok,
        diverged_step=jnp.where(died, state.step, state.diverged_step))

