"""Runs a planned sweep: the orchestration, and nothing else.

Data flow: Sweep -> `prepare` (runs, datasets, kernels, plan) -> for each
batch: its `programs` (compiled once per shape), then chunks whose records
leave the device once per chunk and are written by `records` on a background
thread while the next chunk computes, with a `checkpoint` after them -> at the
end runs.parquet and the complete manifest (`provenance`).

This module decides what happens when: locking, resuming, which process trains
which batch, when a checkpoint is due, how a signal stops the sweep. It owns
no file format, no formula and no compiled program.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from overparam import (
    checkpoint,
    interrupt,
    multihost,
    networks,
    programs,
    provenance,
    records,
    resultsdir,
    store,
)
from overparam import config as config_lib
from overparam import plan as plan_lib
from overparam import prepare as prepare_lib
from overparam import progress as progress_lib

Interrupted = interrupt.Interrupted  # raised by run_sweep after a clean stop


@dataclasses.dataclass(frozen=True)
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
    programs.check_backend(device)
    plan_lib.check_resources(sweep, out)  # memory, and the disk under out
    networks.check_modules(sweep)  # a flax module off the protocol: refused before compiling
    progress = progress_lib.Progress(enabled=show_progress and multihost.is_leader(),
                                     in_logs=not dry_run)  # a dry run: only the plan
    with jax.enable_x64(sweep.dtype == "float64"), (
            contextlib.nullcontext() if dry_run else resultsdir.exclusive(out)), progress:
        mode, manifest = resultsdir.inspect(out, sweep.to_dict(), overwrite=overwrite)
        multihost.barrier("inspected")  # every process has looked before anything changes
        if mode == "complete" and not dry_run:
            resultsdir.verify_complete(out, manifest)
            if multihost.is_leader():
                checkpoint.finish(out)  # what a kill right after completing left behind
                log_fn(f"{out} already holds this sweep, complete and verified: nothing to "
                       "do (--overwrite recomputes it)")
            return None
        compiled = programs.Executables(progress=progress)  # a line while each one compiles
        prepared = prepare_lib.prepare(sweep, mode, manifest, compiled)
        if prepared.plan is not None and multihost.is_leader():
            log_fn(plan_lib.describe(prepared.plan))
        if dry_run:
            return None
        job = _Job(sweep, out, prepared, compiled, log_fn, progress=progress)
        return job.run(mode=mode, t0=t0)


@dataclasses.dataclass
class _Job:
    """One process's part of a sweep being trained into `out`."""

    sweep: config_lib.Sweep
    out: Path
    prepared: prepare_lib.Prepared
    compiled: programs.Executables
    log_fn: object
    plan: plan_lib.Plan | None = None
    progress: progress_lib.Progress | None = None
    finished: dict[int, checkpoint.CheckpointMeta] = dataclasses.field(
        default_factory=dict)  # final batch metas

    def run(self, *, mode: str, t0: float) -> Summary:
        """Trains this process's batches (t0: when the sweep started; timings count from it)."""
        leader, manifest = multihost.is_leader(), None
        try:
            with interrupt.deferred(self.progress.message) as stop:
                if leader:
                    manifest = self._start(resume=mode == "resume", overwrite=mode == "overwrite")
                multihost.barrier("started")  # the manifest and datasets are written
                self.plan = self.prepared.plan if leader else prepare_lib.plan_of_manifest(
                    self.sweep, self.prepared.runs, provenance.manifest_of(self.out))
                mine = [self.plan.batches[i] for i in multihost.share(
                    [b.size * plan_lib.step_flops(b.static) for b in self.plan.batches],
                    multihost.count(), multihost.index())]
                metas = {b.index: checkpoint.load_valid(self.out, b.index, self.plan, self.log_fn)
                         for b in mine}
                self.finished = {i: m for i, m in metas.items()
                                 if m.chunks_done == self.plan.num_chunks}
                if leader:
                    self._write_runs()  # every run of a batch not finished: 'running'
                todo = {b.index: b.num_real * (self.sweep.steps - min(metas[b.index].step,
                                                                     self.sweep.steps))
                        for b in mine}  # network-steps left
                left = [b for b in mine if metas[b.index].chunks_done < self.plan.num_chunks]
                self.compiled.expect((b.static, b.size) for b in left)  # "compiling k/N"
                # Progress by work: a batch's network-steps weigh its FLOPs per network-step.
                self.progress.begin(sum(todo[b.index] * plan_lib.step_flops(b.static)
                                        for b in mine))
                writer = concurrent.futures.ThreadPoolExecutor(max_workers=1)
                try:
                    pending = []
                    for batch in mine:
                        if (metas[batch.index].chunks_done < self.plan.num_chunks
                                and stop.signum is None):
                            self._train_batch(batch, metas[batch.index], stop, writer, pending)
                    for f in pending:
                        interrupt.wait(f)
                except BaseException as e:
                    # A second Ctrl-C does not wait for the chunk in the writer: what it
                    # leaves is what a kill leaves, resumable (every write is atomic).
                    now = isinstance(e, Interrupted) and e.now
                    writer.shutdown(wait=not now, cancel_futures=now)
                    raise
                writer.shutdown()
                timings = {"compile": self.compiled.compile_seconds,
                           "train_and_write": time.perf_counter() - t0}
                signums = [s for s in multihost.gather(stop.signum or 0) if s]
                if signums:
                    raise Interrupted(stop.signum or signums[0])
                # From here on the sweep finishes: a signal now is too late to stop it.
                stop.hold()
                diverged = sum(s >= 0 for b in mine
                               for s in checkpoint.load(self.out, b.index).diverged_step)
                counts = dict(num_runs=len(self.prepared.runs),
                              num_diverged=sum(multihost.gather(diverged)),
                              num_compiles=self.compiled.num_compiled,
                              network_steps=sum(multihost.gather(sum(todo.values()))))
                files = self._write_runs(manifest) if leader else None
                summary = Summary(self.out, **counts,
                                  timings={**timings, "total": time.perf_counter() - t0})
                if leader:
                    self._complete(manifest, files, summary)
        except Interrupted:
            if manifest is not None:
                store.write_json({**manifest, "status": "interrupted"}, self.out / store.MANIFEST)
            raise
        multihost.barrier("finished")  # runs.parquet is written when any process returns
        return summary

    def _start(self, *, resume: bool, overwrite: bool) -> dict:
        """Clears or cleans `out`, writes the manifest (status 'running') and the
        datasets; returns the manifest, with the datasets' files."""
        if overwrite:
            resultsdir.clear(self.out)
        cleaned = resultsdir.clean_leftovers(self.out)
        if cleaned:
            self.log_fn(f"removed {cleaned} temporary files left by a crash")
        if resume:
            manifest = provenance.manifest_of(self.out)
            self.log_fn(f"resuming {self.out}")
            manifest["resumed"] = manifest.get("resumed", 0) + 1
        else:
            manifest = provenance.new_manifest(self.sweep, self.prepared)
        manifest["status"] = "running"
        store.write_json(manifest, self.out / store.MANIFEST)
        return {**manifest, "files": records.write_datasets(
            self.out, self.prepared.datasets, self.sweep.dtype)}

    def _train_batch(self, batch: plan_lib.Batch, meta: checkpoint.CheckpointMeta, stop,
                     writer, pending) -> None:
        """Initializes (or restores, from checkpoint `meta`) one batch and runs its chunks,
        queueing their writes: at most one chunk computes while the previous one is
        written; a signal stops the loop at the next chunk boundary.

        Each chunk donates the state it is given (programs.Executables), so what a
        checkpoint needs of a state is fetched to the host before the next chunk
        takes it: when `cadence` says a checkpoint is due, which is decided here
        rather than on the writer's thread. That fetch waits for the chunk to
        finish, once per checkpoint."""
        init, chunk = self.compiled.get(batch.static, batch.size)
        sharding = programs.models_sharding(batch.size)
        keys, scalars, data = jax.device_put(
            self.prepared.batch_arrays(batch, jnp.dtype(self.sweep.dtype)), sharding)
        state = init(keys, data)
        first, parts = meta.chunks_done, dict(meta.parts)
        results = (records.RunResults.from_dict(meta.results) if first
                   else records.RunResults.empty(batch.num_real))
        if first:
            try:
                state = checkpoint.restore(self.out, batch.index, state, meta)
            except checkpoint.CheckpointError as e:
                checkpoint.recompute(self.out, batch.index, e, self.log_fn)
                first, parts, results = 0, {}, records.RunResults.empty(batch.num_real)
        state = jax.device_put(state, sharding) if sharding else state  # as `chunk` was compiled
        cadence = checkpoint.Cadence(self.sweep.checkpoint_seconds)
        for c in range(first, self.plan.num_chunks):
            if stop.signum is not None:
                return
            state, recs = chunk(state, scalars, data, jnp.int32(c * self.plan.steps_per_chunk))
            if sharding:  # XLA returns empty arrays (a feature turned off) replicated
                state = jax.device_put(state, sharding)
            if c + 1 == self.plan.num_chunks:
                kept = state  # the last chunk's: no chunk takes it
            elif cadence.due():
                cadence.begin()
                kept = checkpoint.fetch_trained(state)  # before the next chunk takes it
            else:
                kept = None
            pending.append(writer.submit(self._finish_chunk, batch, c, recs, kept, parts,
                                         results, cadence))
            if len(pending) >= 2:
                interrupt.wait(pending[-2])  # a second Ctrl-C interrupts the wait

    def _finish_chunk(self, batch, chunk: int, recs, state, parts: dict,
                      results: records.RunResults, cadence: checkpoint.Cadence) -> None:
        """Writes a chunk's parts, then, where `state` is given (a checkpoint is due:
        `_train_batch`), the batch's checkpoint: the state after the chunk, every part so
        far and the per-run results, in one file. After the last chunk, the batch's final
        record (diverged steps, checkpoint costs)."""
        entries, network_steps = records.write_chunk(self.out, batch, chunk, recs,
                                                     self.sweep.steps, self.sweep.dtype, results)
        parts.update(entries)
        self.progress.update(network_steps * plan_lib.step_flops(batch.static))
        store.crash_point("chunk")
        done = chunk + 1
        meta = checkpoint.CheckpointMeta(chunks_done=done, step=done * self.plan.steps_per_chunk,
                                         parts=dict(parts), results=results.to_dict())
        if done < self.plan.num_chunks:
            if state is not None:
                t = time.perf_counter()
                nbytes = checkpoint.save(self.out, batch.index, meta, state=state)
                cadence.record(time.perf_counter() - t, nbytes)
        else:
            diverged = jax.device_get(state.diverged_step)[: batch.num_real]
            # A network that diverged only past the last step (in the last chunk's
            # dropped records) has every recorded step finite.
            diverged = [int(x) if x <= self.sweep.steps else -1 for x in diverged]
            final = dataclasses.replace(meta, diverged_step=diverged,
                                        checkpoints=cadence.stats())
            checkpoint.save(self.out, batch.index, final)
            self.finished[batch.index] = final
            if multihost.is_leader():
                self._write_runs()

    def _write_runs(self, manifest: dict | None = None) -> dict | None:
        """Writes runs.parquet (the leader): each finished batch's runs with their status
        and results, the others 'running'; at the start, after each of the leader's
        batches, and at the end. At the end (`manifest`: every process has written its
        batches) every batch's final record is read and every file's manifest entry is
        returned."""
        if manifest is not None:
            for b in self.plan.batches:  # other processes' batches, read from their checkpoints
                if b.index not in self.finished:
                    self.finished[b.index] = checkpoint.load(self.out, b.index)
        table = records.runs_of(self.sweep, self.prepared, self.plan.batches, self.finished)
        entry = store.write_parquet_if_changed(table, self.out / store.RUNS)  # the end: as is
        if manifest is None:
            return None
        files = dict(manifest["files"])
        for meta in self.finished.values():
            files.update(meta.parts)
        return {**files, store.RUNS: entry.to_dict()}

    def _complete(self, manifest: dict, files: dict, summary: Summary) -> None:
        """The complete manifest: timings, counts, checkpoint costs, every file's hash."""
        provenance.complete(manifest, summary, files, checkpoints={
            **checkpoint.costs(self.out, [b.index for b in self.plan.batches]),
            "every_seconds": self.sweep.checkpoint_seconds})
        store.write_json(manifest, self.out / store.MANIFEST)
        checkpoint.finish(self.out)
