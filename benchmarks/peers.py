"""The hand-written peers that benchmarks/bench.py times against overparam.

    python benchmarks/peers.py METHOD INPUTS.npz OUTPUT.json

Every peer trains a stack of du networks of one width (W0 (S, m, d), a (S, m),
X (S, n, d), y (S, n)) by full-batch GD on the squared loss for `steps` steps
and computes every metric of every network at every step (METRICS, as
overparam records them); it returns them as an (S, steps + 1, len(METRICS))
array. Top-level imports are numpy only, so that run as a script (one process
per method) the peak RSS is that of the method's own framework.

  jax-seq     one network at a time: a jitted GD step, then every metric pulled
              to the host with float() every step, spectral norm by
              jnp.linalg.norm(D, 2)
  torch-seq   the same in PyTorch, eager
  torch-func  all networks of the width at once: torch.func.vmap of
              grad_and_value over functional_call on the stacked module state
              (torch.func.stack_module_state); the metrics are batched tensor
              ops (spectral norm by the batched torch.linalg.matrix_norm(D, 2))
              and leave as one (S, 7) array per step
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

# The torch peers run on this device (benchmarks/gpu_check.py sets "cuda"), in full
# float32 (no TF32), as overparam's 'highest' precision does.
TORCH_DEVICE = os.environ.get("OVERPARAM_TORCH_DEVICE", "cpu")

METRICS = ("loss", "train_error", "grad_norm", "radius_spectral", "radius_frobenius",
           "radius_rowmax", "flip_frac")


def jax_sequential(W0, a, X, y, steps, lr, tol=1e-2) -> np.ndarray:
    """One network, metrics pulled every step: (steps + 1, len(METRICS))."""
    import jax
    import jax.numpy as jnp

    m = W0.shape[0]
    hp = jax.lax.Precision.HIGHEST

    def loss_fn(W):
        z = jnp.matmul(X, W.T, precision=hp)
        f = jnp.matmul(jax.nn.relu(z), a, precision=hp) / jnp.sqrt(m)
        return 0.5 * jnp.sum((f - y) ** 2), (f, z)

    @jax.jit
    def step(W):
        (loss, (f, z)), g = jax.value_and_grad(loss_fn, has_aux=True)(W)
        return W - lr * g, loss, f, z, g

    W0, a, X, y = map(jnp.asarray, (W0, a, X, y))
    pattern0 = jnp.matmul(X, W0.T, precision=hp) > 0
    W, rows = W0, []
    for _ in range(steps + 1):
        W_next, loss, f, z, g = step(W)
        D = W - W0
        rows.append((float(loss),
                     float(jnp.mean(jnp.abs(f - y) > tol)),
                     float(jnp.linalg.norm(g)),
                     float(jnp.linalg.norm(D, 2)),
                     float(jnp.linalg.norm(D)),
                     float(jnp.max(jnp.linalg.norm(D, axis=1))),
                     float(jnp.mean((z > 0) != pattern0))))
        W = W_next
    return np.array(rows)


def torch_sequential(W0, a, X, y, steps, lr, tol=1e-2) -> np.ndarray:
    """The same as jax_sequential in eager PyTorch."""
    import torch

    torch.set_float32_matmul_precision("highest")
    m = W0.shape[0]
    W0, a, X, y = (torch.tensor(v, dtype=torch.float32, device=TORCH_DEVICE)
                   for v in (W0, a, X, y))
    W = W0.clone().requires_grad_(True)
    pattern0 = (X @ W0.T) > 0
    rows = []
    for _ in range(steps + 1):
        z = X @ W.T
        f = torch.relu(z) @ a / m**0.5
        loss = 0.5 * torch.sum((f - y) ** 2)
        (g,) = torch.autograd.grad(loss, W)
        with torch.no_grad():
            D = W - W0
            rows.append((float(loss),
                         float(torch.mean(((f - y).abs() > tol).float())),
                         float(torch.linalg.norm(g)),
                         float(torch.linalg.matrix_norm(D, ord=2)),
                         float(torch.linalg.norm(D)),
                         float(torch.max(torch.linalg.norm(D, dim=1))),
                         float(torch.mean(((z > 0) != pattern0).float()))))
            W -= lr * g
    return np.array(rows)


def torch_func_ensemble(W0, a, X, y, steps, lr, tol=1e-2) -> np.ndarray:
    """All S networks at once with torch.func: (S, steps + 1, len(METRICS))."""
    import torch
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    class Net(torch.nn.Module):
        def __init__(self, W0: torch.Tensor, a: torch.Tensor):
            super().__init__()
            self.W = torch.nn.Parameter(W0.clone())
            self.register_buffer("a", a)

        def forward(self, X):
            z = X @ self.W.T
            return torch.relu(z) @ self.a / self.W.shape[0] ** 0.5, z

    torch.set_float32_matmul_precision("highest")
    W0, a, X, y = (torch.tensor(v, dtype=torch.float32, device=TORCH_DEVICE)
                   for v in (W0, a, X, y))
    params, buffers = stack_module_state([Net(w, b) for w, b in zip(W0, a)])
    base = Net(W0[0], a[0]).to("meta")

    def loss_fn(params, buffers, X, y):
        f, z = functional_call(base, (params, buffers), (X,))
        return 0.5 * torch.sum((f - y) ** 2), (f, z)

    step = vmap(grad_and_value(loss_fn, has_aux=True))
    pattern0 = (X @ W0.mT) > 0
    # Preallocated: small host arrays kept between the large tensors of every step would
    # fragment glibc's heap and grow the RSS by megabytes per step.
    out = np.empty((len(W0), steps + 1, len(METRICS)), np.float32)
    with torch.no_grad():  # torch.func.grad still differentiates inside
        for t in range(steps + 1):
            g, (loss, (f, z)) = step(params, buffers, X, y)
            D = params["W"] - W0
            out[:, t] = torch.stack([loss,
                                     ((f - y).abs() > tol).float().mean(1),
                                     torch.linalg.vector_norm(g["W"], dim=(1, 2)),
                                     torch.linalg.matrix_norm(D, ord=2),
                                     torch.linalg.matrix_norm(D),
                                     torch.linalg.vector_norm(D, dim=2).amax(1),
                                     ((z > 0) != pattern0).float().mean((1, 2))], 1).cpu().numpy()
            params = {"W": params["W"] - lr * g["W"]}
    return out


def _one_at_a_time(train_one: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def train(W0, a, X, y, steps, lr):
        return np.stack([train_one(*net, steps, lr) for net in zip(W0, a, X, y)])
    return train


class Peer(NamedTuple):
    framework: str                      # imported before the clock starts
    train: Callable[..., np.ndarray]    # (W0, a, X, y, steps, lr) -> (S, steps + 1, 7)
    sequential: bool                    # timed on a few networks and extrapolated


PEERS = {
    "jax-seq": Peer("jax", _one_at_a_time(jax_sequential), True),
    "torch-seq": Peer("torch", _one_at_a_time(torch_sequential), True),
    "torch-func": Peer("torch", torch_func_ensemble, False),
}


def main(method: str, inputs: str, output: str) -> None:
    """Trains every group of INPUTS with METHOD; writes the training seconds (compile
    included; imports and loading excluded) and the network-steps done."""
    peer = PEERS[method]
    importlib.import_module(peer.framework)
    data = dict(np.load(inputs))
    steps = int(data["steps"])
    groups = [[data[f"{k}{i}"] for k in ("W0", "a", "X", "y")] for i in range(int(data["groups"]))]
    t = time.perf_counter()
    for i, group in enumerate(groups):
        peer.train(*group, steps, float(data[f"lr{i}"]))
    seconds = time.perf_counter() - t
    networks = sum(len(g[0]) for g in groups)
    with open(output, "w") as f:
        json.dump({"seconds": seconds, "network_steps": networks * steps}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
