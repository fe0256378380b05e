"""Runs a planned sweep: compile per shape, train chunk by chunk, write Parquet.

Data flow: Sweep -> runs -> datasets -> Plan -> for each batch: compiled
init, then chunks whose records leave the device once per chunk and are
written by a background thread while the next chunk computes -> runs.parquet
and manifest.json at the end.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from absl import logging

from overparam import checkpoint, interrupt, multihost, store, theory, train
from overparam import config as config_lib
from overparam import data as data_lib
from overparam import plan as plan_lib
from overparam import progress as progress_lib
from overparam.cli import one_line

BACKENDS = {"cpu": "cpu", "gpu": "gpu", "tpu": "tpu"}
PACKAGES = ("jax", "jaxlib", "optax", "numpy", "pandas", "pyarrow", "ml_collections", "absl-py")


class BackendError(RuntimeError):
    """The requested device is not the one JAX got."""


def check_backend(device: str | None) -> str:
    """Returns JAX's backend; raises BackendError if it is not `device` (cpu|gpu|tpu)."""
    try:
        backend = jax.default_backend()
    except Exception as e:  # noqa: BLE001 - JAX raises RuntimeError or AssertionError here
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        wanted = os.environ.get("JAX_PLATFORMS") or device
        raise BackendError(f"JAX could not start the {wanted!r} backend ({reason}); install "
                           f"the matching jax extra (make install DEVICE={device or 'gpu'}) "
                           "or run on a machine that has that device") from None
    if device is not None and BACKENDS[device] != backend:
        raise BackendError(f"--device={device} was asked for but JAX runs on {backend!r} "
                           f"(devices: {jax.devices()}); install the {device} jax extra "
                           f"(make install DEVICE={device})")
    return backend


def enable_compilation_cache(path: str | os.PathLike) -> None:
    """Turns on JAX's persistent compilation cache in `path`, for every compile of 0.1 s or more.

    A repeated or resumed sweep then loads its programs instead of compiling them.
    """
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@dataclasses.dataclass
class Summary:
    """What a sweep did: counts, timings (seconds) and throughput."""

    out: Path
    num_runs: int
    num_diverged: int
    num_compiles: int
    network_steps: int
    timings: dict[str, float]

    @property
    def throughput(self) -> float:
        """Network-steps per second over the whole sweep, compile and writing included."""
        return self.network_steps / max(self.timings["total"], 1e-9)


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain"], check=True,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _device_info() -> dict[str, Any]:
    devices = jax.devices()
    return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
            "device_count": len(devices), "process_count": jax.process_count(),
            "host": platform.node(),
            "processor": platform.processor() or platform.machine()}


def _write_chunk(out: Path, batch: plan_lib.Batch, chunk: int, records: dict, steps: int,
                 progress: progress_lib.Progress) -> dict[str, dict]:
    """Moves one chunk's records to the host and writes its steps/ and layers/ parts;
    returns their manifest entries ({relative path: {rows, sha256}})."""
    records = train.columns(jax.device_get(records))
    real = batch.num_real
    step = records["step"][:real]                          # (real, K)
    valid = step <= steps
    run_ids = np.array([r.run_id for r in batch.runs[:real]])
    ids = np.broadcast_to(run_ids[:, None], step.shape)[valid]
    cols = {"run_id": ids, "step": step[valid].astype(np.int64)}
    for name in train.STEP_FIELDS:  # in the sweep's dtype: float32 values cost 4 bytes
        cols[name] = records[name][:real][valid]
    L = batch.static.depth
    layer_cols = {"run_id": np.repeat(ids, L), "step": np.repeat(cols["step"], L),
                  "layer": np.tile(np.arange(1, L + 1, dtype=np.int64), len(ids))}
    for name in train.LAYER_FIELDS:
        layer_cols[name] = records[name][:real][valid].reshape(-1)
    entries = {}
    for table, columns in ((store.STEPS, cols), (store.LAYERS, layer_cols)):
        rel = f"{table}/{store.part_name(batch.index, chunk)}"
        entries[rel] = store.write_parquet(pd.DataFrame(columns), out / rel).to_dict()
    progress.update(real * int((step[0] < steps).sum()) * batch.static.record_every)
    return entries


def _finish_chunk(out: Path, plan: plan_lib.Plan, batch: plan_lib.Batch, chunk: int, records,
                  state: train.State, steps: int, parts: dict, cadence: checkpoint.Cadence,
                  progress: progress_lib.Progress) -> None:
    """Writes a chunk's parts, then, when `cadence` says so, the batch's checkpoint: the
    state after the chunk and every part so far, in one file. After the last chunk,
    the batch's final record (diverged steps, checkpoint costs) in its place."""
    parts.update(_write_chunk(out, batch, chunk, records, steps, progress))
    store.crash_point("chunk")
    done = chunk + 1
    kwargs = dict(chunks_done=done, step=done * plan.steps_per_chunk, parts=dict(parts))
    if done < plan.num_chunks:
        if cadence.due():
            t = time.perf_counter()
            nbytes = checkpoint.save(out, batch.index, state=state, **kwargs)
            cadence.record(time.perf_counter() - t, nbytes)
    else:
        diverged = np.asarray(jax.device_get(state.diverged_step))[: batch.num_real]
        # A network that diverged only past the last step (in the last chunk's
        # dropped records) has every recorded step finite.
        diverged = [int(x) if x <= steps else -1 for x in diverged]
        checkpoint.save(out, batch.index, diverged_step=diverged, checkpoints=cadence.stats(),
                        **kwargs)


def _stack_batch(batch: plan_lib.Batch, datasets: dict[str, data_lib.Dataset], dtype,
                 gram_inf: dict):
    """Per-network arrays of a batch: Keys, Hyper, X, y and H^inf / s (None without Gram
    tracking)."""
    hyper = train.Hyper(
        seed=np.asarray([r.seed for r in batch.runs], np.uint32),
        init_tag=np.asarray([r.init_tag for r in batch.runs], np.uint32),
        batch_tag=np.asarray([r.batch_tag for r in batch.runs], np.uint32),
        lr=np.asarray([r.lr for r in batch.runs], dtype))
    X = np.stack([datasets[r.dataset_id].X for r in batch.runs])
    y = np.stack([datasets[r.dataset_id].y for r in batch.runs])
    H = None
    if batch.static.gram_every:
        keys = [kernel_key(r, batch.static.train_output) for r in batch.runs]
        H = np.stack([gram_inf[k] for k in keys]).astype(dtype)
    return train.batch_keys(hyper), hyper, X, y, H


def kernel_key(run: config_lib.Run, train_output: bool) -> tuple:
    """The key of a run's H^inf and its eigenvalues in `kernels`' dictionaries."""
    return (run.dataset_id, run.param, run.depth, train_output)


def kernels(sweep: config_lib.Sweep, runs, datasets) -> tuple[dict[tuple, np.ndarray],
                                                            dict[tuple, np.ndarray]]:
    """H^inf (normalized as `theory.gram_inf`, in the sweep's dtype) of every training set
    and architecture, kept only where Gram tracking compares against it, and its
    extreme eigenvalues [lambda_min, lambda_max] (float64; the runs table records
    lambda_min, lr='theory' uses lambda_max).

    One task per kernel on a thread pool as wide as the host: LAPACK releases
    the GIL, and each task runs on one BLAS thread (overparam/__init__.py), so
    a sweep of many training sets uses every core.
    """
    todo = {}
    for r in runs:
        todo.setdefault(kernel_key(r, sweep.train_output), r)

    def one(run):
        X = datasets[run.dataset_id].X.astype(np.float64)
        H = theory.gram_inf(X, param=run.param, depth=run.depth,
                            train_output=sweep.train_output)
        return theory.extreme_eigenvalues(H), H.astype(sweep.dtype) if sweep.gram_every else None

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        done = dict(zip(todo, pool.map(one, todo.values())))
    eigenvalues = {key: e for key, (e, _) in done.items()}
    H_inf = {key: H for key, (_, H) in done.items() if H is not None}
    return H_inf, eigenvalues


def resolve_theory_lr(sweep: config_lib.Sweep, runs, eigenvalues) -> list[config_lib.Run]:
    """Runs with lr 'theory' get 1 / lambda_max(s H^inf) (x n for the mean reduction).

    eigenvalues: [lambda_min, lambda_max] of each H^inf, keyed as `kernels`.
    """
    resolved = []
    for r in runs:
        if r.lr_spec == "theory":
            lam = eigenvalues[kernel_key(r, sweep.train_output)][-1]
            per_example = 1.0 if sweep.reduction == "sum" else 1.0 / r.n
            scale = theory.gram_scale(r.param, r.width, depth=r.depth,
                                      train_output=sweep.train_output)
            r = dataclasses.replace(r, lr=1.0 / (scale * lam * per_example))
        resolved.append(r)
    return resolved


def make_datasets(sweep: config_lib.Sweep) -> tuple[dict[str, data_lib.Dataset],
                                                    dict[str, dict]]:
    """Every training set of the sweep, keyed by dataset id, and their identities."""
    datasets, idents = {}, {}
    for seed in range(sweep.seed, sweep.seed + sweep.num_seeds):
        for n in sweep.n:
            ident = config_lib.data_identity(sweep, seed=seed, n=n)
            did = config_lib.dataset_id(ident)
            if did not in datasets:
                datasets[did], idents[did] = data_lib.make_dataset(ident), ident
    return datasets, idents


def _runs_table(sweep: config_lib.Sweep, runs, datasets, out: Path,
                diverged: dict[str, int]) -> pd.DataFrame:
    """One row per run; per-run results are read back from the written steps/ parts."""
    steps = pd.read_parquet(out / store.STEPS, columns=["run_id", "step", "loss",
                                                        "train_error"])
    zero = steps[steps.train_error == 0].groupby("run_id").step.min()
    final = steps[steps.step == sweep.steps].set_index("run_id").loss
    rows = []
    for r in runs:
        row = {k: v for k, v in dataclasses.asdict(r).items()
               if k not in ("init_tag", "batch_tag")}
        div = diverged.get(r.run_id, -1)
        row.update(
            status="diverged" if div >= 0 else "ok",
            diverged_step=div if div >= 0 else None,
            steps_to_zero_error=int(zero[r.run_id]) if r.run_id in zero.index else None,
            final_loss=float(final.get(r.run_id, float("nan"))),
            steps=sweep.steps, dataset=sweep.dataset, labels=sweep.labels,
            reduction=sweep.reduction, momentum=sweep.momentum, lr_scaling=sweep.lr_scaling,
            train_output=sweep.train_output, precision=sweep.precision, dtype=sweep.dtype,
            separation=datasets[r.dataset_id].separation)
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("diverged_step", "steps_to_zero_error"):
        df[col] = df[col].astype("Int64")
    return df


Interrupted = interrupt.Interrupted  # raised by run_sweep after a clean stop


def run_sweep(sweep: config_lib.Sweep, out: str | Path, *, device: str | None = None,
              show_progress: bool = True, log_fn=print, overwrite: bool = False,
              dry_run: bool = False) -> Summary | None:
    """Trains every network of `sweep` into the results directory `out`, resuming it.

    Everything that can fail on bad input (config, sizes, backend, `out`) is
    checked before anything is written. The sweep holds `out`'s lock
    throughout: a second sweep on it stops at once (OutError). Re-running an
    interrupted sweep continues it; a complete one is verified and left alone
    (returns None); a different sweep in `out` is refused unless `overwrite`.
    dry_run prints the plan only, and writes nothing.
    Raises Interrupted after a clean stop on SIGINT or SIGTERM.

    Under `multihost.initialize`, every process calls this with the same
    arguments and trains its share of the batches (see overparam.multihost).
    """
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise checkpoint.OutError(f"{out} exists and is not a directory")
    check_backend(device)
    plan_lib.check_resources(sweep)
    with jax.enable_x64(sweep.dtype == "float64"):
        if dry_run:
            mode, manifest = checkpoint.inspect(out, sweep.to_dict(), overwrite=overwrite)
            _prepare(sweep, mode, manifest, log_fn)
            return None
        with _exclusive(out):
            mode, manifest = checkpoint.inspect(out, sweep.to_dict(), overwrite=overwrite)
            multihost.barrier("inspected")  # every process has looked before anything changes
            if mode == "complete":
                try:
                    store.verify(out, manifest.get("files"))
                except store.ResultsError as e:
                    raise checkpoint.OutError(f"{out} holds this sweep, but damaged: {e}") from None
                if multihost.is_leader():
                    log_fn(f"{out} already holds this sweep, complete and verified: nothing "
                           "to do (--overwrite recomputes it)")
                return None
            prepared = _prepare(sweep, mode, manifest, log_fn)
            return _run(sweep, out, *prepared, mode=mode, show_progress=show_progress,
                        log_fn=log_fn, t0=t0)


@contextlib.contextmanager
def _exclusive(out: Path):
    """Holds `out`'s lock (the leader takes it for every process) for the block."""
    lock, error = checkpoint.Lock(out), None
    if multihost.is_leader():
        try:
            lock.acquire()
        except checkpoint.OutError as e:
            error = e
    if not multihost.gather(0 if error else 1)[0]:  # the leader's verdict, for everyone
        raise error or checkpoint.OutError(f"process 0 could not lock {out}")
    try:
        yield
    finally:
        lock.release()


def _plan_of_manifest(sweep: config_lib.Sweep, runs, manifest: dict) -> plan_lib.Plan:
    """The plan a manifest was written with: its batch sizes and budget, whatever the
    devices say now (a resumed sweep, and every process but the leader)."""
    return plan_lib.make_plan(sweep, runs, budget_mb=manifest["memory_budget_mb"],
                              multiple_of=manifest["batch_multiple_of"],
                              groups=manifest.get("groups"), cache_bytes=cache_bytes())


def _prepare(sweep: config_lib.Sweep, mode: str, manifest: dict, log_fn):
    """Runs, datasets, kernels and the plan (None on a process that reads the leader's)."""
    runs = config_lib.expand(sweep)
    datasets, idents = make_datasets(sweep)
    H_inf, eigenvalues = kernels(sweep, runs, datasets)
    runs = resolve_theory_lr(sweep, runs, eigenvalues)
    programs = Programs(timings={"compile": 0.0})
    if mode in ("resume", "complete"):
        # A resumed sweep keeps its batches, whatever the devices say now.
        plan = _plan_of_manifest(sweep, runs, manifest)
    elif multihost.is_leader():
        plan = plan_lib.make_plan(sweep, runs, multiple_of=len(jax.local_devices()),
                                  measure=programs.memory, cache_bytes=cache_bytes())
    else:
        plan = None  # the leader's plan is read from the manifest it writes
    if plan is not None and multihost.is_leader():
        log_fn(plan_lib.describe(plan))
    return runs, datasets, idents, plan, programs, eigenvalues, H_inf


def models_sharding(batch_size: int) -> jax.sharding.NamedSharding | None:
    """The networks axis split over all local devices (None on one device).

    Every array of a batch has the networks as its leading axis, and networks
    never interact, so XLA runs each device's share without communication.
    """
    devices = jax.local_devices()
    if len(devices) == 1 or batch_size % len(devices):
        return None
    mesh = jax.sharding.Mesh(np.array(devices), ("models",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("models"))


# On one CPU device, a batch trains in groups of networks whose activations
# fill this much (plan.cache_group_size): a group's arrays then stay in the
# caches from step to step. 64 width-1024 networks at n = 128 ran 37% faster in
# groups of 8 (benchmarks/cache_groups.py, BENCHMARKS.md "Cache groups").
CPU_CACHE_BYTES = 4 * 2**20


def cache_bytes() -> int:
    """plan.make_plan's cache_bytes here: CPU_CACHE_BYTES on a single CPU device, else 0
    (on a GPU the caches are not the bound, and a batch split over devices keeps
    its networks axis whole)."""
    return CPU_CACHE_BYTES if jax.default_backend() == "cpu" and jax.device_count() == 1 else 0


_CPU_OPTIONS = {
    # LLVM's optimization level 1 instead of 3: compiles in 20-25% less time,
    # runs as fast (level 0 would halve the compile time but run 2-2.5x slower).
    "xla_backend_optimization_level": 1,
    # XLA:CPU's older loop emitters instead of the MLIR fusion emitters: compiles
    # in 35-40% less time, runs as fast (interleaved A/B, BENCHMARKS.md "Compile").
    "xla_cpu_use_fusion_emitters": False,
    # The LLVM module in 4 parts per core rather than 32 (each part pays its own
    # pass pipeline): 10-20% less compile time on 2 cores.
    "xla_cpu_parallel_codegen_split_count": min(32, 4 * (os.cpu_count() or 1)),
}


@functools.cache
def compiler_options() -> dict[str, Any]:
    """XLA options of overparam's programs on this backend (CPU: `_CPU_OPTIONS`).

    They only trade compile time for nothing measurable at run time; one this
    XLA does not know any more is left out (logged), never an error.
    """
    if jax.default_backend() != "cpu":
        return {}
    probe = jax.jit(lambda x: x + 1).lower(jnp.zeros(()))
    known = {}
    for name, value in _CPU_OPTIONS.items():
        try:
            probe.compile(compiler_options={name: value})
            known[name] = value
        except Exception as e:  # noqa: BLE001 - XLA raises its own runtime error type
            logging.info("XLA option %s not used: %s", name, one_line(e))
    return known


class Programs:
    """The compiled init and chunk programs of each (shape, batch size), compiled once.

    Compiling needs only shapes, so the planner asks `memory` for the peak
    device memory of a batch size it considers, and training then runs the
    very programs that were measured.
    """

    def __init__(self, timings: dict[str, float]):
        self.timings = timings
        self._compiled: dict[tuple[train.Static, int], tuple[Any, Any, int]] = {}
        self._inits: dict[tuple[train.Static, int], tuple[Any, Any]] = {}

    def _abstract(self, static: train.Static, size: int):
        sharding = models_sharding(size)
        dtype = jnp.dtype(static.dtype)
        spec = lambda *shape, dt=dtype: jax.ShapeDtypeStruct((size, *shape), dt,
                                                              sharding=sharding)
        keys = train.Keys(*(spec(2, dt=jnp.uint32) for _ in train.Keys._fields))
        hyper = train.Hyper(spec(dt=jnp.uint32), spec(dt=jnp.uint32), spec(dt=jnp.uint32),
                            spec())
        H = spec(static.n, static.n) if static.gram_every else None
        return keys, hyper, spec(static.n, static.d), spec(static.n), H, sharding

    def get(self, static: train.Static, size: int) -> tuple[Any, Any]:
        """(init, chunk): executables called as init(keys, X, H) and
        chunk(state, hyper, X, y, start). Shapes with the same `train.init_static`
        share their init executable."""
        key = (static, size)
        if key not in self._compiled:
            store.crash_point("compile")
            program = train.make_program(static)
            keys, hyper, X, y, H, sharding = self._abstract(static, size)
            t = time.perf_counter()
            init_key = (train.init_static(static), size)
            if init_key not in self._inits:
                lowered = program.init.lower(keys, X, H)
                self._inits[init_key] = (lowered.compile(compiler_options=compiler_options()),
                                         lowered.out_info)
            init, out_info = self._inits[init_key]
            state = jax.tree_util.tree_map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), out_info)
            chunk = program.chunk.lower(state, hyper, X, y,
                                        jax.ShapeDtypeStruct((), jnp.int32)
                                        ).compile(compiler_options=compiler_options())
            self.timings["compile"] += time.perf_counter() - t
            state_bytes = sum(a.size * a.dtype.itemsize
                              for a in jax.tree_util.tree_leaves(state))
            self._compiled[key] = (init, chunk, _peak_bytes(init, chunk, state_bytes, sharding))
        return self._compiled[key][:2]

    def memory(self, static: train.Static, size: int) -> int:
        """Peak bytes, per device, of training a batch of `size` networks of this shape."""
        self.get(static, size)
        return self._compiled[(static, size)][2]

    @property
    def num_compiled(self) -> int:
        return len(self._compiled)


def _peak_bytes(init, chunk, state_bytes: int, sharding) -> int:
    """Peak device memory of a batch from XLA's memory analysis of its programs.

    A chunk holds its arguments, outputs and temporaries, and meanwhile the
    previous chunk's records wait to be copied to the host: its outputs less
    the state. Where the analysis is unavailable, raises RuntimeError.
    """
    def total(compiled):
        m = compiled.memory_analysis()
        if m is None:
            raise RuntimeError("XLA gives no memory analysis on this backend")
        return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                - m.alias_size_in_bytes, m.output_size_in_bytes)

    devices = len(sharding.device_set) if sharding is not None else 1
    init_total, _ = total(init)
    chunk_total, chunk_out = total(chunk)
    records = max(chunk_out - state_bytes // devices, 0)
    return max(init_total, chunk_total + records)


def _train_batch(out: Path, sweep, plan: plan_lib.Plan, batch: plan_lib.Batch, meta: dict,
                 arrays, programs: Programs, stop, writer, pending: list, progress,
                 log_fn) -> None:
    """Initializes (or restores, from checkpoint `meta`) one batch and runs its chunks,
    queueing their writes.

    At most one chunk computes while the previous one is written; a signal stops
    the loop at the next chunk boundary. A checkpoint that cannot be restored is
    reported and the batch recomputed from its start.
    """
    init, chunk = programs.get(batch.static, batch.size)
    sharding = models_sharding(batch.size)
    keys, hyper, X, y, H = jax.device_put(arrays, sharding)
    state = init(keys, X, H)
    first_chunk, parts = meta["chunks_done"], dict(meta["parts"])
    if first_chunk:
        try:
            state = checkpoint.restore(out, batch.index, state, meta)
        except checkpoint.CheckpointError as e:
            log_fn(f"{e}: recomputing batch {batch.index} from its start")
            checkpoint.discard(out, batch.index)
            first_chunk, parts = 0, {}
    state = jax.device_put(state, sharding) if sharding else state  # as `chunk` was compiled
    cadence = checkpoint.Cadence(sweep.checkpoint_seconds)
    for c in range(first_chunk, plan.num_chunks):
        if stop.signum is not None:
            return
        state, records = chunk(state, hyper, X, y, jnp.int32(c * plan.steps_per_chunk))
        pending.append(writer.submit(_finish_chunk, out, plan, batch, c, records, state,
                                     sweep.steps, parts, cadence, progress))
        if len(pending) >= 2:
            pending[-2].result()


def _batch_metas(out: Path, plan: plan_lib.Plan, batches, log_fn) -> dict[int, dict]:
    """Each batch's checkpoint meta; one that is unreadable or inconsistent is reported,
    removed, and its batch starts again."""
    metas = {}
    for b in batches:
        try:
            meta = checkpoint.load(out, b.index)
            checkpoint.check(meta, b.index, steps_per_chunk=plan.steps_per_chunk,
                             num_chunks=plan.num_chunks)
        except checkpoint.CheckpointError as e:
            log_fn(f"{e}: recomputing batch {b.index} from its start")
            checkpoint.discard(out, b.index)
            meta = checkpoint.load(out, b.index)
        metas[b.index] = meta
    return metas


def _run(sweep, out: Path, runs, datasets, idents, plan: plan_lib.Plan | None,
         programs: Programs, eigenvalues, H_inf, *, mode: str, show_progress: bool, log_fn,
         t0: float) -> Summary:
    """Trains this process's batches of `plan` (the leader's, from the manifest, where
    None); t0: when the sweep started (timings count from it)."""
    timings = programs.timings
    leader = multihost.is_leader()
    manifest = None
    try:
        with interrupt.deferred() as stop:
            if leader:
                if mode == "overwrite":
                    checkpoint.clear(out)
                cleaned = checkpoint.clean_leftovers(out)
                if cleaned:
                    log_fn(f"removed {cleaned} temporary files left by a crash")
                manifest = _start_manifest(sweep, out, runs, datasets, idents, plan,
                                           resume=mode == "resume", log_fn=log_fn)
            multihost.barrier("started")  # the manifest and datasets are written
            if plan is None or not leader:
                plan = _plan_of_manifest(sweep, runs, manifest_of(out))
            mine = [plan.batches[i] for i in multihost.share(
                [b.size * plan_lib.step_flops(b.static) for b in plan.batches],
                multihost.count(), multihost.index())]
            metas = _batch_metas(out, plan, mine, log_fn)
            done = sum(b.num_real * min(metas[b.index]["step"], sweep.steps) for b in mine)
            total = sum(b.num_real for b in mine) * sweep.steps
            progress = progress_lib.Progress(total - done, enabled=show_progress and leader)
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
                pending = []
                for batch in mine:
                    if metas[batch.index]["chunks_done"] < plan.num_chunks and stop.signum is None:
                        arrays = _stack_batch(batch, datasets, jnp.dtype(sweep.dtype), H_inf)
                        _train_batch(out, sweep, plan, batch, metas[batch.index], arrays,
                                     programs, stop, writer, pending, progress, log_fn)
                for f in pending:
                    f.result()
            timings["train_and_write"] = time.perf_counter() - t0
            signums = [s for s in multihost.gather(stop.signum or 0) if s]
            if signums:
                raise Interrupted(stop.signum or signums[0])
            # From here on the sweep finishes: a signal now is too late to stop it.
            summary = Summary(out=out, num_runs=len(runs), num_diverged=0,
                              num_compiles=programs.num_compiled,
                              network_steps=sum(multihost.gather(total - done)),
                              timings=timings)
            if leader:
                _finish_sweep(sweep, out, runs, datasets, plan, eigenvalues, manifest,
                              summary, t0)
    except Interrupted:
        if manifest is not None:
            manifest["status"] = "interrupted"
            store.write_json(manifest, out / store.MANIFEST)
        raise
    timings.setdefault("total", time.perf_counter() - t0)
    multihost.barrier("finished")  # runs.parquet is written when any process returns
    return summary


def manifest_of(out: Path) -> dict:
    """The manifest as the leader wrote it."""
    return json.loads((out / store.MANIFEST).read_text())


def _start_manifest(sweep, out: Path, runs, datasets, idents, plan: plan_lib.Plan, *,
                    resume: bool, log_fn) -> dict:
    """Writes the manifest (status 'running') and the datasets; returns the manifest.

    The manifest lists each dataset file with its hash (`files`); a dataset
    file already there is rewritten unless it is exactly what this sweep writes.
    """
    if resume:
        manifest = manifest_of(out)
        log_fn(f"resuming {out}")
        manifest["resumed"] = manifest.get("resumed", 0) + 1
    else:
        manifest = {"config": sweep.to_dict(), "versions": _versions(),
                    "device": _device_info(), "git_commit": _git_commit(),
                    "command": shlex.join(sys.argv), "num_runs": len(runs),
                    "plan": plan_lib.describe(plan).splitlines(),
                    "memory_budget_mb": plan.budget_mb,
                    "batch_multiple_of": plan.multiple_of, "groups": plan.groups,
                    "datasets": {did: {**ident, "separation": datasets[did].separation}
                                 for did, ident in idents.items()}}
    manifest["status"] = "running"
    store.write_json(manifest, out / store.MANIFEST)
    files = {}
    for did, ds in datasets.items():
        rel = f"{store.DATASETS}/{did}.parquet"
        table = store.dataset_table(did, ds.X, ds.y)
        entry = store.parquet_entry(table)
        if not (out / rel).is_file() or store.sha256(out / rel) != entry.sha256:
            entry = store.write_parquet(table, out / rel)
        files[rel] = entry.to_dict()
    manifest["files"] = files
    return manifest


def _finish_sweep(sweep, out: Path, runs, datasets, plan: plan_lib.Plan, eigenvalues,
                  manifest: dict, summary: Summary, t0: float) -> None:
    """Writes runs.parquet and the complete manifest, with every file's rows and hash
    (the leader, once every process has written its batches), and counts the
    diverged networks into `summary`."""
    diverged, files = {}, dict(manifest["files"])
    costs = {"count": 0, "seconds": 0.0, "bytes": 0}
    for b in plan.batches:
        meta = checkpoint.load(out, b.index)
        files.update(meta["parts"])
        for k, v in (meta.get("checkpoints") or {}).items():
            costs[k] += v
        diverged.update({r.run_id: s for r, s in zip(b.runs[: b.num_real],
                                                     meta["diverged_step"]) if s >= 0})
    table = _runs_table(sweep, runs, datasets, out, diverged)
    table["lambda0"] = [float(eigenvalues[kernel_key(r, sweep.train_output)][0])
                        for r in runs]
    files[store.RUNS] = store.write_parquet(table, out / store.RUNS).to_dict()
    summary.num_diverged = len(diverged)
    summary.timings["total"] = time.perf_counter() - t0
    manifest.update(status="complete", timings=summary.timings, files=files,
                    checkpoints={**costs, "every_seconds": sweep.checkpoint_seconds},
                    num_diverged=summary.num_diverged, num_compiles=summary.num_compiles,
                    throughput_network_steps_per_s=summary.throughput,
                    processes=multihost.count())
    store.write_json(manifest, out / store.MANIFEST)
    checkpoint.finish(out)
