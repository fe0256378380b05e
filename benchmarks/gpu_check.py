"""Every GPU check, in one run of under 8 minutes on one H100/H200.

    bash benchmarks/gpu_check.sh            # on the lent machine (see that file)
    python benchmarks/gpu_check.py --smoke  # the same steps at toy sizes, on the CPU

Each step appends its rows to OUT/gpu.md (BENCHMARKS.md's table form) as soon
as it ends, so that what ran comes back even if a later step runs out of time:

  1. XLA's float32 matrix-multiply rate at precision 'highest' (8192^3)
  2. one training step with every metric, width 4096, depth 3, n = 256, 8
     networks: its FLOP rate against that matmul rate (target >= 50%)
  3. sweep R with 256 seeds through the command line (--device=gpu) against
     the sequential PyTorch loop on the same GPU (target >= 100x)
  4. 1,000 width-4096 networks (du2018, n = d = 1000) planned by memory
     analysis and run on this one GPU
  5. the convolutional networks' chunk with the convolution as patches times the
     kernel (model.conv_same) against XLA's (cuDNN's) convolution (conv_cost.py)
  6. the numerics tests (model, metrics, radius, Gram, train, theory) on the
     device, with the time that is left
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_model.py", "tests/test_metrics.py", "tests/test_radius.py",
         "tests/test_gram.py", "tests/test_train.py", "tests/test_theory.py"]


class Report:
    """Rows of OUT/gpu.md, rewritten after every step."""

    def __init__(self, path: Path, header: str):
        self.path, self.lines = path, [header, "", "| check | result |", "|---|---|"]

    def add(self, check: str, result: str) -> None:
        self.lines.append(f"| {check} | {result} |")
        print(f"{check}: {result}", flush=True)
        self.path.write_text("\n".join(self.lines) + "\n")


def matmul_rate(size: int) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    f = jax.jit(lambda x: jnp.matmul(x, x, precision=jax.lax.Precision.HIGHEST))
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def step_rate(width: int, depth: int, n: int, d: int, networks: int, records: int = 10):
    """(seconds per step, FLOP/s) of the engine's chunk with every metric."""
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import overhead

    from overparam import train

    static = train.Static(width=width, depth=depth, n=n, d=d, batch_size=n, loss="squared",
                          optimizer="gd", param="ntk", chunk_records=records)
    X, y, hyper = overhead.random_batch(networks, n, d)
    program = train.make_program(static)
    state = program.init(train.batch_keys(hyper), X, None)
    run = lambda: program.chunk(state, hyper, X, y, jnp.int32(0))
    jax.block_until_ready(run())
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(run())
        best = min(best, time.perf_counter() - t)
    seconds = best / records
    return seconds, networks * overhead.step_flops(width, depth, n, d) / seconds


def sweep(args: list[str], out: Path, device: str, timeout: float) -> tuple[float, dict]:
    """Wall seconds and manifest of the command line on `args`."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "overparam.sweep", *args, f"--out={out}",
                           f"--device={device}", "--progress=false",
                           f"--compilation_cache={out}-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["failed"])[-1])
    return wall, json.loads((out / "manifest.json").read_text())


def torch_sequential_rate(spec: dict, out: Path, tmp: Path) -> float:
    """Network-steps/s of the sequential PyTorch loop on 2 networks per width of R,
    from overparam's own initializations (benchmarks/bench.py's protocol)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench

    import overparam
    from overparam import config as config_lib

    results = overparam.load(out)
    runs = config_lib.expand(config_lib.validate(results.manifest["config"]))
    datasets = {r.dataset_id: results.dataset(r.dataset_id) for r in runs}
    rate, _, _ = bench.time_peer("torch-seq", spec, runs, datasets, 2, tmp)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="toy sizes, on the CPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_check"))
    parser.add_argument("--budget", type=float, default=460.0,
                        help="seconds for the whole run; the tests get what is left")
    opts = parser.parse_args()
    start = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if opts.smoke else "gpu"
    os.environ["JAX_PLATFORMS"] = "cpu" if opts.smoke else "cuda"
    os.environ["OVERPARAM_TORCH_DEVICE"] = "cpu" if opts.smoke else "cuda"
    import jax

    report = Report(out / "gpu.md", f"GPU checks on {jax.devices()[0].device_kind} "
                    f"(jax {jax.__version__}, {time.strftime('%Y-%m-%d %H:%M')})")
    size, (width, depth, n, d, nets) = ((1024, (256, 3, 64, 32, 4)) if opts.smoke
                                        else (8192, (4096, 3, 256, 1024, 8)))
    rate = matmul_rate(size)
    report.add(f"float32 'highest' matmul {size}^3", f"{rate / 1e12:.1f} TFLOP/s")
    seconds, flops = step_rate(width, depth, n, d, nets)
    report.add(f"step with every metric, width {width} depth {depth} n {n} d {d}, {nets} "
               "networks", f"{1e3 * seconds:.1f} ms, {flops / 1e12:.1f} TFLOP/s = "
               f"{flops / rate:.0%} of the matmul rate (target >= 50%)")

    spec = dict(widths=(64, 256, 1024), num_seeds=8 if opts.smoke else 256, n=128, d=32,
                steps=20 if opts.smoke else 300, lr=0.1)
    r_args = ["--config=sweeps/default.py", f"--config.widths={spec['widths']}".replace(" ", ""),
              f"--config.num_seeds={spec['num_seeds']}", "--config.n=(128,)", "--config.d=32",
              f"--config.steps={spec['steps']}", "--config.lr=(0.1,)", "--config.gram_every=0",
              "--config.n_test=0", "--config.chunk_steps=100"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wall, manifest = sweep(r_args, tmp / "R", device, timeout=300)
        ours = manifest["num_runs"] * spec["steps"] / wall
        theirs = torch_sequential_rate(spec, tmp / "R", tmp)
        report.add(f"R with {spec['num_seeds']} seeds (cold cache, whole process)",
                   f"{wall:.1f} s wall, compile {manifest['timings']['compile']:.1f} s: "
                   f"{ours:,.0f} network-steps/s; torch-seq on the same device "
                   f"{theirs:,.0f}: {ours / theirs:.1f}x (target >= 100x)")

        big = (["--config=sweeps/du2018.py", "--config.widths=(64,)", "--config.num_seeds=20",
                "--config.n=(64,)", "--config.d=64", "--config.steps=20"] if opts.smoke else
               ["--config=sweeps/du2018.py", "--config.widths=(4096,)",
                "--config.num_seeds=1000"])
        wall, manifest = sweep(big, tmp / "big", device, timeout=420)
        report.add(f"{manifest['num_runs']} networks of width {'64' if opts.smoke else '4096'} "
                   "(du2018, n = d = " + ("64" if opts.smoke else "1000") + ")",
                   f"{wall:.1f} s wall, {len(manifest['plan']) - 1} batches: "
                   + "; ".join(manifest["plan"][1:3]).replace("|", "/")
                   + f"; {manifest['num_diverged']} diverged")

    conv = ["--rounds=1", "--width=16", "--networks=2"] if opts.smoke else [
        "--rounds=2", "--width=256", "--networks=8"]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "conv_cost.py"), *conv],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).strip().splitlines() or ["no output"]
    report.add("cnn chunk: patches x kernel against lax.conv (" + " ".join(conv) + ")",
               " / ".join(lines[-3:]) if proc.returncode == 0 else f"exit {proc.returncode}: "
               + lines[-1])

    left = opts.budget - (time.perf_counter() - start)
    env = {**os.environ, "OVERPARAM_COMPILATION_CACHE": str(out / "test-cache")}
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-p",
                               "no:cacheprovider", *TESTS], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=max(left, 30))
        log, result = proc.stdout + proc.stderr, f"exit {proc.returncode}"
    except subprocess.TimeoutExpired as e:
        log = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        result = f"stopped after {max(left, 30):.0f} s (the run's time budget)"
    (out / "tests.log").write_text(log[-20000:])
    summary = (log.strip().splitlines() or ["no output"])[-1]
    report.add(f"numerics tests on {device} ({', '.join(Path(t).stem for t in TESTS)})",
               f"{result}: {summary}")
    report.add("whole run", f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
