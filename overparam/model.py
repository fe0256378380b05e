"""Deep ReLU MLP without biases, as pure functions, in five parameterizations.

A network of depth L has hidden weights W_1 (m, d), W_2..W_L (m, m) (row r is
neuron r's incoming weights) and output weights a (m,). With h_0 = x,

    z_l = c_l W_l h_{l-1},   h_l = relu(z_l),   f(x) = c_out a . h_L.

The parameterization fixes the initial distribution of W_l and a and the
forward multipliers c_l, c_out:

  du        W_l ~ N(0, 1) entries, a_r uniform on {-1, +1};
            c_1 = 1, c_l = sqrt(2/m) for l >= 2, c_out = 1/sqrt(m).
            For L = 1 this is Du et al. 2018, eq. (1):
            f(x) = (1/sqrt(m)) sum_r a_r relu(w_r . x).
  zou       W_l ~ N(0, 2/m) entries, a = v with exactly m/2 entries +1 and
            m/2 entries -1 (in random order); all c = 1.
            Zou et al. 2018, eq. (3.1): f(x) = v^T relu(W_L^T ... relu(W_1^T x)).
  ntk       W_l, a ~ N(0, 1); c_l = sqrt(2/fan_in), c_out = sqrt(2/m)
            (NTK parameterization, sigma_w = sqrt(2); Jacot et al. 2018).
  standard  W_l ~ N(0, 2/fan_in), a ~ N(0, 2/m) (He init); all c = 1.
  mup       W_l ~ N(0, 2/fan_in), a ~ N(0, 1/m^2); all c = 1; per-layer step
            sizes eta * mu_l with mu_1 = m (the input layer: eta * fan_out),
            mu_l = 1 for l >= 2, mu_out = 1/m (`lr_multipliers`).
            The maximal-update parameterization for SGD (Yang & Hu 2021,
            "Feature Learning in Infinite-Width Neural Networks", Table 3;
            Yang et al. 2022, "Tensor Programs V", Table 3): init variance
            1/fan_in for every layer but the output's, 1/fan_in^2; step size
            eta fan_out for the input layer, eta for hidden layers, eta / fan_in
            for the output layer. The factor 2 is the ReLU gain (He), which
            keeps activations O(1) through depth; muP fixes only the powers of
            the width, so constants are free. Equivalently (Yang, Simon &
            Bernstein 2023, "A Spectral Condition for Feature Learning"),
            ||W_l||_2 and the update ||Delta W_l||_2 are both of order
            sqrt(fan_out / fan_in): every layer's features move by O(1) as
            m grows (docs/THEORY.md section 6).

The trained parameters are W_l (and a with train_output). The engine trains
the offset from initialization, W_l = W_l(0) + D_l, so that the radius
||D_l|| is resolved without cancellation in float32. Every parameterization
but mup takes the same step size eta on every layer (multipliers 1).

`conv_same`, at the end, is the 'SAME' convolution of overparam/modules.py's networks and of
metrics.conv_operator_norm, written as a matmul (why: its docstring).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from overparam import config

# config's `precision` values (config.PRECISIONS: XLA's names in lower case) as XLA's matmul
# precisions (every module that multiplies)
PRECISIONS = {name: jax.lax.Precision[name.upper()] for name in config.PRECISIONS}


class Net(NamedTuple):
    """hidden: (W_1 (m, d), W_2 (m, m), ..., W_L (m, m)); out: a (m,); other: any other
    trained weights (none here; a flax module's biases, say: overparam/networks.py)."""

    hidden: tuple[jax.Array, ...]
    out: Any
    other: Any = ()


def forward_scales(param: str, *, d: int, width: int, depth: int) -> tuple[tuple[float, ...],
                                                                            float]:
    """(c_1, ..., c_L), c_out: the forward multipliers of the module docstring."""
    fan_ins = (d,) + (width,) * (depth - 1)
    if param == "du":
        return (1.0,) + (math.sqrt(2.0 / width),) * (depth - 1), 1.0 / math.sqrt(width)
    if param == "ntk":
        return tuple(math.sqrt(2.0 / f) for f in fan_ins), math.sqrt(2.0 / width)
    if param in ("zou", "standard", "mup"):
        return (1.0,) * depth, 1.0
    raise ValueError(f"unknown param {param!r}")


def lr_multipliers(param: str, *, width: int, depth: int) -> tuple[tuple[float, ...], float]:
    """(mu_1, ..., mu_L), mu_out: layer l trains with step size eta * mu_l (module
    docstring). mup: (m, 1, ..., 1), 1/m; every other parameterization: all 1."""
    if param == "mup":
        return (float(width),) + (1.0,) * (depth - 1), 1.0 / width
    return (1.0,) * depth, 1.0


def _init_std(param: str, fan_in: int, width: int) -> float:
    return {"du": 1.0, "ntk": 1.0, "zou": math.sqrt(2.0 / width),
            "standard": math.sqrt(2.0 / fan_in), "mup": math.sqrt(2.0 / fan_in)}[param]


def init(key: jax.Array, *, d: int, width: int, depth: int, param: str,
         dtype=jnp.float32) -> Net:
    """Draws a network at initialization; see the module docstring for the laws."""
    hidden_key, out_key = jax.random.split(key)
    return init_from_keys(hidden_key, out_key, d=d, width=width, depth=depth, param=param,
                          dtype=dtype)


def init_from_keys(hidden_key: jax.Array, out_key: jax.Array, *, d: int, width: int,
                   depth: int, param: str, dtype=jnp.float32) -> Net:
    """`init` from the two keys it splits its key into (hidden weights, output weights)."""
    fan_ins = (d,) + (width,) * (depth - 1)
    # One draw for all hidden layers: fewer PRNG calls compile much faster on CPU.
    z = jax.random.normal(hidden_key, (width * sum(fan_ins),), dtype)
    ends = np.cumsum([width * f for f in fan_ins])
    hidden = tuple(_init_std(param, f, width) * piece.reshape(width, f)
                   for piece, f in zip(jnp.split(z, ends[:-1]), fan_ins))
    if param == "du":
        out = jax.random.rademacher(out_key, (width,), dtype)
    elif param == "zou":
        half = jnp.concatenate([jnp.ones(width // 2, dtype), -jnp.ones(width // 2, dtype)])
        out = jax.random.permutation(out_key, half)
    else:
        std = 1.0 / width if param == "mup" else _init_std(param, width, width)
        out = std * jax.random.normal(out_key, (width,), dtype)
    return Net(hidden, out)


def apply(net: Net, X: jax.Array, *, param: str, precision=jax.lax.Precision.HIGHEST,
          taps: tuple[jax.Array, ...] | None = None
          ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Forward pass on a batch.

    X: (n, d). Returns f: (n,) and the pre-activations (z_1, ..., z_L), each
    (m, n): neuron by example, the transpose of the (n, m) of `X @ W.T`.
    Computed so, as z_l = c_l W_l h_{l-1} with h_0 = X^T, the weight gradient
    of backpropagation, G_l h_{l-1}^T, has W_l's own (m, fan_in) layout; under
    vmap XLA:CPU runs a training step 2-2.5x faster than with (n, m)
    activations, whose weight gradient it computes in a slow transposed layout
    (BENCHMARKS.md, "Layout").
    taps: optional (m, n) arrays added to the pre-activations (zeros give the
    same f; the gradient with respect to them is df/dz_l).
    """
    width, depth = net.out.shape[0], len(net.hidden)
    scales, out_scale = forward_scales(param, d=X.shape[-1], width=width, depth=depth)
    h, pre = X.T, []
    for layer, (W, c) in enumerate(zip(net.hidden, scales)):
        z = c * jnp.matmul(W, h, precision=precision)
        if taps is not None:
            z = z + taps[layer]
        pre.append(z)
        h = jax.nn.relu(z)
    f = out_scale * jnp.matmul(net.out, h, precision=precision)
    return f, tuple(pre)


def conv_same(h: jax.Array, kernel: jax.Array, *,
              precision=jax.lax.Precision.HIGHEST) -> jax.Array:
    """The convolution of overparam's convolutional networks (overparam/modules.py) and of
    metrics.conv_operator_norm: lax.conv_general_dilated(h, kernel, (1, 1), 'SAME') in the
    NHWC / HWIO layout (a cross-correlation, stride 1, zero padding (k - 1) // 2 before and
    k // 2 after), computed as one matmul of h's kh kw patches, (n, s1, s2, kh kw c_in),
    with the kernel as a (kh kw c_in, c_out) matrix.

    Why not the convolution itself: XLA:CPU runs a convolution inside a loop, as every
    step of a compiled chunk is, some 40 times slower than the same convolution outside it
    (jax-ml/jax#12868; 198 ms against 5 ms for a 64-channel 3x3 training step of 3
    networks, BENCHMARKS.md "Architectures"), while a matmul runs at GEMM speed in both,
    and vmapped over networks it is one batched GEMM. h: (n, s1, s2, c_in); kernel:
    (kh, kw, c_in, c_out) -> (n, s1, s2, c_out).
    """
    kh, kw = kernel.shape[:2]
    s1, s2 = h.shape[1:3]
    hp = jnp.pad(h, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    patches = jnp.concatenate([hp[:, i:i + s1, j:j + s2, :]
                               for i in range(kh) for j in range(kw)], axis=-1)
    return jnp.matmul(patches, kernel.reshape(-1, kernel.shape[-1]), precision=precision)
