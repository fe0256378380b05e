"""A user's own network for overparam: a ReLU MLP with biases, written with flax's nn.Dense.

    python -m overparam.sweep --config=sweeps/default.py \
        --config.arch=examples.modules:BiasMLP --config.param=standard \
        --config.lr=0.01 --out=results/bias_mlp

It follows the module protocol of overparam/networks.py:

  - fields width, depth and parameterization (overparam builds BiasMLP(width=m, depth=L,
    parameterization=p); only 'standard' is defined here, so the sweep's param is that);
  - __call__(x): x (n, d) -> f (n,);
  - the measured layers are the nn.Dense submodules layer_1 ... layer_L: their `kernel`
    (flax's (in, out) layout: overparam reads it as the (out, in) matrix whose rows are
    neurons); their `bias` is trained but not measured;
  - layer l's pre-activation z_l = x W_l + b_l is sown as z_l;
  - the output layer is the submodule `readout` (trained only with train_output);
  - no state but the params, no dropout, no batch statistics.
"""

import flax.linen as nn
import jax.numpy as jnp


class BiasMLP(nn.Module):
    """z_l = h_{l-1} W_l + b_l, h_l = relu(z_l); f = h_L a. He initialization (standard
    parameterization): W_l ~ N(0, 2 / fan_in), b_l = 0, a ~ N(0, 2 / width)."""

    width: int
    depth: int
    parameterization: str = "standard"

    def __post_init__(self):
        if self.parameterization != "standard":
            raise ValueError(f"BiasMLP has the standard parameterization only, not "
                             f"{self.parameterization!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        he = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
        h = x
        for layer in range(1, self.depth + 1):
            z = nn.Dense(self.width, kernel_init=he, name=f"layer_{layer}")(h)
            self.sow("preactivations", f"z_{layer}", z)
            h = nn.relu(z)
        return nn.Dense(1, use_bias=False, kernel_init=he, name="readout")(h)[:, 0]
