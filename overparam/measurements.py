"""The measurements of a network's weights at a record (at `static.measure_precision`).

Owns what a record measures besides the training loss: the radii of W_l - W_l(0)
by warm-started power iterations (`power_iterations`: early stop, or a fixed
count with fixed_loops), the convolutions' operator norms, row and Frobenius
norms, flipped patterns, margins (`measure`); the NTK Gram matrix and its
statistics (`gram`, `gram_stats`); the sharpness by Lanczos on Hessian-vector
products (`sharpness`); the loss and error on the held-out points
(`held_out_metrics`). `when` runs a measurement only on its records: a static
choice with fixed_loops, lax.cond otherwise.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from overparam import losses, metrics, model, optimize, train, trainstate


def power_iterations(static: train.Static) -> dict:
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


def held_out_output(static: train.Static, net: model.Net, X_test: jax.Array | None) -> jax.Array:
    """f on the test points (n_test,) ((0,) without them)."""
    if not static.n_test:
        return jnp.zeros((0,), jnp.dtype(static.dtype))
    if X_test is None:
        raise ValueError(f"the program has n_test={static.n_test} test points: pass X_test")
    with jax.named_scope(trainstate.TRAINING):
        return trainstate.network(static).apply(net, X_test)[0]


def held_out_metrics(static: train.Static, scalars: trainstate.RunScalars,
                     state: trainstate.State, X_test, y_test) -> dict:
    """test_loss and test_error of the current weights on the held-out points: the loss of
    the model's output with the sweep's reduction in the units of the training loss (a
    sum is rescaled to n points: (n / n_test) sum), and the error as train_error's; NaN
    without test points."""
    nan = jnp.full((), jnp.nan, state.init_spectral.dtype)
    if not static.n_test:
        return dict(test_loss=nan, test_error=nan)
    f = held_out_output(static, trainstate.weights(state.net0, state.delta), X_test)
    g = optimize.model_output(static, scalars, f, state.f0_test)
    loss = losses.reduce(losses.per_example(static.loss, g, y_test),
                         reduction=static.reduction, n=static.n)
    return dict(test_loss=loss, test_error=optimize.errors(static, g, y_test))


def gram(static: train.Static, net: model.Net, X: jax.Array) -> jax.Array:
    """The NTK Gram matrix (n, n) of the weights `net` on X: (n, d), at the measurements'
    precision."""
    with jax.named_scope(trainstate.MEASURING):
        return trainstate.network(static, measure=True).gram(net, X, static.train_output)


def when(flag, compute, otherwise):
    """compute() where flag, else otherwise(): flag a Python bool (a record's static
    position in the chunk says: no conditional in the program) or a traced bool
    (lax.cond: only the branch taken runs, also under vmap, since it is unbatched)."""
    if isinstance(flag, bool):
        return compute(None) if flag else otherwise(None)
    return jax.lax.cond(flag, compute, otherwise, None)


def gram_stats(static: train.Static, state: trainstate.State, X: jax.Array,
               is_gram_step, y: jax.Array | None = None) -> dict:
    """lambda_min(H(t)), lambda_max(H(t)), ||H(t) - H(0)||_2 and ||H(0)/s - H^inf||_2 on Gram
    steps, else NaN; with track_alignment also kernel_alignment, the centered alignment of
    H(t) with the targets y (metrics.kernel_alignment). is_gram_step: a Python or a traced
    bool (`when`)."""
    nan = jnp.full((), jnp.nan, state.init_spectral.dtype)
    names = ("gram_lambda_min", "gram_lambda_max", "gram_change", "gram_init_error")
    if static.track_alignment:
        names += ("kernel_alignment",)
    if not static.gram_every or is_gram_step is False:
        return dict.fromkeys(names, nan)

    def stats(_):
        H = gram(static, trainstate.weights(state.net0, state.delta), X)
        with jax.named_scope(trainstate.MEASURING):
            eigenvalues = jnp.linalg.eigvalsh(H)
            change = metrics.symmetric_norm(H - state.gram0)
            alignment = ((metrics.kernel_alignment(
                H, y, model.PRECISIONS[static.measure_precision]),)
                if static.track_alignment else ())
        return (eigenvalues[0], eigenvalues[-1], change, state.gram_init_error, *alignment)

    values = when(is_gram_step, stats, lambda _: (nan,) * len(names))
    return dict(zip(names, values))


def sharpness(static: train.Static, scalars: trainstate.RunScalars, state: trainstate.State,
              X, y, is_sharpness_step):
    """(sharpness, the next warm start): on sharpness steps the largest eigenvalue of the
    Hessian of the full-batch objective (the loss of alpha (f - f0) divided by alpha^2)
    with respect to the trained weights, by `metrics.lanczos_top` from state.sharp_v
    on forward-over-reverse Hessian-vector products (at the measurements' precision);
    NaN and sharp_v unchanged on the other steps. is_sharpness_step: a Python or a
    traced bool (`when`).

    Under mup, whose layers step by eta * mu_l, it is the Hessian in the coordinates
    that GD steps uniformly: M^1/2 Hess M^1/2, M = diag(mu) (for every other
    parameterization M = I): GD on a quadratic is stable iff eta < 2 / sharpness.
    """
    nan = jnp.full((), jnp.nan, state.init_spectral.dtype)
    if not static.sharpness_every or is_sharpness_step is False:
        return nan, state.sharp_v
    trained = trainstate.trainable(static, state.delta)
    mus = trainstate.multipliers(static, state.delta)
    root = lambda v: v if mus is None else jax.tree_util.tree_map(
        lambda leaf, mu: math.sqrt(mu) * leaf, v, mus)

    def objective(w):
        return optimize.objective(static, scalars, state.net0, state.delta, w, X, y,
                                  state.f0, measure=True)[0]

    def hvp(v):
        return root(jax.jvp(jax.grad(objective), (trained,), (root(v),))[1])

    def compute(_):
        with jax.named_scope(trainstate.MEASURING):
            return metrics.lanczos_top(hvp, state.sharp_v, iters=static.sharpness_iters,
                                       precision=model.PRECISIONS[static.measure_precision])

    return when(is_sharpness_step, compute, lambda _: (nan, state.sharp_v))


def measure(static: train.Static, state: trainstate.State, X, y, loss, f, pre, grads,
            is_gram_step):
    """Step and layer records of the current weights (but the test metrics and the
    sharpness), and the new power vectors (matrices' and convolutions'). f: the model's
    output g (`optimize.model_output`) on X; loss: its reduced loss."""
    precision = model.PRECISIONS[static.measure_precision]
    iterations = power_iterations(static)
    net = trainstate.network(static)
    matrices = [net.matrix(layer, D) for layer, D in enumerate(state.delta.hidden, start=1)]
    iterated = iterated_weights(static, state, grads)
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
    step_rec = dict(loss=loss, train_error=optimize.errors(static, f, y), min_margin=margin,
                    grad_norm=metrics.global_norm(grads),
                    radius_output=norm(state.delta.out),
                    **gram_stats(static, state, X, is_gram_step, y))
    layer_rec = dict(
        radius_spectral=jnp.stack(spectral),
        radius_frobenius=jnp.stack([metrics.frobenius_norm(D) for D in matrices]),
        radius_rowmax=jnp.stack([metrics.rowmax_norm(D) for D in matrices]),
        radius_operator=jnp.stack(operator),
        flip_frac=jnp.stack([metrics.flip_fraction(z, p).astype(f.dtype)
                             for z, p in zip(pre, state.pattern0)]),
        init_spectral=state.init_spectral)
    return step_rec, layer_rec, tuple(vs), tuple(conv_vs)


def iterated_weights(static: train.Static, state: trainstate.State, grads) -> tuple:
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


def norm(tree) -> jax.Array:
    """||x||_2 of a weight array (the output layer's), or of all of a tree's leaves."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.linalg.norm(leaves[0].ravel()) if len(leaves) == 1 else metrics.global_norm(tree)
