"""The cost of overparam's metrics, and its FLOP rate against the machine's matmul rate.

    python benchmarks/overhead.py

For sweep R's widths and the deep sweep R3 (width 1024, depth 3, n = 256,
16 networks), times per step:

  loss only    jit(vmap(scan)) of plain GD steps recording the loss (the same
               model and loss code, nothing else)
  overparam    the engine's compiled chunk: every metric every step

and reports the metrics' overhead, the achieved FLOP/s of the training
arithmetic (6 n (d m + (L - 1) m^2) per network-step: forward, and backward to
weights and activations) and that as a fraction of a large float32 matmul
('highest') measured in the same run.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from overparam import losses, model, train

K = 20  # recorded steps per timed chunk
CASES = [  # name, width, depth, n, d, networks
    ("R m=64", 64, 1, 128, 32, 64),
    ("R m=256", 256, 1, 128, 32, 64),
    ("R m=1024", 1024, 1, 128, 32, 64),
    ("R3 m=1024 L=3", 1024, 3, 256, 32, 16),
]


def _best(fn, reps=3):
    out = fn()
    jax.block_until_ready(out)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def matmul_rate(size=2048) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size))
    f = jax.jit(lambda a: jnp.matmul(a, a, precision=jax.lax.Precision.HIGHEST))
    return 2 * size**3 / _best(lambda: f(a))


def loss_only_chunk(static: train.Static):
    """K plain GD steps of one network, recording only the loss (vmapped, jitted)."""

    def step(W, _, X, y, a, lr):
        def loss_fn(W):
            f, _ = model.apply(model.Net(W, a), X, param=static.param)
            return losses.reduce(losses.per_example("squared", f, y), reduction="sum",
                                 n=static.n)

        loss, g = jax.value_and_grad(loss_fn)(W)
        return jax.tree_util.tree_map(lambda w, gw: w - lr * gw, W, g), loss

    def chunk(W, X, y, a, lr):
        return jax.lax.scan(functools.partial(step, X=X, y=y, a=a, lr=lr), W, None, length=K)

    return jax.jit(jax.vmap(chunk))


def time_case(width, depth, n, d, M):
    static = train.Static(width=width, depth=depth, n=n, d=d, batch_size=n, loss="squared",
                          optimizer="gd", param="du", chunk_records=K)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((M, n, d))
    X = jnp.asarray(X / np.linalg.norm(X, axis=-1, keepdims=True), jnp.float32)
    y = jnp.asarray(rng.standard_normal((M, n)), jnp.float32)
    hyper = train.Hyper(jnp.arange(M, dtype=jnp.uint32), jnp.zeros(M, jnp.uint32),
                        jnp.zeros(M, jnp.uint32), jnp.full(M, 1e-3, jnp.float32))
    program = train.make_program(static)
    state = program.init(train.batch_keys(hyper), X, None)
    full = _best(lambda: program.chunk(state, hyper, X, y, jnp.int32(0))) / K
    plain = loss_only_chunk(static)
    lean = _best(lambda: plain(state.net0.hidden, X, y, state.net0.out, hyper.lr)) / K
    flops = 6 * n * (d * width + (depth - 1) * width**2) * M
    return lean, full, flops


def main() -> None:
    rate = matmul_rate()
    print(f"device: {jax.devices()[0].device_kind}; float32 matmul ('highest'): "
          f"{rate / 1e9:.1f} GFLOP/s")
    print(f"{'case':16s} {'loss only':>10s} {'overparam':>10s} {'overhead':>9s} "
          f"{'GFLOP/s':>8s} {'of matmul':>9s}")
    for name, width, depth, n, d, M in CASES:
        lean, full, flops = time_case(width, depth, n, d, M)
        print(f"{name:16s} {1e3 * lean:8.2f}ms {1e3 * full:8.2f}ms {full / lean - 1:8.0%} "
              f"{flops / full / 1e9:8.1f} {flops / full / rate:9.0%}")


if __name__ == "__main__":
    main()
