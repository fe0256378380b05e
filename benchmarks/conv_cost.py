"""The convolutional networks' step: XLA's convolution against patches times the kernel.

    python benchmarks/conv_cost.py [--rounds=3] [--width=64] [--networks=3] [--json] [--smoke]

XLA:CPU runs a convolution inside a loop far slower than outside one (jax-ml/jax#12868),
and every step of overparam's compiled chunk is inside a scan. This times the compiled
chunk of a cnn batch (depth 2, n = 32 images of 8x8, every metric at every one of 20
recorded steps) with the networks' convolution `model.conv_same` (patches times the
kernel as a matrix) and with `lax.conv_general_dilated` put in its place, each in its own
process, alternated over `rounds`, and prints the ms per recorded step of each and the
median ratio with its range. Each process also times one vmapped training step jitted
alone, outside any loop. --json prints the numbers as JSON instead; --smoke: one round
of SMOKE's toy size (n = 8 images of 4x4, depth 1, 2 recorded steps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

FULL = dict(n=32, d=64, depth=2, records=20)  # 32 images of 8x8, 20 recorded steps a chunk
SMOKE = dict(n=8, d=16, depth=1, records=2, rounds=1, width=4, networks=1)


def _measure(conv: str, width: int, networks: int, n: int, d: int, depth: int,
             records: int) -> dict:
    import jax
    import jax.numpy as jnp

    from overparam import chunks, data, model, optimize, train, trainstate

    if conv == "lax":
        model.conv_same = lambda h, kernel, precision=None: jax.lax.conv_general_dilated(
            h, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=precision)
    k = networks
    static = train.Static(width=width, depth=depth, n=n, d=d, batch_size=n, loss="squared",
                          optimizer="gd", param="ntk", arch="cnn", chunk_records=records)
    ds = data.make_dataset(dict(dataset="sphere", labels="gaussian", n=n, d=d, seed=1,
                                dtype="float32"))
    hyper = trainstate.RunScalars(seed=jnp.arange(k, dtype=jnp.uint32),
                                  init_tag=jnp.full((k,), 7, jnp.uint32),
                                  batch_tag=jnp.full((k,), 5, jnp.uint32),
                                  lr=jnp.full((k,), 0.5, jnp.float32),
                                  output_scale=jnp.ones((k,), jnp.float32))
    X, y = jnp.stack([ds.X] * k), jnp.stack([ds.y] * k)
    program = chunks.jit_program(static)
    state = program.init(trainstate.batch_keys(hyper), trainstate.Data(X, y))

    def best(f, *args):
        jax.block_until_ready(f(*args))
        times = []
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready(f(*args))
            times.append(time.perf_counter() - t)
        return min(times)

    def plain(h, s, X, y):
        objective, _, grads = optimize.gradient(static, h, s, X, y)
        return optimize.update(static, h, s, objective, grads)

    alone = best(jax.jit(jax.vmap(plain)), hyper, state, X, y)  # first: the chunk may
    box = [state]                                                 # donate the state

    def chunk_from_last():
        box[0], recs = program.chunk(box[0], hyper, trainstate.Data(X, y), jnp.int32(0))
        return recs

    chunk = best(chunk_from_last) / records
    return {"chunk_ms": 1e3 * chunk, "alone_ms": 1e3 * alone}


def compare(rounds: int, width: int, networks: int, sizes: dict = FULL, log=print) -> dict:
    """Both convolutions, each in a process of its own, alternated over `rounds`: their
    ms per recorded step (chunk_ms) and per step alone (alone_ms) per round, and the
    ratios lax / patches of chunk_ms. Imports no JAX here."""
    got = {"lax": [], "patches": []}
    for r in range(rounds):
        for conv in got:
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()),
                                  f"--child={conv}", f"--width={width}",
                                  f"--networks={networks}",
                                  *(f"--{k}={sizes[k]}" for k in FULL)],
                                 check=True, capture_output=True, text=True).stdout
            got[conv].append(json.loads(out.splitlines()[-1]))
            log(f"round {r + 1} {conv:8s} {got[conv][-1]['chunk_ms']:7.1f} ms per recorded "
                f"step in the chunk, {got[conv][-1]['alone_ms']:6.1f} ms for a step alone")
    ratios = [a["chunk_ms"] / b["chunk_ms"] for a, b in zip(got["lax"], got["patches"])]
    return {**got, "ratios": ratios, "width": width, "networks": networks, **sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--networks", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (SMOKE), seconds")
    parser.add_argument("--child", choices=("lax", "patches"), help=argparse.SUPPRESS)
    for k, v in FULL.items():
        parser.add_argument(f"--{k}", type=int, default=v, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(_measure(opts.child, opts.width, opts.networks,
                                  **{k: getattr(opts, k) for k in FULL})))
        return
    if opts.smoke:
        opts = argparse.Namespace(**{**vars(opts), **SMOKE})
    result = compare(opts.rounds, opts.width, opts.networks, {k: getattr(opts, k) for k in FULL},
                     log=(lambda line: None) if opts.json else print)
    if opts.json:
        print(json.dumps(result))
        return
    ratios = result["ratios"]
    print(f"cnn width {opts.width}, {opts.networks} networks: patches x kernel is "
          f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}, {max(ratios):.2f}] "
          "faster than lax.conv_general_dilated in the chunk")


if __name__ == "__main__":
    main()
