"""The host's work at the size of the GPU plan, measured on this machine.

    python benchmarks/host_cost.py [--json] [--smoke]

The plan: sweeps/du2018.py with widths (4096,), 1000 seeds (n = d = 1000,
Gram statistics every 10 steps, 100 steps, chunk_steps 50, so 3 chunks of 34
records): 1,000 networks in 3 batches of 334 on an 80 GB GPU. For it, this
measures on the CPU:

  kernels      H^inf and its eigenvalues for training sets of n = 1000 (the
               engine's `prepare.ntk_limits`, on its thread pool), per training set, and
               extrapolated to the plan's 1,000 on this host's cores
  records      one chunk's records of one batch (334 networks x 34 records) to
               its two Parquet parts (the engine's `records.write_chunk`)
  checkpoint   the write rate of `checkpoint.save` (a batch's state scaled
               down to 512 MiB), extrapolated to the plan's 5.5 GB state

beside the device's seconds per chunk estimated as the chunk's training
FLOPs (4 n d m per network-step, and the Gram matrix 2 n^2 m every 10 steps)
over a float32 rate given on the command line (--gpu_tflops, default 60: an
H100/H200 SXM's FP32 FMA rate, which precision 'highest' runs at). --smoke: the same
at SMOKE's toy sizes, in seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the command line has it

import argparse  # noqa: E402
import json  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from overparam import checkpoint, chunks, prepare, progress, records, train, trainstate  # noqa: E402
from overparam import config as config_lib  # noqa: E402
from overparam import plan as plan_lib  # noqa: E402


class Sizes(NamedTuple):
    networks: int      # in the plan
    batch: int         # networks per batch
    width: int
    n: int
    d: int
    gram_every: int
    steps: int
    chunk_steps: int
    chunk: int         # records per chunk that `steps` and `chunk_steps` give
    checkpoint_bytes: int  # of the state that checkpoint.save writes here


# 101 records (step 0 included) in 3 equal chunks of 34; the batch's state scaled down to 512 MiB
FULL = Sizes(1000, 334, 4096, 1000, 1000, 10, 100, 50, 34, 512 * 2**20)
SMOKE = Sizes(4, 2, 16, 32, 32, 10, 10, 5, 4, 2**20)


def _du2018(z: Sizes, **fields) -> config_lib.Sweep:
    """sweeps/du2018.py at the sizes of `z`, with `fields` set."""
    c = runpy.run_path("sweeps/du2018.py")["get_config"]()
    c.update(dict(widths=(z.width,), n=(z.n,), d=z.d, gram_every=z.gram_every, **fields))
    return config_lib.validate(c)


def measure_kernels(z: Sizes, num: int) -> float:
    """Seconds per training set of n = z.n, d = z.d: data, H^inf and eigenvalues (thread pool)."""
    sweep = _du2018(z, num_seeds=num)
    runs = config_lib.expand(sweep)
    datasets, _ = prepare.make_datasets(sweep)
    prepare.ntk_limits(sweep, runs[:1], datasets)  # warm-up: the first LAPACK call, the pool
    t = time.perf_counter()
    datasets, _ = prepare.make_datasets(sweep)
    prepare.ntk_limits(sweep, runs, datasets)
    return (time.perf_counter() - t) / num


def measure_records(z: Sizes, tmp: Path) -> float:
    """Seconds to write one chunk's records of a batch of z.batch networks (depth 1)."""
    sweep = _du2018(z, num_seeds=z.batch, steps=z.steps, chunk_steps=z.chunk_steps)
    plan = plan_lib.make_plan(sweep, budget_mb=1e9)
    batch = plan.batches[0]
    K = plan.chunk_records
    assert K == z.chunk and batch.size == z.batch, (K, batch.size)
    rng = np.random.default_rng(0)
    recs = chunks.Records(step=np.arange(K, dtype=np.int32),
                         steps=rng.random((K, z.batch, len(train.STEP_FIELDS)), np.float32),
                         layers=rng.random((K, z.batch, 1, len(train.LAYER_FIELDS)),
                                           np.float32))
    bar = progress.Progress(1, enabled=False)
    results = records.RunResults.empty(batch.num_real)
    t = time.perf_counter()
    _, network_steps = records.write_chunk(tmp, batch, 0, recs, z.steps, sweep.dtype, results)
    bar.update(network_steps)
    return time.perf_counter() - t


def measure_checkpoint(tmp: Path, nbytes: int = 512 * 2**20) -> float:
    """checkpoint.save's write rate in bytes per second, on a state of `nbytes`."""
    rng = np.random.default_rng(0)
    delta = rng.random(nbytes // 4, np.float32)
    # Every field None (an empty pytree) but the ones checkpoint.trained_part writes.
    state = trainstate.State(**{**dict.fromkeys(trainstate.State._fields),
                            **dict(step=np.zeros(1, np.int32), delta=(delta,), opt_state=(),
                                   v=(), alive=np.ones(1, bool),
                                   diverged_step=np.zeros(1, np.int32))})
    results = records.RunResults.empty(1).to_dict()
    t = time.perf_counter()
    size = checkpoint.save(tmp, 0, checkpoint.CheckpointMeta(chunks_done=1, step=1, parts={},
                                                             results=results), state=state)
    return size / (time.perf_counter() - t)


def device_seconds_per_chunk(z: Sizes, tflops: float) -> float:
    flops = 4 * z.n * z.d * z.width * z.chunk + 2 * z.n**2 * z.width * (z.chunk // z.gram_every)
    return z.batch * flops / (tflops * 1e12)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--gpu_tflops", type=float, default=60.0)
    parser.add_argument("--kernels", type=int, default=8, help="training sets timed")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (SMOKE), seconds")
    opts = parser.parse_args()
    z = SMOKE if opts.smoke else FULL
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_kernel = measure_kernels(z, 2 if opts.smoke else opts.kernels)
        records = measure_records(z, tmp)
        rate = measure_checkpoint(tmp, z.checkpoint_bytes)
    state_bytes = z.batch * (z.width * z.d * 4 + 64)  # D (float32), small per-network leaves
    result = dict(
        cores=os.cpu_count(), kernel_seconds_each=per_kernel,
        kernels_total_this_host=per_kernel * z.networks,
        kernels_total_16_cores=per_kernel * z.networks * (os.cpu_count() or 1) / 16,
        records_seconds_per_chunk=records, checkpoint_bytes_per_second=rate,
        checkpoint_seconds=state_bytes / rate, checkpoint_bytes=state_bytes,
        device_seconds_per_chunk=device_seconds_per_chunk(z, opts.gpu_tflops),
        gpu_tflops=opts.gpu_tflops, device=str(jax.devices()[0].device_kind),
        networks=z.networks, batch=z.batch, n=z.n)
    if opts.json:
        json.dump(result, sys.stdout)
        return
    r = result
    print(f"host: {r['cores']} cores ({r['device']})")
    print(f"  kernels: {r['kernel_seconds_each']:.3f} s per training set (n = d = {r['n']}, "
          f"thread pool): {r['kernels_total_this_host']:.0f} s for {r['networks']} here, "
          f"~{r['kernels_total_16_cores']:.0f} s on 16 cores")
    print(f"  records: {r['records_seconds_per_chunk']:.2f} s per chunk of a batch of "
          f"{r['batch']}")
    print(f"  checkpoint: {r['checkpoint_bytes_per_second'] / 2**20:,.0f} MiB/s, so "
          f"{r['checkpoint_seconds']:.1f} s for a batch's {r['checkpoint_bytes'] / 2**30:.1f} GiB")
    print(f"  device (estimated at {r['gpu_tflops']:.0f} TFLOP/s): "
          f"{r['device_seconds_per_chunk']:.2f} s per chunk")


if __name__ == "__main__":
    main()
