"""Resumable sweeps: what a results directory already holds, and batch checkpoints.

A results directory is in one of these states, read from its manifest.json:
absent or empty ('new'), 'running' or 'interrupted' (resumable: same config
only), 'complete'. Per batch, `.state/` holds

  b<batch>.json   {"chunks_done": c, "diverged_step": [...] (when finished)}
  b<batch>.npz    the trained part of the batch's State after chunk c - 1

written in this order after the chunk's Parquet parts, each atomically. A
batch is resumed from its last checkpoint: the weights at initialization,
activation patterns and keys are recomputed from the runs' identities (they
are deterministic), the rest is loaded, so a resumed sweep writes the same
numbers as an uninterrupted one. Parts of a chunk past the last checkpoint
are recomputed and replaced by identical files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from overparam import store, train

STATE = ".state"


class OutError(ValueError):
    """A results directory that cannot be used; str(err) is one line."""

    def __init__(self, message: str):
        super().__init__(f"--out: {message}")


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'field: old -> new' for every field that differs."""
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def inspect(out: Path, config: dict[str, Any], *, overwrite: bool) -> tuple[str, dict]:
    """What to do with `out`, without changing it: ('new' | 'overwrite' | 'resume' |
    'complete', manifest or {}).

    Refuses a file, a foreign non-empty directory, an unreadable manifest and,
    unless overwrite, a sweep of another configuration.
    """
    if not out.exists():
        return "new", {}
    if not out.is_dir():
        raise OutError(f"{out} exists and is not a directory")
    manifest_path = out / store.MANIFEST
    if not manifest_path.is_file():
        leftovers = [p for p in out.iterdir() if not _is_leftover(p)]
        if leftovers:
            raise OutError(f"{out} is not empty and holds no overparam sweep (no "
                           f"{store.MANIFEST}); choose another --out")
        return "new", {}   # empty, or only a crash's temporary files
    try:
        manifest = json.loads(manifest_path.read_text())
        old_config, status = manifest["config"], manifest["status"]
    except (ValueError, KeyError, TypeError) as e:
        raise OutError(f"{manifest_path} is unreadable ({type(e).__name__}); "
                       "delete the directory or choose another --out") from None
    if overwrite:
        return "overwrite", manifest
    diff = config_diff(old_config, config)
    if diff:
        raise OutError(f"{out} holds a different sweep ({'; '.join(diff)}); choose another "
                       "--out, or pass --overwrite to replace it")
    return ("complete" if status == "complete" else "resume"), manifest


def _is_leftover(path: Path) -> bool:
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")


def clean_leftovers(out: Path) -> int:
    """Deletes temporary files a crash left behind; returns how many."""
    leftovers = [p for p in out.rglob(".*.tmp") if _is_leftover(p)]
    for p in leftovers:
        p.unlink()
    return len(leftovers)


def _paths(out: Path, batch: int) -> tuple[Path, Path]:
    base = out / STATE / f"b{batch:05d}"
    return base.with_suffix(".json"), base.with_suffix(".npz")


def trained_part(state: train.State):
    """The part of a State that training changes (the rest is recomputed on resume)."""
    return (state.step, state.delta, state.opt_state, state.v, state.alive,
            state.diverged_step)


def save(out: Path, batch: int, chunks_done: int, state: train.State | None,
         diverged_step: list[int] | None = None) -> None:
    """Records that `chunks_done` chunks of `batch` are written.

    With `state`, also its trained part (device arrays are fetched here); a
    finished batch passes diverged_step instead and its checkpoint is removed.
    """
    meta_path, npz_path = _paths(out, batch)
    if state is not None:
        leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(
            jax.device_get(trained_part(state)))]
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, *leaves)

        store.atomic_write(npz_path, write)
    meta = {"chunks_done": chunks_done}
    if diverged_step is not None:
        meta["diverged_step"] = diverged_step
    store.write_json(meta, meta_path)
    if diverged_step is not None:
        npz_path.unlink(missing_ok=True)


def load(out: Path, batch: int) -> dict[str, Any]:
    """{'chunks_done': 0} for a batch not started."""
    meta_path, _ = _paths(out, batch)
    return json.loads(meta_path.read_text()) if meta_path.is_file() else {"chunks_done": 0}


def restore(out: Path, batch: int, fresh: train.State) -> train.State:
    """`fresh` (a re-initialized State) with the trained part from the checkpoint."""
    _, npz_path = _paths(out, batch)
    with np.load(npz_path) as z:
        leaves = [z[f"arr_{i}"] for i in range(len(z.files))]
    treedef = jax.tree_util.tree_structure(trained_part(fresh))
    step, delta, opt_state, v, alive, diverged = jax.tree_util.tree_unflatten(
        treedef, [jax.numpy.asarray(x) for x in leaves])
    return fresh._replace(step=step, delta=delta, opt_state=opt_state, v=v, alive=alive,
                          diverged_step=diverged)


def finish(out: Path) -> None:
    """Removes the per-batch state of a complete sweep."""
    shutil.rmtree(out / STATE, ignore_errors=True)
