"""make bench: overparam against the loops a researcher would write by hand.

    python benchmarks/bench.py [--quick] [--seq_networks=2]

Reference sweep R (issue 6): du, widths (64, 256, 1024), depth 1, 64 seeds
each, n = 128, d = 32, squared loss, 300 GD steps (eta = 0.1), every metric
every step. Four ways, on the same machine, in one invocation:

  overparam    the real command line (plan, compile, train, write Parquet), cold
               compilation cache; throughput includes start-up, compile and writing
  jax-seq      one network at a time, metrics pulled to the host every step
  torch-seq    the same in PyTorch (CPU build)
  torch-func   a PyTorch ensemble: all seeds of one width at once through
               torch.func (vmap of grad over stack_module_state), the metrics of
               all networks pulled to the host as one batch per step

(the peers are in benchmarks/peers.py; the torch ones are skipped if torch is
missing). All compute the same metrics (loss, error, grad norm, spectral /
Frobenius / row-max radius, flips over the training set), and every peer is
checked against overparam's records, all seven metrics, on the first networks
of each width (shared seeds and initializations) before anything is timed.

Each method runs in its own process; its peak RSS is that process's
ru_maxrss (Linux), read by a small launcher process (LAUNCHER). The
sequential loops are timed on `seq_networks` networks per width and their rate
is extrapolated (they hold one network at a time, so their RSS does not grow
with the number of networks); torch-func and overparam train the whole sweep.
Peer times include compilation but not the imports or process start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import peers

import overparam
from overparam import config as config_lib
from overparam import train

ROOT = Path(__file__).resolve().parents[1]
R = dict(widths=(64, 256, 1024), num_seeds=64, n=128, d=32, steps=300, lr=0.1)
QUICK = dict(widths=(64, 256, 1024), num_seeds=8, n=128, d=32, steps=100, lr=0.1)
CHECK_NETWORKS, CHECK_STEPS = 4, 20  # per width, in the agreement check
DISCRETE = ("train_error", "flip_frac")  # fractions of n and of n * m: may differ by one count
# Runs argv[1:] and prints its wall seconds and ru_maxrss (KiB, Linux). A small process of its
# own, because a child forked by this large one reports this one's RSS as its peak (Linux keeps
# the high-water mark of the pre-exec memory across exec).
LAUNCHER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
            "print(time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "sys.exit(rc)")


def run_child(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of `cmd`, run in its own process by LAUNCHER."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    wall, maxrss_kib = out.stdout.split()
    return float(wall), int(maxrss_kib) / 1024


def run_overparam(spec: dict, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the real CLI on sweep `spec` (cold cache)."""
    args = [f"--config.widths={tuple(spec['widths'])}", f"--config.num_seeds={spec['num_seeds']}",
            f"--config.n=({spec['n']},)", f"--config.d={spec['d']}",
            f"--config.steps={spec['steps']}", f"--config.lr=({spec['lr']},)",
            "--config.gram_every=0", "--config.chunk_steps=100", "--progress=false",
            "--compilation_cache=", f"--out={out}"]
    return run_child([sys.executable, "-m", "overparam.sweep", "--config=sweeps/default.py",
                      *args], env={**os.environ, "JAX_PLATFORMS": "cpu"})


def initial_networks(runs: list[config_lib.Run], datasets: dict) -> list[np.ndarray]:
    """W0 (S, m, d), a (S, m), X (S, n, d), y (S, n) of `runs` (one width), as overparam
    draws them."""
    r = runs[0]
    static = train.Static(width=r.width, depth=1, n=r.n, d=r.d, batch_size=r.n,
                          loss="squared", optimizer="gd", param="du")
    hyper = train.Hyper(*(jnp.asarray(np.array([getattr(run, f) for run in runs], dtype))
                          for f, dtype in (("seed", np.uint32), ("init_tag", np.uint32),
                                           ("batch_tag", np.uint32), ("lr", np.float32))))
    X = np.stack([datasets[run.dataset_id][0] for run in runs]).astype(np.float32)
    y = np.stack([datasets[run.dataset_id][1] for run in runs]).astype(np.float32)
    net0 = jax.jit(jax.vmap(lambda h, x: train.init_single(static, h, x).net0))(hyper, X)
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
    for group in by_width(spec, runs, CHECK_NETWORKS):
        rec = np.stack([np.stack([(steps if k in steps else layers).loc[r.run_id, k].to_numpy()
                                  for k in peers.METRICS], -1)[:CHECK_STEPS + 1] for r in group])
        inputs = initial_networks(group, datasets)
        n, m = inputs[2].shape[1], inputs[0].shape[1]
        for name in names:
            got = peers.PEERS[name].train(*inputs, CHECK_STEPS, group[0].lr)
            for i, k in enumerate(peers.METRICS):
                if k in DISCRETE:
                    count = 1 / n if k == "train_error" else 1 / (n * m)
                    np.testing.assert_allclose(got[..., i], rec[..., i], rtol=0, atol=1.01 * count,
                                               err_msg=f"{name} {k} m={m}")
                else:
                    np.testing.assert_allclose(got[..., i], rec[..., i], rtol=2e-4, atol=1e-6,
                                               err_msg=f"{name} {k} m={m}")
    print(f"  {', '.join(names)}: all metrics agree with overparam over {CHECK_STEPS} steps "
          f"({CHECK_NETWORKS} networks per width; rtol 2e-4, the fractions to one count)")


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="8 seeds, 100 steps")
    parser.add_argument("--seq_networks", type=int, default=2,
                        help="networks per width timed in each sequential loop")
    opts = parser.parse_args()
    spec = QUICK if opts.quick else R
    print(f"machine: {jax.devices()[0].device_kind}, {os.cpu_count()} cores; sweep {spec}")
    names = ["jax-seq"]
    try:
        import torch

        names += ["torch-seq", "torch-func"]
        print(f"  torch {torch.__version__}, {torch.get_num_threads()} threads")
    except ImportError:
        print("  torch not installed: torch-seq and torch-func skipped "
              "(pip install -e '.[bench]')")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wall, rss = run_overparam(spec, tmp / "r")
        results = overparam.load(tmp / "r")
        t, groups = results.manifest["timings"], results.manifest["groups"]
        print(f"  overparam: {wall:.1f} s wall, of which compile {t['compile']:.1f} s "
              f"({results.manifest['num_compiles']} programs, cold cache); largest batch "
              f"{max(g['memory_bytes'] for g in groups) / 2**20:,.0f} MiB by XLA's memory "
              "analysis")
        runs = config_lib.expand(config_lib.validate(results.manifest["config"]))
        datasets = {r.dataset_id: results.dataset(r.dataset_id) for r in runs}
        check_agreement(results, spec, runs, datasets, names)
        rows = {"overparam": (len(runs) * spec["steps"] / wall, rss, len(runs))}
        for name in names:
            per_width = opts.seq_networks if peers.PEERS[name].sequential else spec["num_seeds"]
            rows[name] = time_peer(name, spec, runs, datasets, per_width, tmp)
    print(f"\n{'method':12s} {'networks timed':>15s} {'network-steps/s':>16s} "
          f"{'overparam is':>13s} {'peak RSS (MiB)':>15s}")
    for name, (rate, rss, networks) in rows.items():
        print(f"{name:12s} {networks:15d} {rate:16,.0f} {rows['overparam'][0] / rate:12.1f}x "
              f"{rss:15,.0f}")


if __name__ == "__main__":
    main()
