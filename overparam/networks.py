"""The network a run trains, behind the one interface the training program uses.

A network's weights are a `model.Net`: `hidden`, the measured layers' weights W_1..W_L
(as the network stores them), `out`, the output layer's (trained only with train_output),
and `other`, every other trained weight (biases, say: trained, not measured). `network_of`
gives the `Network` of an arch:

  mlp              overparam's hand-written ReLU MLP (overparam/model.py): `MLPNetwork`
  cnn, resnet      overparam/modules.py's flax modules CNN and ResNet: `FlaxNetwork`
  'pkg.mod:Class'  a user's flax module (imported from pkg.mod) under the protocol below

The flax module protocol (overparam.modules.CNN, ResNet and MLP follow it; an example is
examples/modules.py):

  - fields `width`, `depth` and `parameterization`: the engine builds Class(width=m,
    depth=L, parameterization=p) for every grid point of the sweep's widths, depths and
    param (not `param`, the name of flax's own method); and `precision` if it has one;
  - `__call__(self, x)`: x (n, d), one flattened input per row -> f (n,);
  - measured layers: L parameter scopes `layer_1` ... `layer_L` (submodules of these
    names), each with its weight as a parameter `kernel` (flax's layout: the last axis is
    the output units, as nn.Dense's (in, out) and nn.Conv's (kh, kw, in, out)) or `weight`
    (the first axis is: overparam's and PyTorch's layout);
  - layer l's pre-activation sown as `self.sow("preactivations", f"z_{l}", z)`, any shape:
    every entry is one (example, position, unit) pattern whose flips are counted;
  - the output layer: the parameters `readout` (a submodule or a parameter of that name),
    trained only with train_output; every other parameter is trained;
  - no state besides `params` and the sown pre-activations: no batch statistics, caches
    or other collections (`self.variable`, another `self.sow`), no dropout and no random
    numbers at apply time (`self.make_rng`): the engine calls `apply` with only the
    params, and vmaps it. `check_modules` refuses a module that has any of these in one
    line naming config.arch, from an abstract init and apply (jax.eval_shape) of each
    grid point, before anything is compiled;
  - optional: `lr_multipliers(self) -> ((mu_1, ..., mu_L), mu_out)`, per-layer step-size
    multipliers (mup); `init_params(self, hidden_key, out_key, x) -> params` to draw the
    weights itself (otherwise `init({'params': hidden_key}, x)` draws them).

The measured layer's weight as a matrix (`Network.matrix`) has its output units as rows:
(out, in) of a dense layer, (c_out, kh kw c_in) of a convolution; radius_spectral,
_frobenius and _rowmax are of that matrix (a row: one unit's incoming weights). A 4-axis
`kernel` is taken as a stride-1, 'SAME'-padded convolution on the spatial size of its
pre-activation, of which `radius_operator` is the operator norm (as overparam's cnn and
resnet; for another stride or padding it is not that layer's). The NTK Gram matrix of a
flax module is formed from its Jacobian J (rows: the examples' gradients, each from the
example alone), as the sum over trained parameters of mu J_theta J_theta^T, mu their
step-size multipliers.

Owns the translation between a network's own weights and `model.Net`; never trains,
records or writes.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import itertools
import re

import flax.errors
import jax
import jax.numpy as jnp

from overparam import config as config_lib
from overparam import metrics, model

BUILTIN = {"cnn": "overparam.modules:CNN", "resnet": "overparam.modules:ResNet"}
SHIPPED_MODULE = "overparam.modules"  # overparam's own flax modules: CNN, ResNet, the MLP twin


def shipped(arch: str) -> bool:
    """Whether `arch` is a network overparam ships (mlp, cnn, resnet or a class of
    overparam.modules): building it imports only overparam's own code. Readers of a
    results directory import any other arch only when their caller names it
    (`store.Results.initial_net`)."""
    return isinstance(arch, str) and (arch == "mlp" or arch in BUILTIN
                                      or arch.partition(":")[0] == SHIPPED_MODULE)


class MLPNetwork:
    """overparam's hand-written MLP (model.py)."""

    is_conv = False

    def __init__(self, param: str, width: int, depth: int, d: int, dtype, precision: str):
        self.param, self.width, self.depth, self.d = param, width, depth, d
        self.dtype, self.precision = jnp.dtype(dtype), model.PRECISIONS[precision]

    def init(self, hidden_key: jax.Array, out_key: jax.Array, X: jax.Array) -> model.Net:
        return model.init_from_keys(hidden_key, out_key, d=self.d, width=self.width,
                                    depth=self.depth, param=self.param, dtype=self.dtype)

    def apply(self, net: model.Net, X: jax.Array):
        """f (n,) and the pre-activations (z_1, ..., z_L), each (m, n)."""
        return model.apply(net, X, param=self.param, precision=self.precision)

    def matrix(self, layer: int, W: jax.Array) -> jax.Array:
        return W  # (m, fan_in) already: rows are neurons

    def multipliers(self) -> tuple[tuple[float, ...], float]:
        return model.lr_multipliers(self.param, width=self.width, depth=self.depth)

    def gram(self, net: model.Net, X: jax.Array, train_output: bool) -> jax.Array:
        return metrics.ntk_gram(net, X, param=self.param, train_output=train_output,
                                precision=self.precision)

    def conv_shape(self, layer: int) -> None:
        return None


@dataclasses.dataclass(frozen=True)
class _Layout:
    """What the engine learnt of a flax module from its first call: each measured layer's
    weight name ('kernel' or 'weight'), and each convolution's input (s, s, c_in)."""

    names: tuple[str, ...]
    conv_inputs: tuple[tuple[int, int, int] | None, ...]


class FlaxNetwork:
    """A flax module under the protocol of the module docstring."""

    def __init__(self, module, d: int, dtype, depth: int, precision: str = "highest"):
        self.module, self.d, self.depth = module, d, depth
        self.dtype, self.precision = jnp.dtype(dtype), model.PRECISIONS[precision]
        self.layout = _check(module, d, self.dtype, depth)
        self.is_conv = any(c is not None for c in self.layout.conv_inputs)

    # --------------------------------------------------------------- weights <-> Net

    def _split(self, params: dict) -> model.Net:
        params = dict(params)
        hidden, other = [], {}
        for layer, name in enumerate(self.layout.names, start=1):
            scope = dict(params.pop(f"layer_{layer}"))
            hidden.append(scope.pop(name))
            other[f"layer_{layer}"] = scope
        out = params.pop("readout")
        other.update(params)
        return model.Net(tuple(hidden), out, other)

    def _join(self, net: model.Net) -> dict:
        params = {k: dict(v) if isinstance(v, dict) else v for k, v in net.other.items()}
        for layer, (name, W) in enumerate(zip(self.layout.names, net.hidden), start=1):
            params[f"layer_{layer}"] = {**params[f"layer_{layer}"], name: W}
        return {**params, "readout": net.out}

    # --------------------------------------------------------------- the interface

    def init(self, hidden_key: jax.Array, out_key: jax.Array, X: jax.Array) -> model.Net:
        if hasattr(self.module, "init_params"):
            params = self.module.init_params(hidden_key, out_key, X)
        else:
            params = self.module.init({"params": hidden_key}, X)["params"]
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, self.dtype), params)
        return self._split(params)

    def apply(self, net: model.Net, X: jax.Array):
        """f (n,) and the sown pre-activations (z_1, ..., z_L)."""
        f, state = self.module.apply({"params": self._join(net)}, X,
                                     mutable=["preactivations"])
        sown = state["preactivations"]
        return f, tuple(sown[f"z_{layer}"][-1] for layer in range(1, self.depth + 1))

    def matrix(self, layer: int, W: jax.Array) -> jax.Array:
        if self.layout.names[layer - 1] == "weight":
            return W.reshape(W.shape[0], -1)
        return jnp.moveaxis(W, -1, 0).reshape(W.shape[-1], -1)

    def multipliers(self) -> tuple[tuple[float, ...], float]:
        if hasattr(self.module, "lr_multipliers"):
            hidden, out = self.module.lr_multipliers()
            return tuple(float(m) for m in hidden), float(out)
        return (1.0,) * self.depth, 1.0

    def gram(self, net: model.Net, X: jax.Array, train_output: bool) -> jax.Array:
        """H = sum over trained parameters theta of mu_theta J_theta J_theta^T, J_theta the
        Jacobian of f on X (n, theta's size): exact, n x |theta| memory. Its rows are the
        examples' gradients, each from the example alone (vmapped over the n examples): the
        protocol makes f(x_i) depend on x_i only, so this is one batch's backward pass of
        work, where jax.jacrev of the batch's n outputs would be n of them. J J^T at the
        network's precision (the module's own matmuls at its `precision` field, if it
        has one)."""
        hidden_mu, out_mu = self.multipliers()
        trained = (net.hidden, net.out, net.other) if train_output else (net.hidden, net.other)
        mus = ((hidden_mu, out_mu, 1.0) if train_output else (hidden_mu, 1.0))

        def f(trained, x):  # one example's output
            full = (model.Net(*trained) if train_output
                    else model.Net(trained[0], net.out, trained[1]))
            return self.apply(full, x[None])[0][0]

        jac = jax.vmap(jax.grad(f), in_axes=(None, 0))(trained, X)
        n = X.shape[0]
        H = jnp.zeros((n, n), X.dtype)
        for part, mu in zip(jac, mus):
            leaves = jax.tree_util.tree_leaves(part)
            part_mu = mu if isinstance(mu, tuple) else (mu,) * len(leaves)
            for J, m in zip(leaves, part_mu):
                J = J.reshape(n, -1)
                H = H + m * jnp.matmul(J, J.T, precision=self.precision)
        return H

    def conv_shape(self, layer: int):
        """(s, s, c_in) of a convolution's input, None for a dense layer."""
        return self.layout.conv_inputs[layer - 1]


def _protocol_error(module, what: str) -> config_lib.ConfigError:
    name = f"{type(module).__module__}:{type(module).__qualname__}"
    return config_lib.ConfigError("arch", f"{name} does not follow overparam's module protocol "
                                  f"(overparam/networks.py): {what}")


_OWN_COLLECTIONS = ("params", "preactivations")  # the only variables a module may have


def _check_state(module, collections, when: str) -> None:
    """ConfigError('arch') if `collections` (the variables' names after init or apply)
    hold anything but params and the sown pre-activations."""
    extra = sorted(set(collections) - set(_OWN_COLLECTIONS))
    if extra:
        raise _protocol_error(module, f"it keeps state {extra[0]!r} besides params ({when}; "
                              "no batch statistics, caches or other mutable collections: the "
                              "engine applies it with its params only)")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _check(module, d: int, dtype, depth: int) -> _Layout:
    """The module's layout, from an abstract init and apply (jax.eval_shape: nothing is
    compiled); ConfigError('arch') where it does not follow the protocol, keeps state or
    draws random numbers when applied."""
    X = jax.ShapeDtypeStruct((2, d), dtype)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    try:
        variables = jax.eval_shape(lambda k, x: module.init({"params": k}, x), key, X)
    except config_lib.ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a user's module raises anything
        raise _protocol_error(module, f"init fails ({_first_line(e)})") from None
    _check_state(module, variables, "after init")
    params, sown = variables["params"], variables.get("preactivations", {})
    names, conv_inputs = [], []
    for layer in range(1, depth + 1):
        scope = params.get(f"layer_{layer}")
        if not isinstance(scope, dict):
            raise _protocol_error(module, f"no measured layer 'layer_{layer}' (depth={depth})")
        found = [n for n in ("kernel", "weight") if n in scope]
        if len(found) != 1:
            raise _protocol_error(module, f"'layer_{layer}' has no parameter 'kernel' or "
                                  "'weight'")
        if f"z_{layer}" not in sown:
            raise _protocol_error(module, f"layer {layer}'s pre-activation is not sown as "
                                  f"self.sow('preactivations', 'z_{layer}', z)")
        W, z = scope[found[0]], sown[f"z_{layer}"][-1]
        names.append(found[0])
        conv = found[0] == "kernel" and len(W.shape) == 4
        conv_inputs.append((z.shape[1], z.shape[2], W.shape[2]) if conv else None)
    if f"layer_{depth + 1}" in params:
        raise _protocol_error(module, f"it has a layer_{depth + 1}: its depth is not "
                              f"depth={depth}")
    if "readout" not in params:
        raise _protocol_error(module, "no output layer 'readout'")
    # As the engine applies it (the params only, no rngs), every collection mutable: a
    # random draw fails, and any state it writes shows.
    try:
        out, state = jax.eval_shape(
            lambda v, x: module.apply({"params": v}, x, mutable=True), params, X)
    except flax.errors.InvalidRngError as e:
        rng = re.search(r'needs PRNG for "([^"]*)"', str(e))
        name = repr(rng.group(1)) if rng else "other than params"
        raise _protocol_error(module, f"it draws random numbers when applied (rng {name}: "
                              "dropout, noise, any self.make_rng); the engine applies it "
                              "with its params only, so it must be deterministic") from None
    except Exception as e:  # noqa: BLE001 - a user's module raises anything
        raise _protocol_error(module, f"apply fails ({_first_line(e)})") from None
    _check_state(module, state, "when applied")
    if out.shape != (2,):
        raise _protocol_error(module, f"it returns shape {out.shape} for 2 inputs, not (2,)")
    return _Layout(tuple(names), tuple(conv_inputs))


def check_modules(sweep: config_lib.Sweep) -> None:
    """Builds the network of every flax arch of `sweep` at each of its (param, width,
    depth), abstractly (`_check`: nothing is compiled): ConfigError('arch') for the first
    module that does not follow the protocol. The networks are cached for training."""
    with jax.enable_x64(sweep.dtype == "float64"):
        for arch, param, width, depth in itertools.product(
                sweep.arch, sweep.param, sweep.widths, sweep.depths):
            if arch != "mlp":
                network_of(arch, param, width, depth, sweep.d, sweep.dtype, sweep.precision)


def module_class(spec: str):
    """The flax module class named by an arch ('cnn', 'resnet' or 'pkg.mod:Class')."""
    spec = BUILTIN.get(spec, spec)
    path, _, name = spec.partition(":")
    module = importlib.import_module(path)
    return getattr(module, name)


@functools.cache
def network_of(arch: str, param: str, width: int, depth: int, d: int, dtype: str,
               precision: str):
    """The Network of a run's arch and grid point (one per shape, cached)."""
    if arch == "mlp":
        return MLPNetwork(param, width, depth, d, dtype, precision)
    cls = module_class(arch)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = dict(width=width, depth=depth, parameterization=param)
    if "precision" in fields:
        kwargs["precision"] = precision
    try:
        module = cls(**kwargs)
    except (TypeError, ValueError) as e:
        call = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise config_lib.ConfigError("arch", f"{arch}({call}) fails: {e}") from None
    return FlaxNetwork(module, d, dtype, depth, precision)


