"""make bench: overparam against the loops a researcher would write by hand.

    python benchmarks/bench.py [--rounds=3] [--quick] [--seq_networks=2] [--no_compile]
                               [--flax_only] [--smoke]

Reference sweep R: du, widths (64, 256, 1024), depth 1, 64 seeds each,
n = 128, d = 32, squared loss, 300 GD steps (eta = 0.1), every metric every
step. Each method runs in its own process, and the methods are interleaved:
every round runs them all once, in this order, and the ratios are taken per
round (so that both sides of a ratio saw the same machine), then reported as
the median with their range over the rounds:

  gemm           NumPy's and XLA's float32 2048^3 GEMM (benchmarks/gemm.py)
  overparam      the real command line (plan, compile, train, write Parquet)
                 with an empty persistent compilation cache: the whole process,
                 start-up included
  overparam-warm the same again with --overwrite and the cache the cold run filled
  flax-mlp       the same two with --config.arch=overparam.modules:MLP: the MLP's flax
  flax-mlp-warm  twin through the generic path of flax modules (overparam/networks.py),
                 which trains to the same tables bit for bit
  jax-seq        one network at a time, metrics pulled to the host every step
  torch-seq      the same in PyTorch (CPU build)
  torch-func     a PyTorch ensemble: all seeds of one width at once through
                 torch.func (vmap of grad over stack_module_state), the metrics of
                 all networks pulled to the host as one batch per step
  overhead       benchmarks/overhead.py: overparam's step with every metric against
                 loss-only training, and its FLOP rate against the best GEMM

(the peers are in benchmarks/peers.py; the torch ones are skipped if torch is
missing). All compute the same metrics (loss, error, grad norm, spectral /
Frobenius / row-max radius, flips over the training set), and every peer is
checked against overparam's records, all seven metrics, on the first networks
of each width (shared seeds and initializations) before anything is timed.
The sequential loops are timed on `seq_networks` networks per width and their
rate is extrapolated; peer times include compilation but not the imports or
process start-up. Each method's peak RSS is its process's ru_maxrss.

Then, unless --no_compile, the compile share of two first sweeps on an empty
cache, the default sweep and sweeps/zou2018.py:quick (the command line's
own compile timing against its wall time), and for the default sweep the
seconds of every program and XLA's phases (benchmarks/compile_cost.py).

--smoke runs all of it at toy sizes in seconds (one round of SMOKE, one network
per width in the sequential loops, the other scripts' --smoke, the compile
section on compile_cost.SMOKE's sizes, the default sweep only):
tests/test_benchmarks.py runs it, so that the summary is known to print. A
child that fails stops the run with its command and the end of its stderr, exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import compile_cost
import jax
import jax.numpy as jnp
import numpy as np
import peers

import overparam
from overparam import config as config_lib
from overparam import initial, train, trainstate

ROOT = Path(__file__).resolve().parents[1]
R = dict(widths=(64, 256, 1024), num_seeds=64, n=128, d=32, steps=300, lr=0.1)
QUICK = dict(widths=(64, 256, 1024), num_seeds=8, n=128, d=32, steps=100, lr=0.1)
SMOKE = dict(widths=(8,), num_seeds=2, n=16, d=4, steps=10, lr=0.1)
COMPILE_CONFIGS = ("sweeps/default.py", "sweeps/zou2018.py:quick")  # --smoke: the first
CHECK_NETWORKS, CHECK_STEPS = 4, 20  # per width (at most), in the agreement check
DISCRETE = ("train_error", "flip_frac")  # fractions of n and of n * m: may differ by one count
# Runs argv[1:] and prints its wall seconds and ru_maxrss (KiB, Linux). A small process of its
# own, because a child forked by this large one reports this one's RSS as its peak (Linux keeps
# the high-water mark of the pre-exec memory across exec).
LAUNCHER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
            "print(time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "sys.exit(rc)")


class ChildFailed(RuntimeError):
    """A benchmark's child process exited non-zero (the message: its command, its stderr)."""


def run_child(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of `cmd`, run in its own process by LAUNCHER."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise ChildFailed(f"{' '.join(cmd)} failed (exit {out.returncode}):\n"
                          f"{out.stderr[-4000:]}")
    wall, maxrss_kib = out.stdout.split()
    return float(wall), int(maxrss_kib) / 1024


def run_overparam(spec: dict, out: Path, cache: Path, *extra: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the real CLI on sweep `spec`, with the
    persistent compilation cache in `cache`."""
    args = [f"--config.widths={tuple(spec['widths'])}", f"--config.num_seeds={spec['num_seeds']}",
            f"--config.n=({spec['n']},)", f"--config.d={spec['d']}",
            f"--config.steps={spec['steps']}", f"--config.lr=({spec['lr']},)",
            "--config.gram_every=0", "--config.n_test=0", "--config.chunk_steps=100",
            "--progress=false",
            f"--compilation_cache={cache}", f"--out={out}", *extra]
    return run_child([sys.executable, "-m", "overparam.sweep", "--config=sweeps/default.py",
                      *args], env={**os.environ, "JAX_PLATFORMS": "cpu"})


def run_json(script: str, *args: str) -> dict:
    """The JSON a benchmarks/ script prints with --json, run in its own process."""
    out = subprocess.run([sys.executable, str(Path(__file__).with_name(script)), "--json",
                          *args], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if out.returncode:
        raise ChildFailed(f"{script} {' '.join(args)} failed (exit {out.returncode}):\n"
                          f"{out.stderr[-4000:]}")
    return json.loads(out.stdout)


def initial_networks(runs: list[config_lib.Run], datasets: dict) -> list[np.ndarray]:
    """W0 (S, m, d), a (S, m), X (S, n, d), y (S, n) of `runs` (one width), as overparam
    draws them."""
    r = runs[0]
    static = train.Static(width=r.width, depth=1, n=r.n, d=r.d, batch_size=r.n,
                          loss="squared", optimizer="gd", param="du")
    hyper = trainstate.RunScalars(*(jnp.asarray(np.array([getattr(run, f) for run in runs], dtype))
                                    for f, dtype in (("seed", np.uint32), ("init_tag", np.uint32),
                                                     ("batch_tag", np.uint32), ("lr", np.float32),
                                                     ("output_scale", np.float32))))
    X = np.stack([datasets[run.dataset_id][0] for run in runs]).astype(np.float32)
    y = np.stack([datasets[run.dataset_id][1] for run in runs]).astype(np.float32)
    init = lambda h, x: initial.init_single(static, h, trainstate.Data(x, None)).net0
    net0 = jax.jit(jax.vmap(init))(hyper, X)
    return [np.asarray(net0.hidden[0]), np.asarray(net0.out), X, y]


def by_width(spec: dict, runs: list[config_lib.Run], per_width: int) -> list[list]:
    """The first `per_width` runs of each width (one step size per width)."""
    groups = [[r for r in runs if r.width == w][:per_width] for w in spec["widths"]]
    assert all(len({r.lr for r in g}) == 1 for g in groups)
    return groups


def check_agreement(results, spec, runs, datasets, names):
    """All metrics of each peer against overparam's records, CHECK_NETWORKS per width."""
    steps = results.steps.set_index(["run_id", "step"]).sort_index()
    layers = results.layers.set_index(["run_id", "step"]).sort_index()
    check_steps = min(CHECK_STEPS, spec["steps"])
    for group in by_width(spec, runs, CHECK_NETWORKS):
        rec = np.stack([np.stack([(steps if k in steps else layers).loc[r.run_id, k].to_numpy()
                                  for k in peers.METRICS], -1)[:check_steps + 1] for r in group])
        inputs = initial_networks(group, datasets)
        n, m = inputs[2].shape[1], inputs[0].shape[1]
        for name in names:
            got = peers.PEERS[name].train(*inputs, check_steps, group[0].lr)
            for i, k in enumerate(peers.METRICS):
                if k in DISCRETE:
                    count = 1 / n if k == "train_error" else 1 / (n * m)
                    np.testing.assert_allclose(got[..., i], rec[..., i], rtol=0, atol=1.01 * count,
                                               err_msg=f"{name} {k} m={m}")
                else:
                    np.testing.assert_allclose(got[..., i], rec[..., i], rtol=2e-4, atol=1e-6,
                                               err_msg=f"{name} {k} m={m}")
    print(f"  {', '.join(names)}: all metrics agree with overparam over {check_steps} steps "
          f"(up to {CHECK_NETWORKS} networks per width; rtol 2e-4, the fractions to one "
          "count)")


def time_peer(name, spec, runs, datasets, per_width, tmp: Path) -> tuple[float, float, int]:
    """Network-steps/s, peak RSS (MiB) and networks trained of peer `name` in its own
    process, on the first `per_width` networks of each width."""
    groups = by_width(spec, runs, per_width)
    arrays = {"steps": spec["steps"], "groups": len(groups)}
    for i, group in enumerate(groups):
        arrays.update({f"{k}{i}": v for k, v in
                       zip(("W0", "a", "X", "y"), initial_networks(group, datasets))})
        arrays[f"lr{i}"] = group[0].lr
    np.savez(tmp / f"{name}.npz", **arrays)
    _, rss = run_child([sys.executable, str(Path(__file__).with_name("peers.py")), name,
                        str(tmp / f"{name}.npz"), str(tmp / f"{name}.json")])
    timing = json.loads((tmp / f"{name}.json").read_text())
    return timing["network_steps"] / timing["seconds"], rss, sum(map(len, groups))


def _spread(values: list[float]) -> str:
    return f"{np.median(values):.1f}x [{min(values):.1f}, {max(values):.1f}]"


def compile_share(config: str, tmp: Path, fields: dict | None = None) -> tuple[float, float]:
    """(compile seconds, wall seconds) of a first run of `config` (with `fields` set over
    its own), empty cache."""
    out = tmp / f"compile-{Path(config.split(':')[0]).stem}"
    wall, _ = run_child([sys.executable, "-m", "overparam.sweep", f"--config={config}",
                         *(f"--config.{k}={v}" for k, v in (fields or {}).items()),
                         "--progress=false", f"--compilation_cache={out}-cache",
                         f"--out={out}"], env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return overparam.load(out).manifest["timings"]["compile"], wall


def main() -> None:
    try:
        run(parse_args())
    except ChildFailed as e:
        sys.exit(f"bench.py: {e}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true",
                        help="toy sizes, one round, seconds (what tests run)")
    parser.add_argument("--quick", action="store_true", help="8 seeds, 100 steps")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3)")
    parser.add_argument("--seq_networks", type=int, default=2,
                        help="networks per width timed in each sequential loop")
    parser.add_argument("--no_compile", action="store_true", help="skip the compile section")
    parser.add_argument("--flax_only", action="store_true",
                        help="only overparam's mlp and its flax twin (no peers, no compile)")
    opts = parser.parse_args()
    if opts.smoke:
        opts.rounds, opts.seq_networks = 1, 1
    return opts


def run(opts: argparse.Namespace) -> None:
    spec = SMOKE if opts.smoke else QUICK if opts.quick else R
    smoke = ("--smoke",) if opts.smoke else ()
    print(f"machine: {jax.devices()[0].device_kind}, {os.cpu_count()} cores; sweep {spec}; "
          f"{opts.rounds} interleaved rounds")
    names = [] if opts.flax_only else ["jax-seq"]
    try:
        import torch

        names += [] if opts.flax_only else ["torch-seq", "torch-func"]
        print(f"  torch {torch.__version__}, {torch.get_num_threads()} threads")
    except ImportError:
        print("  torch not installed: torch-seq and torch-func skipped "
              "(pip install -e '.[bench]')")
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for k in range(opts.rounds):
            row = {"gemm": run_json("gemm.py", *smoke)}
            out, cache = tmp / f"r{k}", tmp / f"cache{k}"
            wall, rss = run_overparam(spec, out, cache)
            results = overparam.load(out)
            runs = config_lib.expand(config_lib.validate(results.manifest["config"]))
            steps = len(runs) * spec["steps"]
            row["overparam"] = (steps / wall, rss, len(runs))
            row["compile"] = results.manifest["timings"]["compile"]
            row["wall"] = wall
            wall, rss = run_overparam(spec, out, cache, "--overwrite")
            row["overparam-warm"] = (steps / wall, rss, len(runs))
            row["compile-warm"] = overparam.load(out).manifest["timings"]["compile"]
            flax_out, flax_cache = tmp / f"f{k}", tmp / f"fcache{k}"
            for name, extra in (("flax-mlp", ()), ("flax-mlp-warm", ("--overwrite",))):
                wall, rss = run_overparam(spec, flax_out, flax_cache, FLAX_MLP, *extra)
                row[name] = (steps / wall, rss, len(runs))
            datasets = {r.dataset_id: results.dataset(r.dataset_id) for r in runs}
            if k == 0:
                check_agreement(results, spec, runs, datasets, names)
            for name in names:
                per_width = (opts.seq_networks if peers.PEERS[name].sequential
                             else spec["num_seeds"])
                row[name] = time_peer(name, spec, runs, datasets, per_width, tmp)
            if not opts.flax_only:
                row["overhead"] = run_json("overhead.py", *smoke)
            rounds.append(row)
            print(f"  round {k + 1}: " + ", ".join(
                f"{m} {row[m][0]:,.0f}" for m in ("overparam", "overparam-warm", *FLAX, *names))
                + " network-steps/s")
        if not opts.no_compile and not opts.flax_only:
            fields = compile_cost.SMOKE if opts.smoke else None
            shares = {c: compile_share(c, tmp, fields)
                      for c in COMPILE_CONFIGS[:1 if opts.smoke else None]}
            costs = run_json("compile_cost.py", "--config=sweeps/default.py", *smoke)
    report(rounds, names, None if opts.no_compile or opts.flax_only else (shares, costs),
           overhead=not opts.flax_only)


FLAX_MLP = "--config.arch=overparam.modules:MLP"
FLAX = ("flax-mlp", "flax-mlp-warm")


def report(rounds: list[dict], names: list[str], compile_section, overhead=True) -> None:
    methods = ["overparam", "overparam-warm", *FLAX, *names]
    print(f"\n{'method':15s} {'networks':>9s} {'network-steps/s':>16s} {'peak RSS':>9s}   "
          f"overparam (cold) is   overparam (warm) is")
    for m in methods:
        rate = np.median([r[m][0] for r in rounds])
        rss = np.median([r[m][1] for r in rounds])
        cold = [r["overparam"][0] / r[m][0] for r in rounds]
        warm = [r["overparam-warm"][0] / r[m][0] for r in rounds]
        print(f"{m:15s} {rounds[0][m][2]:9d} {rate:16,.0f} {rss:7,.0f}MiB   "
              f"{_spread(cold):>19s}   {_spread(warm):>19s}")
    compile_s = [r["compile"] for r in rounds]
    share = [r["compile"] / r["wall"] for r in rounds]
    print(f"overparam compile (cold): {np.median(compile_s):.1f} s "
          f"[{min(compile_s):.1f}, {max(compile_s):.1f}], {np.median(share):.0%} "
          f"[{min(share):.0%}, {max(share):.0%}] of the cold wall time "
          f"({np.median([r['wall'] for r in rounds]):.1f} s); warm "
          f"{np.median([r['compile-warm'] for r in rounds]):.1f} s")
    cold = [r["flax-mlp"][0] / r["overparam"][0] for r in rounds]
    warm = [r["flax-mlp-warm"][0] / r["overparam-warm"][0] for r in rounds]
    ratio = lambda v: f"{np.median(v):.3f} [{min(v):.3f}, {max(v):.3f}]"
    print(f"the MLP's flax twin (arch=overparam.modules:MLP) against arch=mlp, network-steps/s: "
          f"cold {ratio(cold)}, warm {ratio(warm)} (1.000: as fast)")
    gemm = {k: np.median([r["gemm"][k] for r in rounds]) for k in ("numpy", "xla")}
    print(f"\nfloat32 GEMM {rounds[0]['gemm']['size']}^3 (median of rounds): "
          f"NumPy {gemm['numpy']:.0f}, XLA {gemm['xla']:.0f} GFLOP/s")
    if not overhead:
        return
    print(f"{'step (overhead.py)':18s} {'loss only':>10s} {'overparam':>10s} "
          f"{'metrics overhead':>22s} {'GFLOP/s':>8s} {'of best GEMM':>18s}")
    for i, case in enumerate(rounds[0]["overhead"]["cases"]):
        cs = [r["overhead"]["cases"][i] for r in rounds]
        over = [c["overhead"] for c in cs]
        frac = [c["of_best_gemm"] for c in cs]
        print(f"{case['case']:18s} {np.median([c['loss_only_ms'] for c in cs]):8.2f}ms "
              f"{np.median([c['overparam_ms'] for c in cs]):8.2f}ms "
              f"{np.median(over):10.0%} [{min(over):.0%}, {max(over):.0%}] "
              f"{np.median([c['gflops'] for c in cs]):8.1f} "
              f"{np.median(frac):8.0%} [{min(frac):.0%}, {max(frac):.0%}]")
    if compile_section:
        shares, costs = compile_section
        print("\ncompile share of a first sweep (empty cache):")
        for config, (c, wall) in shares.items():
            print(f"  {config}: compile {c:.1f} s of {wall:.1f} s wall ({c / wall:.0%})")
        print("  sweeps/default.py per program (trace / lower / XLA compile, s):")
        print("\n".join("    " + line for line in compile_cost.describe(costs)))


if __name__ == "__main__":
    main()
