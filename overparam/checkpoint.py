"""Resumable sweeps: what a results directory holds, its lock, and batch checkpoints.

A results directory is in one of these states, read from its manifest.json:
absent or empty ('new'), 'running' or 'interrupted' (resumable: same config
only), 'complete'. One sweep at a time writes it: `Lock` holds an exclusive
OS lock (flock) on `<out>/.overparam.lock` for the whole sweep, which the OS
drops when the process dies, so a crash never leaves a stale lock.

Per batch, `.state/b<batch>.npz` is one file, replaced atomically after the
Parquet parts of each chunk:

  meta      JSON: chunks_done, step (of the saved state), the parts written so
            far ({path: {rows, sha256}}), the per-run results accumulated from
            them (records.RunResults), and once the batch is finished its
            diverged_step
  leaf_<i>  the trained part of the batch's State after chunks_done chunks
            (absent once the batch is finished)

The chunk count and the state it belongs to change together, so no kill can
pair a state with the wrong count. `restore` checks anyway that the state's
step is chunks_done x the steps per chunk; a checkpoint that fails that, or
cannot be read, is reported in one line and its batch recomputed from the
start (its parts are recomputable). The weights at initialization, activation
patterns and keys are recomputed from the runs' identities (deterministic),
so a resumed sweep writes the same numbers as an uninterrupted one. Parts of
a chunk past the last checkpoint are recomputed and replaced by identical
files.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import numpy as np

from overparam import multihost, store, train

STATE = ".state"
LOCK = ".overparam.lock"


class OutError(ValueError):
    """A results directory that cannot be used; str(err) is one line."""

    def __init__(self, message: str):
        super().__init__(f"--out: {message}")


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'field: old -> new' for every field that differs."""
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def _is_own(path: Path) -> bool:
    """overparam's own hidden files at the top of a directory: the lock, temporaries
    (regular files: a link of those names is not overparam's)."""
    return (path.is_file() and not path.is_symlink()
            and (path.name == LOCK or store.is_temporary(path)))


def inspect(out: Path, config: dict[str, Any], *, overwrite: bool) -> tuple[str, dict]:
    """What to do with `out`, without changing it: ('new' | 'overwrite' | 'resume' |
    'complete', manifest or {}).

    Refuses a file, a foreign non-empty directory, an unreadable manifest and,
    unless overwrite, a damaged manifest (`store.check_manifest`: a field of the wrong
    type, value or name, a link in the directory) or a sweep of another configuration.
    """
    if not out.exists():
        return "new", {}
    if not out.is_dir():
        raise OutError(f"{out} exists and is not a directory")
    if not (out / store.MANIFEST).is_file():
        if any(not _is_own(p) for p in out.iterdir()):
            raise OutError(f"{out} is not empty and holds no overparam sweep (no "
                           f"{store.MANIFEST}); choose another --out")
        return "new", {}   # empty, or only what a crash of overparam leaves
    try:
        manifest = store.read_manifest(out)
    except store.ResultsError as e:
        raise OutError(f"{e}; delete the directory or choose another --out") from None
    if overwrite:
        return "overwrite", manifest
    try:
        store.check_manifest(out, manifest)
    except store.ResultsError as e:
        raise OutError(f"{out} holds a damaged sweep: {e}; --overwrite recomputes it") from None
    diff = config_diff(manifest["config"], config)
    if diff:
        raise OutError(f"{out} holds a different sweep ({'; '.join(diff)}); choose another "
                       "--out, or pass --overwrite to replace it")
    return ("complete" if manifest["status"] == "complete" else "resume"), manifest


def verify_complete(out: Path, manifest: dict) -> None:
    """Checks a complete `out` with `store.verify_complete`, the very checks `load` makes
    (OutError if it fails)."""
    try:
        store.verify_complete(out, manifest)
    except store.ResultsError as e:
        raise OutError(f"{out} holds this sweep, but damaged: {e}") from None


def clean_leftovers(out: Path) -> int:
    """Deletes the temporary files a crash left behind (overparam's names only); returns
    how many. A temporary directory (an analysis being written, or one a kill left: its
    next run recovers it, overparam/analysis/outdir.py) and what it holds are left alone."""
    leftovers = [p for p in out.rglob(f"*{store.TEMP_SUFFIX}") if store.is_temporary(p)
                 and not p.is_dir() and not any(
                     store.is_temporary(folder) for folder in p.relative_to(out).parents)]
    for p in leftovers:
        p.unlink(missing_ok=True)
    return len(leftovers)


def clear(out: Path) -> None:
    """Deletes everything in `out` but the lock (what --overwrite replaces)."""
    for p in out.iterdir():
        if p.name != LOCK:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


class Lock:
    """The one-writer lock of a results directory (creates the directory if needed).

    `acquire` raises OutError, naming the holder, when another process holds
    it. `release` removes the lock file (while still holding the lock) and,
    if `acquire` created the directory and nothing else was put in it, the
    directory too.
    """

    def __init__(self, out: Path):
        self.out, self.path = Path(out), Path(out) / LOCK
        self.created, self._fd = False, None

    def acquire(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise OutError(f"{self.out} exists and is not a directory")
        self.created = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutError(f"cannot create {self.out}: {_reason(e)}") from None
        while self._fd is None:
            try:  # never through a link: truncating it would write outside `out`
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                self._remove_created()
                if e.errno == errno.ELOOP:
                    raise OutError(f"{self.path} is a symbolic link; overparam never writes "
                                   "through one: remove it") from None
                raise OutError(f"cannot write in {self.out}: {_reason(e)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "starting up"
                os.close(fd)
                raise OutError(f"{self.out} is in use by another sweep ({holder}); wait for "
                               "it to end, or choose another --out") from None
            # The previous holder removes the file when it ends: a lock taken on a
            # file that is no longer at `path` locks nothing, so take it again.
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if not current:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        if self.created:
            try:
                self.out.rmdir()
            except OSError:
                pass  # not empty: the sweep wrote into it


# ---------------------------------------------------------------- batch checkpoints


@contextmanager
def exclusive(out: Path):
    """Holds `out`'s Lock for the block: the leader takes it for every process, and every
    process raises OutError if it could not."""
    lock, error = Lock(out), None
    if multihost.is_leader():
        try:
            lock.acquire()
        except OutError as e:
            error = e
    if not multihost.gather(0 if error else 1)[0]:  # the leader's verdict, for everyone
        raise error or OutError(f"process 0 could not lock {out}")
    try:
        yield
    finally:
        lock.release()


class CheckpointError(Exception):
    """A batch checkpoint that cannot be used; str(err) is one line."""


class Cadence:
    """When a batch's trained state is checkpointed, and what that has cost.

    After a chunk, once `interval` seconds have passed since the batch's last
    checkpoint (or its start) and at least RATIO times the last checkpoint's
    own duration: checkpoints then take at most about 1/RATIO of the time
    however large the state (a batch of 334 width-4096 networks at d = 1000
    holds 5.5 GB), and a crash loses at most about `interval` seconds of
    training (more only where a checkpoint takes longer than interval/RATIO).
    interval 0: after every chunk. A batch's last chunk needs no state
    checkpoint (its final record holds only what the runs table needs). The
    clock is injectable for tests.
    """

    RATIO = 20

    def __init__(self, interval: float, clock=time.monotonic):
        self.interval, self.clock = interval, clock
        self.since, self.last_cost = clock(), 0.0
        self.count, self.seconds, self.bytes = 0, 0.0, 0

    def due(self) -> bool:
        if self.interval == 0:
            return True
        return self.clock() - self.since >= max(self.interval, self.RATIO * self.last_cost)

    def begin(self) -> None:
        """A checkpoint is being taken (the next is due from now, until `record` says
        when it was written): a chunk that follows before it is written does not take
        another."""
        self.since = self.clock()

    def record(self, seconds: float, nbytes: int) -> None:
        self.since, self.last_cost = self.clock(), seconds
        self.count, self.seconds, self.bytes = (self.count + 1, self.seconds + seconds,
                                                self.bytes + nbytes)

    def stats(self) -> dict[str, float]:
        return {"count": self.count, "seconds": self.seconds, "bytes": self.bytes}


def _path(out: Path, batch: int) -> Path:
    return out / STATE / f"b{batch:05d}.npz"


# The fields of a State that training changes (the rest is recomputed on resume), in the
# order a checkpoint holds them.
TRAINED_FIELDS = ("step", "delta", "opt_state", "v", "alive", "diverged_step", "sharp_v",
                  "conv_v")


def trained_part(state: train.State):
    """The part of a State that training changes: its TRAINED_FIELDS, as a tuple."""
    return tuple(getattr(state, k) for k in TRAINED_FIELDS)


def fetch_trained(state: train.State) -> train.State:
    """The state with its `trained_part` fetched to the host and every other field None:
    what `save` needs of a state, taken before a chunk that donates it deletes it."""
    empty = train.State(*(None,) * len(train.State._fields))
    return empty._replace(**jax.device_get({k: getattr(state, k) for k in TRAINED_FIELDS}))


def save(out: Path, batch: int, *, chunks_done: int, step: int, parts: dict[str, dict],
         results: dict, state: train.State | None = None,
         diverged_step: list[int] | None = None, checkpoints: dict | None = None) -> int:
    """Replaces the checkpoint of `batch`: `chunks_done` chunks written, as `parts`;
    returns the file's size in bytes.

    results: the per-run results accumulated from those parts (records.RunResults).
    state: the batch's State after them (device arrays are fetched here); a
    finished batch passes diverged_step instead (its networks' first
    non-finite steps, -1 for none) and the Cadence stats of its checkpoints,
    and keeps no state.
    """
    meta = {"chunks_done": chunks_done, "step": step, "parts": parts, "results": results}
    if diverged_step is not None:
        meta.update(diverged_step=diverged_step, checkpoints=checkpoints)
    leaves = [] if state is None else [np.asarray(x) for x in jax.tree_util.tree_leaves(
        jax.device_get(trained_part(state)))]
    arrays = {"meta": np.array(json.dumps(meta, sort_keys=True)),
              **{f"leaf_{i}": a for i, a in enumerate(leaves)}}

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    store.atomic_write(_path(out, batch), write)
    return _path(out, batch).stat().st_size


def load(out: Path, batch: int) -> dict[str, Any]:
    """The checkpoint's meta ({'chunks_done': 0, 'parts': {}} for a batch not started).

    Raises CheckpointError for a file that cannot be read, is a link, or whose parts are
    not a list of overparam's files (`store.check_files`: checked before any is used).
    """
    path = _path(out, batch)
    if path.is_symlink():
        raise CheckpointError(f"{path} is a symbolic link, not a checkpoint")
    if not path.is_file():
        return {"chunks_done": 0, "step": 0, "parts": {}}
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
        if not (isinstance(meta, dict) and isinstance(meta.get("chunks_done"), int)
                and isinstance(meta.get("step"), int) and isinstance(meta.get("parts"), dict)):
            raise ValueError("incomplete meta")
    except (OSError, ValueError, KeyError, RecursionError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__})") from None
    try:
        store.check_files(path, meta["parts"], "parts")
    except store.ResultsError as e:
        raise CheckpointError(str(e)) from None
    return meta


def check(meta: dict[str, Any], batch: int, *, steps_per_chunk: int, num_chunks: int) -> None:
    """Raises CheckpointError unless `meta` is self-consistent: its step is chunks_done x
    steps_per_chunk, it lists both parts of every chunk done, and a finished batch
    has its diverged steps."""
    done = meta["chunks_done"]
    expected = {f"{table}/{store.part_name(batch, c)}" for table in (store.STEPS, store.LAYERS)
                for c in range(done)}
    if not 0 <= done <= num_chunks or meta["step"] != done * steps_per_chunk:
        raise CheckpointError(f"batch {batch}: the checkpoint says {done} chunks done at step "
                              f"{meta['step']}, which do not match ({steps_per_chunk} steps "
                              "per chunk)")
    if set(meta["parts"]) != expected:
        raise CheckpointError(f"batch {batch}: the checkpoint lists {len(meta['parts'])} parts "
                              f"for {done} chunks")
    if done and not isinstance(meta.get("results"), dict):
        raise CheckpointError(f"batch {batch}: the checkpoint holds no per-run results")
    if done == num_chunks and not isinstance(meta.get("diverged_step"), list):
        raise CheckpointError(f"batch {batch}: finished without its diverged steps")


def load_valid(out: Path, batch: int, plan, log_fn) -> dict[str, Any]:
    """The meta of `batch`'s checkpoint, checked against `plan` (a plan.Plan); one that
    is unreadable or inconsistent is reported through log_fn and removed, and the batch
    starts again."""
    try:
        meta = load(out, batch)
        check(meta, batch, steps_per_chunk=plan.steps_per_chunk, num_chunks=plan.num_chunks)
        return meta
    except CheckpointError as e:
        return recompute(out, batch, e, log_fn)


def recompute(out: Path, batch: int, error: CheckpointError, log_fn) -> dict[str, Any]:
    """Reports `error` through log_fn and removes `batch`'s checkpoint: the batch starts
    again (returns the meta of a batch not started)."""
    log_fn(f"{error}: recomputing batch {batch} from its start")
    discard(out, batch)
    return load(out, batch)


def restore(out: Path, batch: int, fresh: train.State, meta: dict[str, Any]) -> train.State:
    """`fresh` (a re-initialized State) with the trained part from the checkpoint.

    Raises CheckpointError where the saved state does not have fresh's
    structure, shapes and dtypes, or is not at the step `meta` says.
    """
    path = _path(out, batch)
    template = jax.tree_util.tree_leaves(trained_part(fresh))
    try:
        with np.load(path) as z:
            leaves = [z[f"leaf_{i}"] for i in range(len(template))]
            if len([k for k in z.files if k.startswith("leaf_")]) != len(template):
                raise ValueError("number of arrays")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__})") from None
    for saved, want in zip(leaves, template):
        if saved.shape != want.shape or saved.dtype != want.dtype:
            raise CheckpointError(f"{path} holds a state of another shape")
    treedef = jax.tree_util.tree_structure(trained_part(fresh))
    step, delta, opt_state, v, alive, diverged, sharp_v, conv_v = jax.tree_util.tree_unflatten(
        treedef, [jax.numpy.asarray(x) for x in leaves])
    if not np.all(np.asarray(leaves[0]) == meta["step"]):
        raise CheckpointError(f"{path}: the state is at step {int(np.max(leaves[0]))}, not at "
                              f"step {meta['step']} of its chunk count")
    return fresh._replace(step=step, delta=delta, opt_state=opt_state, v=v, alive=alive,
                          diverged_step=diverged, sharp_v=sharp_v, conv_v=conv_v)


def costs(out: Path, batches: list[int]) -> dict[str, float]:
    """The Cadence stats of the finished `batches`' checkpoints, summed: count, seconds,
    bytes."""
    total = {"count": 0, "seconds": 0.0, "bytes": 0}
    for b in batches:
        for k, v in (load(out, b).get("checkpoints") or {}).items():
            total[k] += v
    return total


def discard(out: Path, batch: int) -> None:
    """Removes a batch's checkpoint (it is then recomputed from its start)."""
    _path(out, batch).unlink(missing_ok=True)


def finish(out: Path) -> None:
    """Removes the per-batch state of a complete sweep (and any temporary file a crash
    left): at its end, and again whenever it is found complete, since a kill between the
    complete manifest and this cleanup leaves them."""
    shutil.rmtree(out / STATE, ignore_errors=True)
    clean_leftovers(out)
