"""Cost of the lazy/rich quantities (overparam.lazy): a recorded step with each one on.

    python benchmarks/lazy_cost.py [--rounds=5] [--smoke]

For each case (a batch of networks of one shape), in one process, interleaved over rounds,
it times one recorded step of the compiled chunk program (a chunk of K records, per
record) with every base metric on and

  plain      nothing of THEORY.md section 10
  +twin      linear_twin: the linearized twin trained and measured beside the network
  +inf       infinite_width: kernel GD with H^inf beside it (the mlp's analytic kernels)
  +feat      track_features: the RMS of h_l and of h_l - h_l(0) per layer
  +align     track_alignment with gram_every = 1, against gram_every = 1 alone (`gram`)

and prints the medians (ms per recorded step) and each one's ratio to plain (+align's
to gram). Record the table in BENCHMARKS.md with the machine.
--smoke: one round of SMOKE's toy case, 2 records a chunk.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from gram_cost import inputs

from overparam import chunks, train, trainstate

CASES = [  # (param, width, depth, n, d, networks): sweeps/lazy_rich.py:quick's shapes
    ("ntk", 64, 2, 32, 16, 24),
    ("ntk", 256, 2, 32, 16, 24),
    ("ntk", 1024, 2, 32, 16, 8),
]
K = 10
SMOKE = dict(cases=[("ntk", 8, 1, 8, 4, 2)], K=2, rounds=1)
VARIANTS = {"plain": {}, "+twin": dict(linear_twin=True), "+inf": dict(infinite_width=True),
            "+feat": dict(track_features=True), "gram": dict(gram_every=1),
            "+align": dict(gram_every=1, track_alignment=True)}


class ChunkTimer:
    """A compiled chunk program, warmed up; `step()` times one chunk, per recorded step."""

    def __init__(self, static, M):
        self.K = static.chunk_records
        X, y, self.hyper = inputs(static, M)
        H = jnp.broadcast_to(jnp.eye(static.n, dtype=jnp.float32), (M, static.n, static.n))
        self.data = trainstate.Data(X, y, H)
        self.program = chunks.jit_program(static)
        self.state = self.program.init(trainstate.batch_keys(self.hyper), self.data)
        self.start = 0
        self.step()  # compile

    def step(self) -> float:
        t = time.perf_counter()
        self.state, rec = self.program.chunk(self.state, self.hyper, self.data,
                                             jnp.int32(self.start))
        jax.block_until_ready(rec)
        self.start += self.K
        return (time.perf_counter() - t) / self.K


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a toy case (SMOKE), seconds")
    opts = parser.parse_args()
    cases, records, rounds = ((SMOKE["cases"], SMOKE["K"], SMOKE["rounds"]) if opts.smoke
                              else (CASES, K, opts.rounds))
    print(f"device: {jax.devices()[0].device_kind}, {rounds} interleaved rounds; ms per "
          "recorded step (median), x: the ratio to plain (+align: to gram)")
    print(f"{'case':24s} " + " ".join(f"{v:>15s}" for v in VARIANTS))
    for param, width, depth, n, d, M in cases:
        base = dict(width=width, depth=depth, n=n, d=d, batch_size=n, loss="squared",
                    optimizer="gd", param=param, chunk_records=records)
        timers = {v: ChunkTimer(train.Static(**base, **kw), M) for v, kw in VARIANTS.items()}
        times = {v: [] for v in VARIANTS}
        for _ in range(rounds):
            for v, timer in timers.items():
                times[v].append(timer.step())
        med = {v: statistics.median(t) for v, t in times.items()}
        cells = []
        for v in VARIANTS:
            ref = med["gram"] if v == "+align" else med["plain"]
            cells.append(f"{1e3 * med[v]:8.2f} x{med[v] / ref:4.2f}")
        print(f"{f'{param} m={width} L={depth} n={n} x{M}':24s} " + " ".join(
            f"{c:>15s}" for c in cells))


if __name__ == "__main__":
    main()
