"""What a compiled program carries: a network's state, its scalars and keys, a batch's data.

Owns the pytrees of the programs' arguments and state (`RunScalars`, `Keys`,
`State`, `Data`), the derivation of a network's random keys from its identity
(`derive_keys`, `batch_keys`), the network of a `train.Static` (`network`) and
the split of its weights into the fixed initialization and the trained offset
(`trainable`, `with_trainable`, `weights`, `multipliers`). Pure functions and
types; the programs that use them are `overparam.chunks` and `overparam.initial`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from overparam import model, networks, train


class RunScalars(NamedTuple):
    """A run's scalars, one per network, vmapped (the shapes do not depend on them): its
    identity, seed, init_tag and batch_tag (uint32; its keys are derived from them,
    `derive_keys`), and its hyperparameters lr and output_scale (alpha: the model is
    alpha f, the loss divided by alpha^2). Was `train.Hyper`."""

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
    # docs/THEORY.md section 10 (overparam.lazy), each None unless its field asks for it:
    twin: Any = None          # lazy.Twin: the linearized twin (linear_twin)
    f_inf: Any = None         # (n,): f of the infinite-width trajectory (infinite_width)
    h0: Any = None            # per layer relu(z_l(0)), as the pre-activations (track_features)


class Data(NamedTuple):
    """The arrays a batch of networks trains and is measured on, one pytree for the init
    and chunk programs (`chunks.jit_program`) and `prepare.Prepared.batch_arrays`; with
    a leading networks axis (B) in a batch, without it for one network:

      X       (B, n, d)        training points
      y       (B, n)           their targets
      H_inf   (B, n, n)        H^inf of each training set (theory.gram_inf; H(0) / s tends to
                               it), for the Gram matrix's distance to it and the
                               infinite-width trajectory (overparam.lazy); None where the
                               program takes none (neither, or not the mlp)
      X_test  (B, n_test, d)   held-out points; None where static.n_test is 0
      y_test  (B, n_test)      their targets; likewise

    An absent array is None: a pytree node without leaves, so it adds no argument to a
    compiled program. A program's arguments are the present leaves in this order, of
    which it keeps those it reads (jax.jit prunes the others): init reads X, H_inf and
    X_test, the chunk X, y, X_test and y_test (H_inf comes before the test arrays so
    that init's parameters are (keys, X, H_inf, X_test), as before this type existed).
    """

    X: jax.Array
    y: jax.Array
    H_inf: jax.Array | None = None
    X_test: jax.Array | None = None
    y_test: jax.Array | None = None


# Named scopes of the matmuls at each precision: `precision` (training's) and
# `measure_precision` (tests/test_lowering.py finds every dot of a program in one of them).
TRAINING, MEASURING = "training", "measuring"


class Keys(NamedTuple):
    """A network's random keys, (2,) uint32 each: its initial hidden and output weights,
    the start of its spectral-norm iterations, its SGD batches."""

    hidden: jax.Array
    out: jax.Array
    power: jax.Array
    batch: jax.Array


def derive_keys(scalars: RunScalars) -> Keys:
    """The keys of one network from its identity (config.Run documents the derivation):
    init = fold_in(PRNGKey(seed), init_tag), split into the network's key and the
    power key, the network's key split into hidden and output keys as `model.init`
    does; batch = fold_in(PRNGKey(seed), batch_tag)."""
    base = jax.random.PRNGKey(scalars.seed)
    net_key, power_key = jax.random.split(jax.random.fold_in(base, scalars.init_tag))
    hidden_key, out_key = jax.random.split(net_key)
    return Keys(hidden_key, out_key, power_key, jax.random.fold_in(base, scalars.batch_tag))


KEY_BLOCK = 64  # keys are derived in blocks of this many networks: one compile per process
_derive_batch = jax.jit(jax.vmap(derive_keys))


def batch_keys(scalars: RunScalars) -> Keys:
    """derive_keys of every network of a batch (arrays with a networks axis), on the host.

    A separate small program, padded to a multiple of KEY_BLOCK so that it
    compiles once whatever the batch sizes: the init programs then hold no key
    derivation (each PRNG call costs its program about a dozen kernels to compile).
    """
    scalars = jax.tree_util.tree_map(np.asarray, scalars)
    size = len(scalars.seed)
    padded = -(-size // KEY_BLOCK) * KEY_BLOCK
    pad = lambda a: np.concatenate([a, np.repeat(a[-1:], padded - size, axis=0)])
    keys = _derive_batch(jax.tree_util.tree_map(pad, scalars))
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[:size], keys)


def network(static: train.Static, *, measure: bool = False):
    """The network of `static` (overparam.networks), its matmuls at the training precision
    (`static.precision`), or at the measurements' (`static.measure_precision`) with
    measure."""
    return networks.network_of(static.arch, static.param, static.width, static.depth,
                               static.d, static.dtype,
                               static.measure_precision if measure else static.precision)


def multipliers(static: train.Static, delta: model.Net):
    """Each trained leaf's step-size multiplier (the network's: 1 but under mup), as the
    trained tree's structure of Python floats; None where every one is 1."""
    hidden, out = network(static).multipliers()
    if all(mu == 1.0 for mu in (*hidden, out)):
        return None
    ones = jax.tree_util.tree_map(lambda _: 1.0, delta.other)
    if static.train_output:
        return model.Net(hidden, jax.tree_util.tree_map(lambda _: out, delta.out), ones)
    return hidden, ones


def trainable(static: train.Static, delta: model.Net):
    """The trained part of the weights: the measured layers and the other weights, and the
    output layer with train_output."""
    return delta if static.train_output else (delta.hidden, delta.other)


def with_trainable(static: train.Static, delta: model.Net, trained) -> model.Net:
    if static.train_output:
        return trained
    return delta._replace(hidden=trained[0], other=trained[1])


def weights(net0: model.Net, delta: model.Net) -> model.Net:
    return jax.tree_util.tree_map(jnp.add, net0, delta)

