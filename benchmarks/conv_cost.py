"""The convolutional networks' step: XLA's convolution against patches times the kernel.

    python benchmarks/conv_cost.py [--rounds=3] [--width=64] [--networks=3]

XLA:CPU runs a convolution inside a loop far slower than outside one (jax-ml/jax#12868),
and every step of overparam's compiled chunk is inside a scan. This times the compiled
chunk of a cnn batch (depth 2, n = 32 images of 8x8, every metric at every one of 20
recorded steps) with the networks' convolution `model.conv_same` (patches times the
kernel as a matrix) and with `lax.conv_general_dilated` put in its place, each in its own
process, alternated over `rounds`, and prints the ms per recorded step of each and the
median ratio with its range. Each process also times one vmapped training step jitted
alone, outside any loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _measure(conv: str, width: int, networks: int) -> dict:
    import jax
    import jax.numpy as jnp

    from overparam import data, model, train

    if conv == "lax":
        model.conv_same = lambda h, kernel, precision=None: jax.lax.conv_general_dilated(
            h, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=precision)
    k, n, d, records = networks, 32, 64, 20
    static = train.Static(width=width, depth=2, n=n, d=d, batch_size=n, loss="squared",
                          optimizer="gd", param="ntk", arch="cnn", chunk_records=records)
    ds = data.make_dataset(dict(dataset="sphere", labels="gaussian", n=n, d=d, seed=1,
                                dtype="float32"))
    hyper = train.Hyper(seed=jnp.arange(k, dtype=jnp.uint32),
                        init_tag=jnp.full((k,), 7, jnp.uint32),
                        batch_tag=jnp.full((k,), 5, jnp.uint32),
                        lr=jnp.full((k,), 0.5, jnp.float32),
                        output_scale=jnp.ones((k,), jnp.float32))
    X, y = jnp.stack([ds.X] * k), jnp.stack([ds.y] * k)
    program = train.make_program(static)
    state = program.init(train.batch_keys(hyper), X)

    def best(f, *args):
        jax.block_until_ready(f(*args))
        times = []
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready(f(*args))
            times.append(time.perf_counter() - t)
        return min(times)

    chunk = best(lambda s: program.chunk(s, hyper, X, y, jnp.int32(0)), state) / records

    def plain(h, s, X, y):
        objective, _, grads = train._gradient(static, h, s, X, y)
        return train._update(static, h, s, objective, grads)

    alone = best(jax.jit(jax.vmap(plain)), hyper, state, X, y)
    return {"chunk_ms": 1e3 * chunk, "alone_ms": 1e3 * alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--networks", type=int, default=3)
    parser.add_argument("--child", choices=("lax", "patches"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(_measure(opts.child, opts.width, opts.networks)))
        return
    got = {"lax": [], "patches": []}
    for r in range(opts.rounds):
        for conv in got:
            out = subprocess.run([sys.executable, __file__, f"--child={conv}",
                                  f"--width={opts.width}", f"--networks={opts.networks}"],
                                 check=True, capture_output=True, text=True).stdout
            got[conv].append(json.loads(out.splitlines()[-1]))
            print(f"round {r + 1} {conv:8s} {got[conv][-1]['chunk_ms']:7.1f} ms per recorded "
                  f"step in the chunk, {got[conv][-1]['alone_ms']:6.1f} ms for a step alone")
    ratios = [a["chunk_ms"] / b["chunk_ms"] for a, b in zip(got["lax"], got["patches"])]
    print(f"cnn width {opts.width}, {opts.networks} networks: patches x kernel is "
          f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}] "
          "faster than lax.conv_general_dilated in the chunk")


if __name__ == "__main__":
    main()
