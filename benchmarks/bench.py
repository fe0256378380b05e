"""make bench: overparam against the loops a researcher would write by hand.

    python benchmarks/bench.py [--quick] [--seq_networks=2]

Reference sweep R (issue 6): du, widths (64, 256, 1024), depth 1, 64 seeds
each, n = 128, d = 32, squared loss, 300 GD steps (eta = 0.1), every metric
every step. Three ways, on the same machine, in one invocation:

  overparam    the real command line (plan, compile, train, write Parquet), cold
               compilation cache; throughput includes compile and writing
  jax-seq      one network at a time: a jitted GD step, then every metric pulled
               to the host with float() every step, spectral norm by
               jnp.linalg.norm(D, 2)
  torch-seq    the same in PyTorch (CPU build; skipped if torch is missing)

The sequential loops are timed on `seq_networks` networks per width (compile
included) and their rate is extrapolated. All three compute the same metrics
(loss, error, grad norm, spectral / Frobenius / row-max radius, flips over the
training set), and the loops are checked against overparam's records on a
shared seed and initialization before anything is timed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import overparam
from overparam import config as config_lib
from overparam import train

ROOT = Path(__file__).resolve().parents[1]
R = dict(widths=(64, 256, 1024), num_seeds=64, n=128, d=32, steps=300, lr=0.1)
QUICK = dict(widths=(64, 256, 1024), num_seeds=8, n=128, d=32, steps=100, lr=0.1)


def run_overparam(spec: dict, out: Path) -> float:
    """Wall seconds of the real CLI on sweep `spec` (cold compilation cache)."""
    args = [f"--config.widths={tuple(spec['widths'])}", f"--config.num_seeds={spec['num_seeds']}",
            f"--config.n=({spec['n']},)", f"--config.d={spec['d']}",
            f"--config.steps={spec['steps']}", f"--config.lr=({spec['lr']},)",
            "--config.gram_every=0", "--config.chunk_steps=100", "--progress=false",
            "--compilation_cache=", f"--out={out}"]
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "overparam.sweep", "--config=sweeps/default.py",
                    *args], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return time.perf_counter() - t


def initial_network(spec: dict, run: config_lib.Run, X: np.ndarray):
    """W(0) (m, d) and a (m,) of `run`, exactly as overparam draws them."""
    static = train.Static(width=run.width, depth=1, n=run.n, d=run.d, batch_size=run.n,
                          loss="squared", optimizer="gd", param="du")
    hyper = train.Hyper(*(jnp.asarray(v) for v in (np.uint32(run.seed), np.uint32(run.init_tag),
                                                     np.uint32(run.batch_tag),
                                                     np.float32(run.lr))))
    net0 = jax.jit(lambda h, x: train.init_single(static, h, x).net0)(hyper, jnp.asarray(X))
    return np.asarray(net0.hidden[0]), np.asarray(net0.out)


# ---------------------------------------------------------------- sequential JAX


def jax_sequential(W0, a, X, y, steps, lr, tol=1e-2):
    """One network, metrics pulled every step. Returns (loss list, spectral list)."""
    m = W0.shape[0]
    hp = jax.lax.Precision.HIGHEST

    def loss_fn(W):
        z = jnp.matmul(X, W.T, precision=hp)
        f = jnp.matmul(jax.nn.relu(z), a, precision=hp) / jnp.sqrt(m)
        return 0.5 * jnp.sum((f - y) ** 2), (f, z)

    @jax.jit
    def step(W):
        (loss, (f, z)), g = jax.value_and_grad(loss_fn, has_aux=True)(W)
        return W - lr * g, loss, f, z, g

    W0, a, X, y = map(jnp.asarray, (W0, a, X, y))
    pattern0 = jnp.matmul(X, W0.T, precision=hp) > 0
    W, losses, radii = W0, [], []
    for _ in range(steps + 1):
        W_next, loss, f, z, g = step(W)
        D = W - W0
        losses.append(float(loss))
        float(jnp.mean(jnp.abs(f - y) > tol))                 # train error
        float(jnp.linalg.norm(g))                             # grad norm
        radii.append(float(jnp.linalg.norm(D, 2)))            # spectral radius
        float(jnp.linalg.norm(D))                             # Frobenius radius
        float(jnp.max(jnp.linalg.norm(D, axis=1)))            # row-max radius
        float(jnp.mean((z > 0) != pattern0))                  # flips
        W = W_next
    return losses, radii


# ---------------------------------------------------------------- sequential PyTorch


def torch_sequential(W0, a, X, y, steps, lr, tol=1e-2):
    import torch

    m = W0.shape[0]
    W0, a, X, y = (torch.tensor(v, dtype=torch.float32) for v in (W0, a, X, y))
    W = W0.clone().requires_grad_(True)
    pattern0 = (X @ W0.T) > 0
    losses, radii = [], []
    for _ in range(steps + 1):
        z = X @ W.T
        f = torch.relu(z) @ a / m**0.5
        loss = 0.5 * torch.sum((f - y) ** 2)
        (g,) = torch.autograd.grad(loss, W)
        with torch.no_grad():
            D = W - W0
            losses.append(float(loss))
            float(torch.mean(((f - y).abs() > tol).float()))
            float(torch.linalg.norm(g))
            radii.append(float(torch.linalg.matrix_norm(D, ord=2)))
            float(torch.linalg.norm(D))
            float(torch.max(torch.linalg.norm(D, dim=1)))
            float(torch.mean(((z > 0) != pattern0).float()))
            W -= lr * g
    return losses, radii


def time_sequential(fn, spec, runs, datasets, per_width):
    """Network-steps per second of `fn` over `per_width` networks of each width."""
    chosen = [r for w in spec["widths"] for r in [r for r in runs if r.width == w][:per_width]]
    t = time.perf_counter()
    for r in chosen:
        X, y = datasets[r.dataset_id]
        fn(*initial_network(spec, r, X), X, y, spec["steps"], r.lr)
    return len(chosen) * spec["steps"] / (time.perf_counter() - t)


def check_agreement(results, spec, runs, datasets, fns):
    """Loss and spectral radius of each loop against overparam's records, first run."""
    run = runs[0]
    rec = results.steps[results.steps.run_id == run.run_id].sort_values("step")
    lay = results.layers[results.layers.run_id == run.run_id].sort_values("step")
    X, y = datasets[run.dataset_id]
    for name, fn in fns.items():
        losses, radii = fn(*initial_network(spec, run, X), X, y, 20, run.lr)
        np.testing.assert_allclose(losses, rec.loss.to_numpy()[:21], rtol=2e-4, err_msg=name)
        np.testing.assert_allclose(radii, lay.radius_spectral.to_numpy()[:21], rtol=2e-4,
                                   atol=1e-6, err_msg=name)
        print(f"  {name}: loss and spectral radius agree with overparam over 20 steps")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="8 seeds, 100 steps")
    parser.add_argument("--seq_networks", type=int, default=2,
                        help="networks per width timed in each sequential loop")
    opts = parser.parse_args()
    spec = QUICK if opts.quick else R
    print(f"machine: {jax.devices()[0].device_kind}, {os.cpu_count()} cores; sweep {spec}")
    with tempfile.TemporaryDirectory() as tmp:
        wall = run_overparam(spec, Path(tmp) / "r")
        results = overparam.load(Path(tmp) / "r")
        runs = config_lib.expand(config_lib.validate(results.manifest["config"]))
        datasets = {r.dataset_id: results.dataset(r.dataset_id) for r in runs}
    fns = {"jax-seq": jax_sequential}
    try:
        import torch  # noqa: F401

        fns["torch-seq"] = torch_sequential
    except ImportError:
        print("  torch not installed: torch-seq skipped (pip install -e '.[bench]')")
    check_agreement(results, spec, runs, datasets, fns)
    rates = {"overparam": len(runs) * spec["steps"] / wall}
    for name, fn in fns.items():
        rates[name] = time_sequential(fn, spec, runs, datasets, opts.seq_networks)
    print(f"\n{'method':12s} {'network-steps/s':>16s} {'overparam is':>14s}")
    for name, rate in rates.items():
        print(f"{name:12s} {rate:16,.0f} {rates['overparam'] / rate:13.1f}x")


if __name__ == "__main__":
    main()
