"""The machine's float32 matrix-multiply rate: NumPy's BLAS and XLA's, side by side.

    python benchmarks/gemm.py [--size=2048] [--json] [--smoke]

Both multiply the same two size x size float32 matrices (XLA at precision
'highest'), alternating, 5 times each after a warm-up; the best of each is
reported in GFLOP/s (2 n^3 / seconds). NumPy uses every core
(OPENBLAS_NUM_THREADS is set to the CPU count here, since overparam sets it
to 1 for its own host work). The larger of the two is "the best GEMM the
machine has" that BENCHMARKS.md compares overparam's step against. --smoke: 128^3, once each.
"""

from __future__ import annotations

import os
import sys

os.environ["OPENBLAS_NUM_THREADS"] = str(os.cpu_count() or 1)  # before NumPy loads

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

SIZE, SMOKE_SIZE = 2048, 128  # of the matrices; --json prints the size with the rates


def rates(size: int = 2048, reps: int = 5) -> dict[str, float]:
    """{'numpy': GFLOP/s, 'xla': GFLOP/s} of a size^3 float32 product."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    xla = jax.jit(lambda x, y: jnp.matmul(x, y, precision=jax.lax.Precision.HIGHEST))
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    runs = {"numpy": lambda: a @ b, "xla": lambda: xla(ja, jb).block_until_ready()}
    best = {name: float("inf") for name in runs}
    for fn in runs.values():
        fn()
    for _ in range(reps):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: 2 * size**3 / s / 1e9 for name, s in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="128^3, once each")
    opts = parser.parse_args()
    size = SMOKE_SIZE if opts.smoke else opts.size
    r = rates(size, reps=1 if opts.smoke else 5)
    if opts.json:
        json.dump({**r, "size": size}, sys.stdout)
    else:
        print(f"float32 {size}^3: NumPy {r['numpy']:.1f} GFLOP/s, XLA {r['xla']:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
