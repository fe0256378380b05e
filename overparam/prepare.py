"""Everything computed on the host before training, as one value: `Prepared`.

Owns the sweep's runs (with resolved step sizes), its training sets, the
infinite-width NTK limits H^inf with their extreme eigenvalues (`ntk_limits`),
and the plan; and the per-network arrays of a batch (`Prepared.batch_arrays`:
its keys, `trainstate.RunScalars` and `trainstate.Data`). The formulas are `overparam.theory`'s. It
never writes a file and never compiles a training program (the planner
measures memory through `programs.Executables`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os

import jax
import numpy as np

from overparam import config as config_lib
from overparam import data as data_lib
from overparam import multihost, programs, resultsdir, store, theory, train, trainstate
from overparam import plan as plan_lib


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A sweep ready to train.

    runs: every Run, step sizes resolved; datasets / idents: each training set (with
    its test points) and its identity, by dataset id; H_inf: H^inf in the sweep's dtype,
    by `ntk_limit_key`, only with Gram tracking; eigenvalues: [lambda_min, lambda_max]
    (float64) of each H^inf; arora: Arora et al.'s measure sqrt(2 y^T (H^inf)^-1 y / n)
    of each; plan: the batches (None on a process that reads the leader's plan).
    """

    runs: list[config_lib.Run]
    datasets: dict[str, data_lib.Dataset]
    idents: dict[str, dict]
    H_inf: dict[tuple, np.ndarray]
    eigenvalues: dict[tuple, np.ndarray]
    arora: dict[tuple, float]
    plan: plan_lib.Plan | None

    def lambda0(self, sweep: config_lib.Sweep, run: config_lib.Run) -> float:
        """lambda_min(H^inf) of the run's training set and architecture."""
        return float(self.eigenvalues[ntk_limit_key(run, sweep.train_output)][0])

    def arora_bound(self, sweep: config_lib.Sweep, run: config_lib.Run) -> float:
        """sqrt(2 y^T (H^inf)^-1 y / n) of the run's training set and architecture."""
        return self.arora[ntk_limit_key(run, sweep.train_output)]

    def batch_arrays(self, batch: plan_lib.Batch, dtype) -> tuple[
            trainstate.Keys, trainstate.RunScalars, trainstate.Data]:
        """A batch's per-network arrays, NumPy, in `dtype` but the uint32 keys and tags:
        its keys, its scalars and its data (X, y; X_test, y_test where the program has
        test points; H_inf where its programs take it, train.takes_h_inf; None otherwise)."""
        runs = batch.runs
        scalars = trainstate.RunScalars(
            seed=np.asarray([r.seed for r in runs], np.uint32),
            init_tag=np.asarray([r.init_tag for r in runs], np.uint32),
            batch_tag=np.asarray([r.batch_tag for r in runs], np.uint32),
            lr=np.asarray([r.lr for r in runs], dtype),
            output_scale=np.asarray([r.output_scale for r in runs], dtype))
        sets = [self.datasets[r.dataset_id] for r in runs]
        X, y, X_test, y_test = (np.stack([getattr(ds, k) for ds in sets])
                                for k in ("X", "y", "X_test", "y_test"))
        if not batch.static.n_test:
            X_test = y_test = None
        H = None
        if train.takes_h_inf(batch.static):
            H = np.stack([self.H_inf[ntk_limit_key(r, batch.static.train_output)]
                          for r in runs]).astype(dtype)
        data = trainstate.Data(X=X, y=y, H_inf=H, X_test=X_test, y_test=y_test)
        return trainstate.batch_keys(scalars), scalars, data


def prepare(sweep: config_lib.Sweep, mode: str, manifest: dict,
            compiled: programs.Executables) -> Prepared:
    """Runs, datasets, the NTK limits H^inf and the plan: the manifest's for a resumed or complete
    sweep, a new one measured on `compiled` for the leader of a new sweep."""
    runs = config_lib.expand(sweep)
    datasets, idents = make_datasets(sweep)
    H_inf, eigenvalues, arora = ntk_limits(sweep, runs, datasets)
    runs = resolve_theory_lr(sweep, runs, eigenvalues)
    if mode in ("resume", "complete"):  # a resumed sweep keeps its batches
        plan = plan_of_manifest(sweep, runs, manifest)
    elif multihost.is_leader():
        plan = plan_lib.make_plan(sweep, runs, multiple_of=len(jax.local_devices()),
                                  measure=compiled.memory, cache_bytes=programs.cache_bytes(),
                                  fixed_loops=programs.fixed_loops())
    else:
        plan = None  # the leader's plan is read from the manifest it writes
    return Prepared(runs, datasets, idents, H_inf, eigenvalues, arora, plan)


MAX_LOCAL_DEVICES = 1024  # a bound on a manifest's batch_multiple_of (its local devices)


def plan_of_manifest(sweep: config_lib.Sweep, runs, manifest: dict) -> plan_lib.Plan:
    """The plan a manifest was written with: its batch sizes and budget, whatever the
    devices say now (a resumed sweep, and every process but the leader).

    The manifest's fields have their types (store.check_manifest); its groups are checked
    here against the sweep's shapes before any batch is built: one per shape, each size a
    multiple of batch_multiple_of and at most the planner's largest batch for that shape
    (resultsdir.OutError otherwise), so a damaged manifest cannot make a batch larger than
    the planner would."""
    cache_bytes = programs.cache_bytes()
    multiple_of, groups = manifest["batch_multiple_of"], manifest["groups"]
    where = f"{store.MANIFEST} of the sweep"
    if multiple_of > MAX_LOCAL_DEVICES:
        raise resultsdir.OutError(f"{where}: batch_multiple_of: {multiple_of} is more local "
                                  f"devices than {MAX_LOCAL_DEVICES}")
    fixed_loops = programs.fixed_loops()
    _, chunk_records, _ = plan_lib.sweep_chunking(sweep, fixed_loops)
    counts = collections.Counter(plan_lib.static_for(sweep, r, chunk_records, fixed_loops)
                                 for r in runs)
    if len(groups) != len(counts):
        raise resultsdir.OutError(f"{where}: groups: {len(groups)} groups for the sweep's "
                                  f"{len(counts)} shapes")
    for g, (static, count) in enumerate(counts.items()):  # make_plan's order of shapes
        cap = plan_lib.cache_group_size(static, cache_bytes)
        step = math.lcm(multiple_of, cap) if cap and count > cap else multiple_of
        most, size = math.ceil(count / step) * step, groups[g]["size"]
        if size > most or size % multiple_of:
            raise resultsdir.OutError(f"{where}: groups[{g}].size: {size} is not a batch size "
                                      f"the planner gives {count} networks (a multiple of "
                                      f"{multiple_of}, at most {most})")
    return plan_lib.make_plan(sweep, runs, budget_mb=manifest["memory_budget_mb"],
                              multiple_of=multiple_of, groups=groups, cache_bytes=cache_bytes,
                              fixed_loops=fixed_loops)


def ntk_limit_key(run: config_lib.Run, train_output: bool) -> tuple:
    """The key of a run's H^inf and its eigenvalues in `ntk_limits`' dictionaries."""
    return (run.dataset_id, run.arch, run.param, run.depth, train_output)


def ntk_limits(sweep: config_lib.Sweep, runs, datasets) -> tuple[dict[tuple, np.ndarray],
                                                                dict[tuple, np.ndarray],
                                                                dict[tuple, float]]:
    """H^inf (normalized as `theory.gram_inf`, in the sweep's dtype) of every training set
    and architecture, kept only where Gram tracking compares against it, its extreme
    eigenvalues [lambda_min, lambda_max] (float64; the runs table records lambda_min,
    lr='theory' uses lambda_max) and `theory.arora_bound` of its labels (float64, a solve).
    Only the mlp has an analytic kernel: the other archs' eigenvalues and measure are NaN.

    One task per kernel on a thread pool as wide as the host: LAPACK releases
    the GIL, and each task runs on one BLAS thread (overparam/__init__.py), so
    a sweep of many training sets uses every core.
    """
    todo = {}
    for r in runs:
        todo.setdefault(ntk_limit_key(r, sweep.train_output), r)

    def one(run):
        if run.arch != "mlp":
            return np.full(2, np.nan), float("nan"), None
        ds = datasets[run.dataset_id]
        H = theory.gram_inf(ds.X.astype(np.float64), param=run.param, depth=run.depth,
                            train_output=sweep.train_output)
        return (theory.extreme_eigenvalues(H), theory.arora_bound(H, ds.y),
                H.astype(sweep.dtype) if sweep.gram_every or sweep.infinite_width else None)

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        done = dict(zip(todo, pool.map(one, todo.values())))
    eigenvalues = {key: e for key, (e, _, _) in done.items()}
    arora = {key: a for key, (_, a, _) in done.items()}
    H_inf = {key: H for key, (_, _, H) in done.items() if H is not None}
    return H_inf, eigenvalues, arora


def resolve_theory_lr(sweep: config_lib.Sweep, runs, eigenvalues) -> list[config_lib.Run]:
    """Runs with lr 'theory' get `theory.theory_step_size` of their H^inf.

    eigenvalues: [lambda_min, lambda_max] of each H^inf, keyed as `ntk_limits`.
    """
    resolved = []
    for r in runs:
        if r.lr_spec == "theory":
            lam_max = eigenvalues[ntk_limit_key(r, sweep.train_output)][-1]
            r = dataclasses.replace(r, lr=theory.theory_step_size(
                lam_max, param=r.param, width=r.width, depth=r.depth,
                train_output=sweep.train_output, reduction=sweep.reduction, n=r.n))
        resolved.append(r)
    return resolved


def make_datasets(sweep: config_lib.Sweep) -> tuple[dict[str, data_lib.Dataset],
                                                    dict[str, dict]]:
    """Every training set of the sweep with its held-out points, keyed by dataset id, and
    their identities."""
    datasets, idents = {}, {}
    for seed in range(sweep.seed, sweep.seed + sweep.num_seeds):
        for n in sweep.n:
            for task in config_lib.tasks(sweep):
                ident = config_lib.data_identity(sweep, seed=seed, n=n, task=task)
                did = config_lib.dataset_id(ident)
                if did not in datasets:
                    n_test = config_lib.held_out_points(sweep, n, task)
                    datasets[did] = data_lib.make_dataset(ident, n_test)
                    idents[did] = ident
    return datasets, idents
