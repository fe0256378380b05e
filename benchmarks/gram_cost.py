"""Cost of NTK Gram tracking relative to a recorded training step (CPU or GPU).

    python benchmarks/gram_cost.py [--smoke]

Times one compiled chunk of K recorded steps for a batch of networks with
gram_every = 0 (off) and gram_every = 1 (every step), and prints the ratio.
--smoke: SMOKE's toy case, 2 recorded steps a chunk.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from overparam import chunks, train, trainstate

CASES = [  # (param, width, depth, n, d, networks)
    ("du", 1024, 1, 64, 16, 16),
    ("du", 4096, 1, 256, 64, 4),
    ("zou", 512, 3, 64, 16, 8),
]
SMOKE = [("du", 16, 1, 8, 4, 2)]
K = 20


def inputs(static, M):
    """M networks' training sets (unit-norm X, Gaussian y) and RunScalars (eta = 1e-3)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((M, static.n, static.d))
    X = jnp.asarray(X / np.linalg.norm(X, axis=-1, keepdims=True), jnp.float32)
    y = jnp.asarray(rng.standard_normal((M, static.n)), jnp.float32)
    hyper = trainstate.RunScalars(jnp.arange(M, dtype=jnp.uint32), jnp.zeros(M, jnp.uint32),
                                  jnp.zeros(M, jnp.uint32), jnp.full(M, 1e-3, jnp.float32),
                                  jnp.ones(M, jnp.float32))
    return X, y, hyper


def time_chunk(static, M, reps=3):
    X, y, hyper = inputs(static, M)
    program = chunks.jit_program(static)
    H = jnp.zeros((M, static.n, static.n), jnp.float32) if static.gram_every else None
    state = program.init(trainstate.batch_keys(hyper), trainstate.Data(X, y, H))
    state, rec = program.chunk(state, hyper, trainstate.Data(X, y), jnp.int32(0))
    jax.block_until_ready(rec)
    best = float("inf")
    records = static.chunk_records
    for rep in range(reps):
        t = time.perf_counter()
        state, rec = program.chunk(state, hyper, trainstate.Data(X, y),
                                   jnp.int32(records * (rep + 1)))
        jax.block_until_ready(rec)
        best = min(best, time.perf_counter() - t)
    return best / records


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="a toy case (SMOKE), seconds")
    smoke = parser.parse_args().smoke
    print(f"device: {jax.devices()[0].device_kind}")
    print(f"{'case':34s} {'step (ms)':>10s} {'+Gram (ms)':>10s} {'ratio':>6s}")
    for param, width, depth, n, d, M in SMOKE if smoke else CASES:
        base = dict(width=width, depth=depth, n=n, d=d, batch_size=n, loss="squared",
                    optimizer="gd", param=param, chunk_records=2 if smoke else K)
        reps = 1 if smoke else 3
        off = time_chunk(train.Static(**base), M, reps)
        on = time_chunk(train.Static(**base, gram_every=1), M, reps)
        name = f"{param} m={width} L={depth} n={n} x{M}"
        print(f"{name:34s} {1e3 * off:10.2f} {1e3 * on:10.2f} {on / off:6.2f}")


if __name__ == "__main__":
    main()
