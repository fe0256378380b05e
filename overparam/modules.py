"""overparam's flax modules: convolutional and residual ReLU networks, and a flax twin of the
hand-written MLP, each following the module protocol of `overparam.networks`.

All three are bias-free ReLU networks f(x) = c_out a . pool(h_L) whose measured layers are
`layer_1` ... `layer_L` (z_l = c_l W_l * h_{l-1}, sown as `z_l`) and whose output layer is
`readout`. The parameterization fixes the initial laws and the forward multipliers, as in
overparam/model.py, with fan_in the number of inputs of one output unit (kh kw c_in for a
3x3 convolution):

  ntk       W_l, a ~ N(0, 1); c_l = sqrt(2 / fan_in), c_out = sqrt(2 / m)
            (the NTK parameterization, sigma_w = sqrt(2); Jacot et al. 2018)
  standard  W_l ~ N(0, 2 / fan_in), a ~ N(0, 2 / m) (He init); all c = 1
  mup       W_l ~ N(0, 2 / fan_in), a ~ N(0, 1 / m^2); all c = 1; step sizes eta m for
            layer 1, eta for layers 2..L, eta / m for the output layer (`lr_multipliers`;
            Yang & Hu 2021, Table 3, with the channels as the width)

(m = `width`: the channels of a convolution.) du and zou are MLP parameterizations only.

  CNN     L 3x3 convolutions (stride 1, 'SAME' padding) of `width` channels on the
          image x reshaped to (s, s, 1), s = sqrt(d); h_l = relu(z_l); global average
          pooling over positions; a linear readout.
  ResNet  the convolutional ResNet of Du, Lee, Li, Wang & Zhai 2019 ("Gradient Descent
          Finds Global Minima of Deep Neural Networks"): h_1 = relu(z_1), then residual
          blocks h_l = h_{l-1} + (1 / L) relu(z_l) for l = 2..L, each branch one 3x3
          convolution; global average pooling; a linear readout. The branch scaling 1/L
          is their c_res / H with c_res = 1 (their 1/sqrt(m) is the parameterization's
          c_l): with it the residual branches together move h_L by O(1) whatever L.
  MLP     model.py's network written as a module: the same laws, multipliers, layout
          (W_l as (m, fan_in), activations (m, n)) and draws (`init_params`), so that
          it trains to the same tables as param mlp, bit for bit (tests/test_networks.py).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from overparam import model
from overparam.config import CONV_PARAMS


def _law(param: str, fan_in: int) -> tuple[float, float]:
    """(standard deviation at init, forward multiplier) of a hidden layer."""
    if param == "ntk":
        return 1.0, math.sqrt(2.0 / fan_in)
    if param in ("standard", "mup"):
        return math.sqrt(2.0 / fan_in), 1.0
    raise ValueError(f"param {param!r} is defined for the MLP only; allowed here: "
                     f"{', '.join(CONV_PARAMS)}")


def _readout_law(param: str, width: int) -> tuple[float, float]:
    """(standard deviation at init, multiplier) of the output layer."""
    if param == "ntk":
        return 1.0, math.sqrt(2.0 / width)
    if param == "standard":
        return math.sqrt(2.0 / width), 1.0
    if param == "mup":
        return 1.0 / width, 1.0
    raise ValueError(f"param {param!r} is defined for the MLP only")


def _mup_multipliers(param: str, width: int, depth: int) -> tuple[tuple[float, ...], float]:
    if param == "mup":
        return (float(width),) + (1.0,) * (depth - 1), 1.0 / width
    return (1.0,) * depth, 1.0


class Conv(nn.Module):
    """z = c conv(h, W): a bias-free 3x3 convolution, stride 1, 'SAME' padding, whose
    kernel W (3, 3, c_in, features) is drawn from N(0, std^2) (flax's layout)."""

    features: int
    std: float
    multiplier: float
    precision: str = "highest"

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """h: (n, s, s, c_in) -> (n, s, s, features)."""
        kernel = self.param("kernel", nn.initializers.normal(self.std),
                            (3, 3, h.shape[-1], self.features), h.dtype)
        z = model.conv_same(h, kernel, precision=model.PRECISIONS[self.precision])
        return self.multiplier * z


class Readout(nn.Module):
    """f = c a . h: the output layer, a (width,) ~ N(0, std^2) (param `weight`)."""

    std: float
    multiplier: float
    precision: str = "highest"

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """h: (n, width) -> (n,)."""
        a = self.param("weight", nn.initializers.normal(self.std), (h.shape[-1],), h.dtype)
        return self.multiplier * jnp.matmul(h, a, precision=model.PRECISIONS[self.precision])


def _image(x: jax.Array) -> jax.Array:
    """(n, d) -> (n, s, s, 1), s = sqrt(d)."""
    side = math.isqrt(x.shape[-1])
    if side * side != x.shape[-1]:
        raise ValueError(f"a convolutional network needs square images: d={x.shape[-1]} is "
                         "not a square")
    return x.reshape(x.shape[0], side, side, 1)


class _ConvNet(nn.Module):
    """The CNN and ResNet's shared layers; `residual` selects Du et al.'s blocks."""

    width: int
    depth: int
    parameterization: str = "ntk"
    precision: str = "highest"
    residual: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _image(x)
        for layer in range(1, self.depth + 1):
            std, c = _law(self.parameterization, 9 * h.shape[-1])
            z = Conv(self.width, std, c, self.precision, name=f"layer_{layer}")(h)
            self.sow("preactivations", f"z_{layer}", z)
            branch = nn.relu(z)
            h = h + branch / self.depth if self.residual and layer > 1 else branch
        std, c = _readout_law(self.parameterization, self.width)
        return Readout(std, c, self.precision, name="readout")(jnp.mean(h, axis=(1, 2)))

    def lr_multipliers(self) -> tuple[tuple[float, ...], float]:
        return _mup_multipliers(self.parameterization, self.width, self.depth)


class CNN(_ConvNet):
    """L 3x3 ReLU convolutions of `width` channels, global average pooling, a linear
    readout (module docstring). x: (n, d), d a square; returns f (n,)."""


class ResNet(_ConvNet):
    """Du et al. 2019's convolutional ResNet: a 3x3 convolution, then L - 1 residual blocks
    h + relu(conv(h)) / L, global average pooling, a linear readout (module docstring)."""

    residual: bool = True


class _Linear(nn.Module):
    """z = c W h with W (features, fan_in) (param `weight`: rows are neurons) and h (fan_in,
    n): model.py's layout, whose weight gradient XLA:CPU computes fastest."""

    features: int
    multiplier: float
    precision: str = "highest"

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        W = self.param("weight", nn.initializers.zeros, (self.features, h.shape[0]), h.dtype)
        return self.multiplier * jnp.matmul(W, h, precision=model.PRECISIONS[self.precision])


class MLP(nn.Module):
    """model.py's deep ReLU MLP as a flax module: the same parameterizations (all five),
    layout and computation. Its weights are drawn by `init_params` exactly as
    model.init_from_keys draws them; `init`'s own draw (zeros) is never used to train."""

    width: int
    depth: int
    parameterization: str = "du"
    precision: str = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scales, c_out = model.forward_scales(self.parameterization, d=x.shape[-1],
                                             width=self.width, depth=self.depth)
        h = x.T
        for layer, c in enumerate(scales, start=1):
            z = _Linear(self.width, c, self.precision, name=f"layer_{layer}")(h)
            self.sow("preactivations", f"z_{layer}", z)
            h = nn.relu(z)
        a = self.param("readout", nn.initializers.zeros, (self.width,), x.dtype)
        return c_out * jnp.matmul(a, h, precision=model.PRECISIONS[self.precision])

    def init_params(self, hidden_key: jax.Array, out_key: jax.Array, x: jax.Array) -> dict:
        """The weights model.init_from_keys draws from these keys, as this module's params."""
        net = model.init_from_keys(hidden_key, out_key, d=x.shape[-1], width=self.width,
                                   depth=self.depth, param=self.parameterization, dtype=x.dtype)
        params = {f"layer_{layer}": {"weight": W} for layer, W in enumerate(net.hidden, 1)}
        return {**params, "readout": net.out}

    def lr_multipliers(self) -> tuple[tuple[float, ...], float]:
        return model.lr_multipliers(self.parameterization, width=self.width, depth=self.depth)
