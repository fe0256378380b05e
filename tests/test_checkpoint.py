"""Batch checkpoints: one file holds the chunk count, the parts and the state, and a
count that does not match is refused."""

import json

import numpy as np
import pytest

from overparam import checkpoint, resultsdir, store


def _parts(batch, chunks):
    return {f"{t}/{store.part_name(batch, c)}": {"rows": 1, "sha256": "0" * 64}
            for t in (store.STEPS, store.LAYERS) for c in range(chunks)}


def test_a_batch_not_started_has_no_chunks_done(tmp_path):
    assert checkpoint.load(tmp_path, 3).to_dict() == {"chunks_done": 0, "step": 0, "parts": {}}


def test_meta_round_trips_in_one_file(tmp_path):
    stats = {"count": 2, "seconds": 0.5, "bytes": 4096, "every_seconds": 60.0}
    results = {"zero_step": [4, None], "final_loss": [0.25, None]}
    checkpoint.save(tmp_path, 2, checkpoint.CheckpointMeta(
        chunks_done=3, step=30, parts=_parts(2, 3), results=results, diverged_step=[-1, 7],
        checkpoints=stats))
    assert [p.name for p in (tmp_path / checkpoint.STATE).iterdir()] == ["b00002.npz"]
    meta = checkpoint.load(tmp_path, 2)
    assert meta.to_dict() == {"chunks_done": 3, "step": 30, "parts": _parts(2, 3),
                              "results": results, "diverged_step": [-1, 7], "checkpoints": stats}
    meta.check(2, steps_per_chunk=10, num_chunks=3)


@pytest.mark.parametrize("meta, words", [
    ({"chunks_done": 2, "step": 30, "parts": _parts(0, 2), "results": {}}, "do not match"),
    ({"chunks_done": 4, "step": 40, "parts": _parts(0, 4), "results": {}},
     "do not match"),   # > num_chunks
    ({"chunks_done": 2, "step": 20, "parts": _parts(0, 1), "results": {}}, "lists 2 parts"),
    ({"chunks_done": 2, "step": 20, "parts": _parts(0, 2)}, "no per-run results"),
    ({"chunks_done": 3, "step": 30, "parts": _parts(0, 3), "results": {}}, "diverged steps"),
])
def test_an_inconsistent_checkpoint_is_refused(meta, words):
    with pytest.raises(checkpoint.CheckpointError, match=words):
        checkpoint.CheckpointMeta.from_dict(meta).check(0, steps_per_chunk=10, num_chunks=3)


@pytest.mark.parametrize("garbage", [b"", b"PK\x03\x04 not a zip", b"x" * 1000])
def test_an_unreadable_checkpoint_is_a_checkpoint_error(tmp_path, garbage):
    checkpoint.save(tmp_path, 0, checkpoint.CheckpointMeta(chunks_done=1, step=10,
                                                           parts=_parts(0, 1), results={}))
    path = tmp_path / checkpoint.STATE / "b00000.npz"
    path.write_bytes(garbage)
    with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
        checkpoint.load(tmp_path, 0)


def test_leftovers_are_only_overparams_own_temporaries(tmp_path):
    store.write_json({"a": 1}, tmp_path / "m.json")
    own = tmp_path / "steps" / f".part.parquet.0123abcd{store.TEMP_SUFFIX}"
    own.parent.mkdir()
    own.write_bytes(b"half")
    theirs = [tmp_path / ".notes.tmp", tmp_path / "steps" / ".x.deadbeef.tmp"]
    for p in theirs:
        p.write_text("keep")
    assert resultsdir.clean_leftovers(tmp_path) == 1
    assert not own.exists() and all(p.exists() for p in theirs)


def test_clear_keeps_only_the_lock(tmp_path):
    lock = resultsdir.Lock(tmp_path)
    lock.acquire()
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "part").write_bytes(np.zeros(3).tobytes())
    (tmp_path / "manifest.json").write_text("{}")
    resultsdir.clear(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [resultsdir.LOCK]
    lock.release()


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_cadence_checkpoints_every_chunk_at_interval_zero():
    cadence = checkpoint.Cadence(0, clock=_Clock())
    assert all(cadence.due() for _ in range(3))


def test_cadence_waits_for_its_interval_and_twenty_times_the_last_checkpoint():
    clock = _Clock()
    cadence = checkpoint.Cadence(60, clock=clock)
    clock.t = 59.0
    assert not cadence.due()
    clock.t = 60.0
    assert cadence.due()
    cadence.record(seconds=10.0, nbytes=5 * 2**30)   # a slow checkpoint: wait 200 s now
    clock.t = 60.0 + 199.0
    assert not cadence.due()
    clock.t = 60.0 + 200.0
    assert cadence.due()
    assert cadence.stats() == {"count": 1, "seconds": 10.0, "bytes": 5 * 2**30}


def test_a_file_in_place_of_the_results_directory_is_refused_and_kept(tmp_path):
    out = tmp_path / "results"
    out.write_text("keep")
    with pytest.raises(resultsdir.OutError, match="exists and is not a directory"):
        resultsdir.Lock(out).acquire()
    with pytest.raises(resultsdir.OutError, match="exists and is not a directory"):
        resultsdir.inspect(out, {}, overwrite=False)
    assert out.read_text() == "keep"


@pytest.mark.parametrize("finished", [False, True])
def test_the_meta_on_disk_is_the_json_the_dicts_wrote(tmp_path, finished):
    """CheckpointMeta writes the very JSON text that the string-keyed dicts before it wrote
    (sorted keys, the finished fields only once finished), and reads a file written so:
    the checkpoints of an older overparam still resume."""
    old = {"chunks_done": 1, "step": 10, "parts": _parts(0, 1),
           "results": {"zero_step": [4], "final_loss": [0.25]}}
    if finished:
        old.update(diverged_step=[-1], checkpoints={"count": 1, "seconds": 0.5, "bytes": 8})
    text = json.dumps(old, sort_keys=True)
    path = tmp_path / checkpoint.STATE / "b00000.npz"
    path.parent.mkdir()
    with open(path, "wb") as f:
        np.savez(f, meta=np.array(text))
    meta = checkpoint.load(tmp_path, 0)
    assert meta == checkpoint.CheckpointMeta(**old) and meta.finished == finished
    path.unlink()
    checkpoint.save(tmp_path, 0, meta)
    with np.load(path) as z:
        assert str(z["meta"]) == text
