"""Cache groups: one batch's chunk run whole against the same batch run group by group.

    python benchmarks/cache_groups.py [--reps=5] [--json] [--smoke]

For each case (width, depth, n, d, networks) it times a compiled chunk of K
records with every metric (chunks.chunk_batch), the batch vmapped whole
(cache_group 0) and in groups of g networks one after the other (lax.map),
for several g; the methods alternate in this process, best of `reps` each.
The planner's choice on one CPU device (plan.cache_group_size with
programs.CPU_CACHE_BYTES: one n x width activation per network, 4 MiB a group)
is marked with *. The records of every grouping are checked against the
whole batch's first (rtol 1e-5). --smoke: SMOKE's toy case, 2 records, once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np
import overhead

from overparam import chunks, programs, train, trainstate
from overparam import plan as plan_lib

K = 20
CASES = [  # width, depth, n, d, networks, groups to try
    (256, 1, 128, 32, 64, (32, 16, 8)),
    (1024, 1, 128, 32, 64, (16, 8, 4)),
    (4096, 1, 128, 32, 16, (4, 2, 1)),
    (256, 1, 512, 32, 64, (16, 8, 4)),
    (1024, 3, 256, 32, 16, (8, 4, 2)),
]
SMOKE = [(16, 1, 16, 4, 8, (4,))]


def time_case(width, depth, n, d, M, groups, reps, records=K):
    """{group: seconds per step}, 0 for the whole batch; the planner's group."""
    X, y, hyper = overhead.random_batch(M, n, d)
    base = train.Static(width=width, depth=depth, n=n, d=d, batch_size=n, loss="squared",
                        optimizer="gd", param="du", chunk_records=records)
    chosen = plan_lib.with_cache_group(
        base, M, plan_lib.cache_group_size(base, programs.CPU_CACHE_BYTES)).cache_group
    runs, reference = {}, None
    for g in (0, *groups):
        program = chunks.jit_program(train.Static(**{**vars(base), "cache_group": g}))
        state = program.init(trainstate.batch_keys(hyper), trainstate.Data(X, y))
        runs[g] = overhead.chunk_runner(program, state, hyper, X, y, records)
        got = jax.device_get(runs[g]())
        if reference is None:
            reference = got
        for a, b in ((reference.steps, got.steps), (reference.layers, got.layers)):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=f"group {g}")
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(reps):
        for g, fn in runs.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            best[g] = min(best[g], time.perf_counter() - t)
    return {g: s / records for g, s in best.items()}, chosen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a toy case (SMOKE), seconds")
    opts = parser.parse_args()
    results = []
    for width, depth, n, d, M, groups in SMOKE if opts.smoke else CASES:
        times, chosen = time_case(width, depth, n, d, M, groups, *((1, 2) if opts.smoke
                                                                   else (opts.reps, K)))
        results.append(dict(width=width, depth=depth, n=n, d=d, networks=M, chosen=chosen,
                            ms={g: 1e3 * t for g, t in times.items()}))
        if not opts.json:
            cells = "  ".join(f"g={g or 'all'}{'*' if g == chosen else ''}: {1e3 * t:.2f} ms"
                              for g, t in times.items())
            print(f"m={width} L={depth} n={n} x{M}: {cells}", flush=True)
    if opts.json:
        json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
