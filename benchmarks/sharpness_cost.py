"""Cost of sharpness tracking: a Hessian-vector product, and a recorded step with a sharpness.

    python benchmarks/sharpness_cost.py [--rounds=5] [--smoke]

For each case (a batch of networks of one shape), in one process, interleaved over rounds
(off, on, off, on, ...), it times:

  step       one recorded training step of the compiled chunk program, every metric on,
             sharpness off (best of a chunk's K steps, per step);
  +sharp     the same with sharpness_every = 1: a sharpness (20 Lanczos steps, each two
             Hessian-vector products: metrics.lanczos_top) at every recorded step;
  grad, hvp  one gradient, and one forward-over-reverse Hessian-vector product, of the
             full-batch loss of every network of the batch (vmapped, jitted alone).

It prints per case the medians over rounds and the ranges of the ratios: +sharp / step
(the cost of a recorded step that carries a sharpness), (+sharp - step) / 20 per
Lanczos step, and hvp / grad. Record the table in BENCHMARKS.md with the machine.
--smoke: one round of SMOKE's toy case, 2 records a chunk, 3 Lanczos steps.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from gram_cost import inputs

from overparam import chunks, losses, model, train, trainstate

CASES = [  # (param, width, depth, n, d, networks): sweeps/eos.py:quick's shapes, and wider
    ("ntk", 16, 2, 32, 16, 9),
    ("ntk", 64, 2, 32, 16, 9),
    ("ntk", 256, 2, 32, 16, 9),
    ("ntk", 1024, 2, 32, 16, 4),
    ("du", 1024, 1, 64, 16, 16),
]
K, ITERS = 10, 20
SMOKE = dict(cases=[("ntk", 8, 1, 8, 4, 2)], K=2, ITERS=3, rounds=1)


class ChunkTimer:
    """A compiled chunk program, warmed up; `step()` times one chunk, per recorded step."""

    def __init__(self, static, M):
        self.K = static.chunk_records
        self.X, self.y, self.hyper = inputs(static, M)
        self.program = chunks.jit_program(static)
        self.state = self.program.init(trainstate.batch_keys(self.hyper),
                                       trainstate.Data(self.X, self.y))
        self.start = 0
        self.step()  # compile

    def step(self) -> float:
        t = time.perf_counter()
        self.state, rec = self.program.chunk(self.state, self.hyper,
                                             trainstate.Data(self.X, self.y),
                                             jnp.int32(self.start))
        jax.block_until_ready(rec)
        self.start += self.K
        return (time.perf_counter() - t) / self.K


class DerivativeTimer:
    """One gradient and one Hessian-vector product of every network's full-batch loss."""

    def __init__(self, param, width, depth, n, d, M):
        X, y, _ = inputs(train.Static(width=width, depth=depth, n=n, d=d, batch_size=n,
                                       loss="squared", optimizer="gd", param=param), M)
        keys = jax.random.split(jax.random.PRNGKey(0), M)
        nets = jax.vmap(lambda k: model.init(k, d=d, width=width, depth=depth,
                                             param=param))(keys)

        def loss(hidden, out, X, y):
            f, _ = model.apply(model.Net(hidden, out), X, param=param)
            return losses.reduce(losses.per_example("squared", f, y), reduction="sum", n=n)

        grad = jax.jit(jax.vmap(jax.grad(loss)))
        hvp = jax.jit(jax.vmap(lambda h, v, o, X, y: jax.jvp(
            lambda w: jax.grad(loss)(w, o, X, y), (h,), (v,))[1]))
        # Arguments, not closed-over constants (XLA would fold those at compile time).
        self.calls = {"grad": (grad, (nets.hidden, nets.out, X, y)),
                      "hvp": (hvp, (nets.hidden, nets.hidden, nets.out, X, y))}
        self.time("grad"), self.time("hvp")  # compile

    def time(self, which: str, reps: int = 5) -> float:
        fn, args = self.calls[which]
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best = min(best, time.perf_counter() - t)
        return best


def _spread(values) -> str:
    return f"{statistics.median(values):6.2f} [{min(values):.2f}, {max(values):.2f}]"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a toy case (SMOKE), seconds")
    opts = parser.parse_args()
    cases, records, iters, rounds = ((SMOKE["cases"], SMOKE["K"], SMOKE["ITERS"],
                                      SMOKE["rounds"]) if opts.smoke
                                     else (CASES, K, ITERS, opts.rounds))
    print(f"device: {jax.devices()[0].device_kind}, {rounds} interleaved rounds, "
          f"{iters} Lanczos steps per sharpness; times are medians, ratios median [range]")
    print(f"{'case':28s} {'step ms':>8s} {'+sharp ms':>9s} {'+sharp/step':>20s} "
          f"{'ms/Lanczos step':>15s} {'hvp ms':>7s} {'hvp/grad':>20s}")
    for param, width, depth, n, d, M in cases:
        base = dict(width=width, depth=depth, n=n, d=d, batch_size=n, loss="squared",
                    optimizer="gd", param=param, chunk_records=records)
        off = ChunkTimer(train.Static(**base), M)
        on = ChunkTimer(train.Static(**base, sharpness_every=1, sharpness_iters=iters), M)
        deriv = DerivativeTimer(param, width, depth, n, d, M)
        t_off, t_on, t_grad, t_hvp = [], [], [], []
        for _ in range(rounds):
            t_off.append(off.step())
            t_on.append(on.step())
            t_grad.append(deriv.time("grad"))
            t_hvp.append(deriv.time("hvp"))
        ratio = [b / a for a, b in zip(t_off, t_on)]
        per_iter = [(b - a) / iters for a, b in zip(t_off, t_on)]
        hvp_ratio = [h / g for g, h in zip(t_grad, t_hvp)]
        name = f"{param} m={width} L={depth} n={n} x{M}"
        print(f"{name:28s} {1e3 * statistics.median(t_off):8.2f} "
              f"{1e3 * statistics.median(t_on):9.2f} {_spread(ratio):>20s} "
              f"{1e3 * statistics.median(per_iter):15.3f} {1e3 * statistics.median(t_hvp):7.3f} "
              f"{_spread(hvp_ratio):>20s}")


if __name__ == "__main__":
    main()
