"""Batch checkpoints: a resumable sweep's per-batch state.

Per batch, `.state/b<batch>.npz` is one file, replaced atomically after the
Parquet parts of each chunk:

  meta      JSON (`CheckpointMeta`): chunks_done, step (of the saved state), the
            parts written so far ({path: {rows, sha256}}), the per-run results
            accumulated from them (records.RunResults), and once the batch is
            finished its diverged_step and the cost of its checkpoints
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
files. The directory's state and lock are `overparam.resultsdir`'s.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from overparam import resultsdir, store, trainstate

STATE = ".state"


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
                  "conv_v", "twin", "f_inf")  # twin, f_inf: None (no leaves) unless asked


def trained_part(state: trainstate.State):
    """The part of a State that training changes: its TRAINED_FIELDS, as a tuple."""
    return tuple(getattr(state, k) for k in TRAINED_FIELDS)


def fetch_trained(state: trainstate.State) -> trainstate.State:
    """The state with its `trained_part` fetched to the host and every other field None:
    what `save` needs of a state, taken before a chunk that donates it deletes it."""
    empty = trainstate.State(*(None,) * len(trainstate.State._fields))
    return empty._replace(**jax.device_get({k: getattr(state, k) for k in TRAINED_FIELDS}))


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """What a batch's checkpoint says besides its state (the file's `meta`).

    chunks_done: chunks whose parts are written; step: the step of the saved state
    (chunks_done x the steps per chunk); parts: those parts, {path: {rows, sha256}};
    results: the per-run results accumulated from them (records.RunResults.to_dict;
    None only for a batch not started). A finished batch has diverged_step (its
    networks' first non-finite steps, -1 for none) and checkpoints (its Cadence
    stats); None before.

    On disk it is the JSON object of `to_dict` (sorted keys): the same bytes as the
    string-keyed dicts before this type, so that every checkpoint resumes.
    """

    chunks_done: int = 0
    step: int = 0
    parts: dict[str, dict] = dataclasses.field(default_factory=dict)
    results: dict | None = None
    diverged_step: list[int] | None = None
    checkpoints: dict | None = None

    @property
    def finished(self) -> bool:
        """Whether this is a finished batch's final record (it has its diverged steps)."""
        return self.diverged_step is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object on disk: chunks_done, step, parts, results, and a finished
        batch's diverged_step and checkpoints (a batch not started: the first three)."""
        out: dict[str, Any] = {"chunks_done": self.chunks_done, "step": self.step,
                               "parts": self.parts}
        if self.results is not None or self.finished:
            out["results"] = self.results
        if self.finished:
            out.update(diverged_step=self.diverged_step, checkpoints=self.checkpoints)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, meta: Any) -> CheckpointMeta:
        """The meta of a JSON object; ValueError unless chunks_done and step are integers
        and parts an object (the rest `check` checks against the plan)."""
        if not (isinstance(meta, dict) and isinstance(meta.get("chunks_done"), int)
                and isinstance(meta.get("step"), int) and isinstance(meta.get("parts"), dict)):
            raise ValueError("incomplete meta")
        return cls(chunks_done=meta["chunks_done"], step=meta["step"], parts=meta["parts"],
                   results=meta.get("results"), diverged_step=meta.get("diverged_step"),
                   checkpoints=meta.get("checkpoints"))

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        return cls.from_dict(json.loads(text))

    def check(self, batch: int, *, steps_per_chunk: int, num_chunks: int) -> None:
        """Raises CheckpointError unless this meta is self-consistent: its step is
        chunks_done x steps_per_chunk, it lists both parts of every chunk done, and a
        finished batch has its diverged steps."""
        done = self.chunks_done
        expected = {f"{table}/{store.part_name(batch, c)}"
                    for table in (store.STEPS, store.LAYERS) for c in range(done)}
        if not 0 <= done <= num_chunks or self.step != done * steps_per_chunk:
            raise CheckpointError(f"batch {batch}: the checkpoint says {done} chunks done at "
                                  f"step {self.step}, which do not match ({steps_per_chunk} "
                                  "steps per chunk)")
        if set(self.parts) != expected:
            raise CheckpointError(f"batch {batch}: the checkpoint lists {len(self.parts)} "
                                  f"parts for {done} chunks")
        if done and not isinstance(self.results, dict):
            raise CheckpointError(f"batch {batch}: the checkpoint holds no per-run results")
        if done == num_chunks and not isinstance(self.diverged_step, list):
            raise CheckpointError(f"batch {batch}: finished without its diverged steps")



def save(out: Path, batch: int, meta: CheckpointMeta,
         state: trainstate.State | None = None) -> int:
    """Replaces the checkpoint of `batch` with `meta` (`meta.chunks_done` chunks written,
    as meta.parts) and, for a batch not finished, `state`: its State after them (device
    arrays are fetched here; a finished batch keeps no state). Returns the file's size
    in bytes."""
    leaves = [] if state is None else [np.asarray(x) for x in jax.tree_util.tree_leaves(
        jax.device_get(trained_part(state)))]
    arrays = {"meta": np.array(meta.to_json()),
              **{f"leaf_{i}": a for i, a in enumerate(leaves)}}

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    store.atomic_write(_path(out, batch), write)
    return _path(out, batch).stat().st_size


def load(out: Path, batch: int) -> CheckpointMeta:
    """The checkpoint's meta (CheckpointMeta() for a batch not started: no chunks done).

    Raises CheckpointError for a file that cannot be read, is a link, or whose parts are
    not a list of overparam's files (`store.check_files`: checked before any is used).
    """
    path = _path(out, batch)
    if path.is_symlink():
        raise CheckpointError(f"{path} is a symbolic link, not a checkpoint")
    if not path.is_file():
        return CheckpointMeta()
    try:
        with np.load(path) as z:
            meta = CheckpointMeta.from_json(str(z["meta"]))
    except (OSError, ValueError, KeyError, RecursionError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__})") from None
    try:
        store.check_files(path, meta.parts, "parts")
    except store.ResultsError as e:
        raise CheckpointError(str(e)) from None
    return meta


def load_valid(out: Path, batch: int, plan, log_fn) -> CheckpointMeta:
    """The meta of `batch`'s checkpoint, checked against `plan` (a plan.Plan); one that
    is unreadable or inconsistent is reported through log_fn and removed, and the batch
    starts again."""
    try:
        meta = load(out, batch)
        meta.check(batch, steps_per_chunk=plan.steps_per_chunk, num_chunks=plan.num_chunks)
        return meta
    except CheckpointError as e:
        return recompute(out, batch, e, log_fn)


def recompute(out: Path, batch: int, error: CheckpointError, log_fn) -> CheckpointMeta:
    """Reports `error` through log_fn and removes `batch`'s checkpoint: the batch starts
    again (returns the meta of a batch not started)."""
    log_fn(f"{error}: recomputing batch {batch} from its start")
    discard(out, batch)
    return load(out, batch)

def restore(out: Path, batch: int, fresh: trainstate.State,
            meta: CheckpointMeta) -> trainstate.State:
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
    restored = dict(zip(TRAINED_FIELDS, jax.tree_util.tree_unflatten(
        treedef, [jax.numpy.asarray(x) for x in leaves])))
    if not np.all(np.asarray(leaves[0]) == meta.step):
        raise CheckpointError(f"{path}: the state is at step {int(np.max(leaves[0]))}, not at "
                              f"step {meta.step} of its chunk count")
    return fresh._replace(**restored)


def costs(out: Path, batches: list[int]) -> dict[str, float]:
    """The Cadence stats of the finished `batches`' checkpoints, summed: count, seconds,
    bytes."""
    total = {"count": 0, "seconds": 0.0, "bytes": 0}
    for b in batches:
        for k, v in (load(out, b).checkpoints or {}).items():
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
    resultsdir.clean_leftovers(out)
