"""The cost of overparam's metrics, and its FLOP rate against the machine's best GEMM.

    python benchmarks/overhead.py [--json] [--reps=5] [--smoke]

For sweep R's widths and the deep sweep R3 (width 1024, depth 3, n = 256,
16 networks), times per step of a compiled chunk of K records:

  loss only    jit(vmap(scan)) of plain GD steps recording the loss (the same
               model and loss code, nothing else), in the same cache groups
  overparam    the engine's compiled chunk: every metric every step, in the
               cache groups the planner gives this batch on one CPU device

the two alternating in this process, best of `reps` each. It reports the
metrics' overhead, the achieved FLOP rate of overparam's step counting the
training arithmetic only, 4 n d m + 6 n (L - 1) m^2 per network-step
(forward and weight gradient of every layer, and the input gradient of
layers 2..L), and that as a fraction of the better of NumPy's and XLA's
float32 GEMM measured in the same run (benchmarks/gemm.py). --smoke: SMOKE's
toy cases, 2 records, once each, and gemm.py --smoke.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from overparam import chunks, losses, model, programs, train, trainstate
from overparam import plan as plan_lib

K = 20  # recorded steps per timed chunk
CASES = [  # name, width, depth, n, d, networks
    ("R m=64", 64, 1, 128, 32, 64),
    ("R m=256", 256, 1, 128, 32, 64),
    ("R m=1024", 1024, 1, 128, 32, 64),
    ("R3 m=1024 L=3", 1024, 3, 256, 32, 16),
]
SMOKE = [("smoke m=16 L=2", 16, 2, 16, 4, 2)]


def step_flops(width: int, depth: int, n: int, d: int) -> int:
    """Training FLOPs of one network-step (see the module docstring)."""
    return 4 * n * d * width + 6 * n * (depth - 1) * width**2


def loss_only_chunk(static: train.Static, networks: int, records: int = K):
    """`records` plain GD steps of each network, recording only the loss (vmapped, jitted),
    in groups of static.cache_group networks one after the other as overparam's."""

    def step(W, _, X, y, a, lr):
        def loss_fn(W):
            f, _ = model.apply(model.Net(W, a), X, param=static.param)
            return losses.reduce(losses.per_example("squared", f, y), reduction="sum",
                                 n=static.n)

        loss, g = jax.value_and_grad(loss_fn)(W)
        return jax.tree_util.tree_map(lambda w, gw: w - lr * gw, W, g), loss

    def chunk(W, X, y, a, lr):
        return jax.lax.scan(functools.partial(step, X=X, y=y, a=a, lr=lr), W, None,
                            length=records)

    group = static.cache_group or networks

    def grouped(*args):
        split = jax.tree_util.tree_map(lambda a: a.reshape(networks // group, group,
                                                           *a.shape[1:]), args)
        W, loss = jax.lax.map(lambda a: jax.vmap(chunk)(*a), split)
        merge = lambda a: a.reshape(networks, *a.shape[2:])
        return jax.tree_util.tree_map(merge, W), merge(loss)

    return jax.jit(grouped)


def random_batch(networks: int, n: int, d: int):
    """X (networks, n, d) on the unit sphere, Gaussian y (networks, n), and RunScalars with
    seeds 0..networks-1 and eta = 1e-3: the timed benchmarks' inputs."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((networks, n, d))
    X = jnp.asarray(X / np.linalg.norm(X, axis=-1, keepdims=True), jnp.float32)
    y = jnp.asarray(rng.standard_normal((networks, n)), jnp.float32)
    hyper = trainstate.RunScalars(
        np.arange(networks, dtype=np.uint32), np.zeros(networks, np.uint32),
        np.zeros(networks, np.uint32), np.full(networks, 1e-3, np.float32),
        np.ones(networks, np.float32))
    return X, y, hyper


def chunk_runner(program: chunks.Jitted, state: trainstate.State, hyper, X, y, records: int):
    """A call that runs one compiled chunk of `records` records from the state that the
    last call left (the chunk may donate its input state) and returns its records."""
    box = {"state": state, "start": 0}

    def run():
        box["state"], recs = program.chunk(box["state"], hyper, trainstate.Data(X, y),
                                           jnp.int32(box["start"]))
        box["start"] += records
        return recs

    return run


def time_case(width, depth, n, d, M, reps, records=K):
    """(loss-only seconds per step, overparam seconds per step), interleaved, best of reps."""
    static = train.Static(width=width, depth=depth, n=n, d=d, batch_size=n, loss="squared",
                          optimizer="gd", param="du", chunk_records=records)
    static = plan_lib.with_cache_group(
        static, M, plan_lib.cache_group_size(static, programs.CPU_CACHE_BYTES))
    X, y, hyper = random_batch(M, n, d)
    program = chunks.jit_program(static)
    state = program.init(trainstate.batch_keys(hyper), trainstate.Data(X, y))
    plain = loss_only_chunk(static, M, records)
    lr = jnp.asarray(hyper.lr)
    W0, a = jax.tree_util.tree_map(jnp.copy, (state.net0.hidden, state.net0.out))
    runs = [lambda: plain(W0, X, y, a, lr), chunk_runner(program, state, hyper, X, y, records)]
    best = [float("inf")] * 2
    for fn in runs:
        jax.block_until_ready(fn())
    for _ in range(reps):
        for i, fn in enumerate(runs):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            best[i] = min(best[i], time.perf_counter() - t)
    return best[0] / records, best[1] / records


def measure(reps: int = 5, smoke: bool = False) -> dict:
    """GEMM rates (a process of their own, before JAX loads here) and every case."""
    gemm = json.loads(subprocess.run(
        [sys.executable, str(Path(__file__).with_name("gemm.py")), "--json",
         *(["--smoke"] if smoke else [])], capture_output=True, text=True, check=True).stdout)
    best = max(gemm["numpy"], gemm["xla"])
    cases = []
    for name, width, depth, n, d, M in SMOKE if smoke else CASES:
        lean, full = time_case(width, depth, n, d, M, 1 if smoke else reps, 2 if smoke else K)
        rate = M * step_flops(width, depth, n, d) / full / 1e9
        cases.append(dict(case=name, loss_only_ms=1e3 * lean, overparam_ms=1e3 * full,
                          overhead=full / lean - 1, gflops=rate, of_best_gemm=rate / best))
    return {"gemm": gemm, "cases": cases}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="toy cases (SMOKE), seconds")
    opts = parser.parse_args()
    result = measure(opts.reps, opts.smoke)
    if opts.json:
        json.dump(result, sys.stdout)
        return
    g = result["gemm"]
    print(f"float32 GEMM {g['size']}^3: NumPy {g['numpy']:.1f}, "
          f"XLA {g['xla']:.1f} GFLOP/s")
    print(f"{'case':16s} {'loss only':>10s} {'overparam':>10s} {'overhead':>9s} "
          f"{'GFLOP/s':>8s} {'of best GEMM':>12s}")
    for c in result["cases"]:
        print(f"{c['case']:16s} {c['loss_only_ms']:8.2f}ms {c['overparam_ms']:8.2f}ms "
              f"{c['overhead']:8.0%} {c['gflops']:8.1f} {c['of_best_gemm']:12.0%}")


if __name__ == "__main__":
    main()
