"""Grid -> shape groups -> batches of networks -> chunks of recorded steps.

Runs that share a `train.Static` (width, depth, n, batch size, loss,
optimizer, parameterization and the sweep's numerics) share one compiled
program. A group larger than the memory budget allows is split into batches
of equal size (the last one padded with copies of a real run, whose output is
dropped), so each shape still compiles once. Small widths are never padded up
to large ones.

How much memory a batch needs comes from `measure(static, size)`: the engine
compiles the batch's programs and reads XLA's memory analysis. Without it
(tests, quick looks) an analytic estimate, `bytes_per_network`, stands in.
On a GPU compiling takes memory too (XLA autotunes each GEMM on real buffers),
so there measuring starts from the batch that the estimate fits. The budget
is a share of the memory that each device can still give: its allocator's
limit less what is in use, and on a GPU less what other processes hold
(`device_memory_budget_mb`).
A resumed or multi-process sweep rebuilds the plan from the batch sizes in
its manifest (`groups`), so it never depends on re-measuring.

Before anything is allocated or written, `check_resources` holds a sweep to a
bound computed from its fields alone (`footprint`: arithmetic, at once): the
step counter, one network against a device, every array the host builds
(training and test sets, kernels, a batch's inputs, a chunk's records, a
checkpoint, the manifest) against half the RAM, and every byte written
(steps/ and layers/ rows, datasets, checkpoints, manifest) against the free
space of --out's file system; a refusal is one line naming the field.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fractions
import itertools
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import jax

from overparam import config as config_lib
from overparam import train


@dataclasses.dataclass(frozen=True)
class Batch:
    """Networks trained together by one program. runs[:num_real] are real."""

    index: int
    static: train.Static
    runs: tuple[config_lib.Run, ...]
    num_real: int
    memory_bytes: int = 0   # peak device memory of its programs (per device), measured or estimated
    measured: bool = False  # memory_bytes is XLA's memory analysis, not the analytic estimate

    @property
    def size(self) -> int:
        return len(self.runs)


@dataclasses.dataclass(frozen=True)
class Plan:
    batches: tuple[Batch, ...]
    num_records: int    # steps / record_every + 1 (step 0 included)
    chunk_records: int  # records per compiled chunk
    num_chunks: int
    budget_mb: float    # device memory allowed per program
    multiple_of: int = 1  # batch sizes are multiples of it (the number of devices)
    record_every: int = 1

    @property
    def steps_per_chunk(self) -> int:
        """Training steps of one chunk (its records x record_every): after chunk c,
        every network of a batch is at step (c + 1) x steps_per_chunk."""
        return self.chunk_records * self.record_every

    @property
    def num_runs(self) -> int:
        return sum(b.num_real for b in self.batches)

    @property
    def num_programs(self) -> int:
        return len({b.static for b in self.batches})

    @property
    def groups(self) -> list[dict]:
        """Each shape group's batch size and memory, in group order: what `make_plan`
        takes back (`groups=`) to rebuild this plan without measuring."""
        first = {}
        for b in self.batches:
            first.setdefault(b.static, b)
        return [{"size": b.size, "memory_bytes": b.memory_bytes, "measured": b.measured}
                for b in first.values()]


def static_for(sweep: config_lib.Sweep, run: config_lib.Run, chunk_records: int,
               fixed_loops: bool = False) -> train.Static:
    """The program of `run`: each field of `train.Static` from the run's grid point
    where the run has it (width, n, loss, ...), else from the sweep field of that name;
    fixed_loops: the accelerators' variant (`train.Static`)."""
    names = {f.name for f in dataclasses.fields(train.Static)} - {"chunk_records", "cache_group",
                                                                  "fixed_loops"}
    return train.Static(chunk_records=chunk_records, fixed_loops=fixed_loops,
                        **{k: getattr(run if hasattr(run, k) else sweep, k) for k in names})


def _itemsize(dtype: str) -> int:
    return 8 if dtype == "float64" else 4


def _positions(static: train.Static) -> int:
    """Where a hidden unit is evaluated per example: an image's d pixels (cnn, resnet), or
    once (the mlp; a flax module counts as the mlp of its width and depth)."""
    return static.d if static.arch in config_lib.CONV_ARCHS else 1


def num_params(static: train.Static) -> int:
    """Weights of one network: the mlp's matrices, or 3x3 convolutions of `width` channels
    on a one-channel image, and the readout."""
    m, L = static.width, static.depth
    if static.arch in config_lib.CONV_ARCHS:
        return 9 * (m + (L - 1) * m * m) + m
    return m * static.d + (L - 1) * m * m + m


def record_values(depth: int) -> int:
    """Values of one record of one network: its step, the steps table's measurements and
    the layers table's for each of its layers."""
    return 1 + len(train.STEP_FIELDS) + depth * len(train.LAYER_FIELDS)


def bytes_per_network(static: train.Static) -> int:
    """A generous estimate of one network's live device memory in a chunk: weights (5 or
    6 copies), activations and patterns at every layer (and position), a chunk's
    records, the training and test points, H(0), H^inf and H(t) with Gram tracking, and
    Lanczos's vectors and tridiagonal with sharpness.

    Against XLA's measure on the CPU (the per-network slope of batches of 1 and 4;
    width 512, depth 2, n 128, d 64): 8.8 MB measured for 9.5 MB estimated (Gram
    tracking, test points), 22.7 for 25.9 (sharpness, momentum); convolutions (width
    32, n 32, 8x8 images) keep more temporaries than z, relu(z) and their cotangents:
    5.8 MB for 6.6 (cnn), 9.1 for 9.8 (resnet, test points).
    """
    itemsize = _itemsize(static.dtype)
    m, L, n, p = static.width, static.depth, static.n, _positions(static)
    conv = static.arch in config_lib.CONV_ARCHS
    params = num_params(static)
    copies = 6 if static.momentum else 5   # W(0), D, gradient, update, new D (+ momentum)
    activations = (12 if conv else 4) * n * m * L * p  # z, relu(z), their cotangents
    patterns = n * m * L * p               # bool, 1 byte
    records = static.chunk_records * record_values(L) + n * (static.d + 2)
    # X_test, y_test, f0_test, the forward pass
    test = static.n_test * (static.d + 2 + (6 if conv else 2) * m * L * p)
    gram = 3 * n * n if static.gram_every else 0  # H(0), H^inf, H(t)
    # Lanczos's vectors (three, and the Ritz vector), its warm start, the Hessian-vector
    # product's tangents and their cotangents; its tridiagonal T, T's eigenvectors and a
    # work copy.
    lanczos = 14 * params + 3 * static.sharpness_iters ** 2 if static.sharpness_every else 0
    return ((copies * params + activations + records + test + gram + lanczos) * itemsize
            + patterns)


def state_bytes(static: train.Static) -> int:
    """One network's checkpointed state (`checkpoint.trained_part`): W - W(0), the momentum
    and the sharpness's warm start where they exist, and the warm starts of its spectral
    norms (a (2, fan_in) vector per layer, and (2, d, c_in) per convolution)."""
    m, L, d = static.width, static.depth, static.d
    copies = 1 + bool(static.momentum) + bool(static.sharpness_every)
    if static.arch in config_lib.CONV_ARCHS:
        starts = 2 * (9 + d) * (1 + (L - 1) * m)
    else:
        starts = 2 * (d + (L - 1) * m)
    return (copies * num_params(static) + starts + 8) * _itemsize(static.dtype)


MAX_NETWORKS = 1_000_000  # per sweep: the host holds one Run and one runs.parquet row each


def cache_group_size(static: train.Static, cache_bytes: int) -> int:
    """Networks whose activations (one n x width array) fill `cache_bytes` (at least 1),
    0 for none: a batch runs its chunk as groups of that many networks, one after
    the other (train.chunk_batch), so that on a CPU a group's arrays stay in the
    caches from step to step. benchmarks/cache_groups.py measured 4 MiB best."""
    if not cache_bytes:
        return 0
    itemsize = 8 if static.dtype == "float64" else 4
    positions = static.d if static.arch in config_lib.CONV_ARCHS else 1  # an image's pixels
    return max(1, cache_bytes // (static.n * static.width * positions * itemsize))


def num_networks(sweep: config_lib.Sweep) -> int:
    """How many networks `config_lib.expand(sweep)` gives, without expanding it."""
    return math.prod(_grid_sizes(sweep).values())


def _grid_sizes(sweep: config_lib.Sweep) -> dict[str, int]:
    """Each factor of the grid (networks: their product): seeds, the swept fields, and the
    SGD batch sizes with the optimizers (GD takes one, n)."""
    sizes = {"num_seeds": sweep.num_seeds, "widths": len(sweep.widths),
             "depths": len(sweep.depths), "n": len(sweep.n), "lr": len(sweep.lr),
             "loss": len(sweep.loss), "param": len(sweep.param),
             "output_scale": len(sweep.output_scale), "arch": len(sweep.arch),
             "digits_task": len(config_lib.tasks(sweep))}
    sizes["optimizer"] = sum(len(sweep.batch_size) if o == "sgd" else 1
                             for o in sweep.optimizer)
    return sizes


def _size(nbytes: int) -> str:
    """512 bytes, 1.5 GiB, 12.0 TiB, ... (exact for integers of any size)."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    nbytes = int(nbytes)
    k = 0
    while k < len(units) - 1 and nbytes >= 1024 ** (k + 1):
        k += 1
    if k == 0:
        return f"{nbytes} bytes"
    if nbytes >= 10**6 * 1024**k:  # beyond a million EiB
        return f"~10^{len(str(nbytes)) - 1} bytes"
    return f"{nbytes / 1024**k:,.1f} {units[k]}"


# ---------------------------------------------------------------- what a sweep holds and writes

STEP_LIMIT = 2**31 - 1     # train.State.step and diverged_step are int32
HOST_SHARE = 0.5           # of the RAM: what the host's arrays may take at their peak
HOST_BASE = 2**30          # the interpreter, JAX, XLA and the compiled programs
PROGRAM_BYTES = 16 * 2**20  # per device: a program's own temporaries beyond its networks'
# (measured on the CPU: under 1 MiB for a batch of one)
RUN_HOST_BYTES = 4096      # per network: its Run, runs.parquet's row, its entries by run_id
HOST_ROW_BYTES = 256       # per row of a chunk on the host: its run_id as text three times
# (NumPy's 64 bytes, Python's and Arrow's), and 4 copies of its values (8 bytes each at most)
HOST_FILE_ENTRY = 1024     # per file listed in the manifest (a dict of rows and hash)
PART_BYTES = 16 * 1024     # per Parquet file beyond its rows: the footer, the schema's docs
# (measured: 10.4 KiB for a steps/ part of one row)
RUN_ROW_BYTES = 1024       # per runs.parquet row
MANIFEST_BASE = 64 * 1024  # the manifest's config, versions, device and plan summary
MANIFEST_ENTRY = 256       # per file, per batch (its line of the plan) and per dataset
CHECKPOINT_ENTRY = 256     # per part listed in a batch checkpoint's meta
DISK_SLACK = fractions.Fraction(3, 2)  # Parquet's bytes per row, at most, over the raw values'
# (measured on random values: 1.2x for steps/, 1.1x for layers/ and datasets/)


def steps_row_bytes(dtype: str) -> int:
    """Raw bytes of a steps/ row: run_id (16 characters and an 8-byte offset), step, the
    measurements (in the sweep's dtype)."""
    return 24 + 8 + len(train.STEP_FIELDS) * _itemsize(dtype)


def layers_row_bytes(dtype: str) -> int:
    """Raw bytes of a layers/ row: run_id, step, layer, the measurements."""
    return 24 + 16 + len(train.LAYER_FIELDS) * _itemsize(dtype)


def dataset_row_bytes(d: int, dtype: str) -> int:
    """Raw bytes of a datasets/ row: dataset_id, split, index, x (d values and a definition
    level each) and y."""
    itemsize = _itemsize(dtype)
    return 20 + 16 + 8 + d * (itemsize + 1) + itemsize


@dataclasses.dataclass(frozen=True)
class Footprint:
    """What a sweep holds and writes, from its fields alone (`footprint`: arithmetic,
    nothing is allocated). Every figure is an upper bound of what the engine does.

    networks: the grid's size. host: the host memory the sweep's arrays take at their
    peak, by item (their sum bounds the peak, as if every item were alive at once).
    device: the device memory of one network, the largest of the grid, in a batch of
    its own (`bytes_per_network` and PROGRAM_BYTES). disk: the bytes written into --out,
    by item, the transient copies of an atomic replacement included. rows: the rows of
    steps/ and layers/. last_step: the step the training runs through (chunks are
    equal, so a sweep's last chunk can go past `steps`; those records are dropped).
    """

    networks: int
    host: dict[str, int]
    device: int
    disk: dict[str, int]
    rows: dict[str, int]
    last_step: int


def _largest(sweep: config_lib.Sweep, arch: str, chunk_records: int, *, width: int = 0,
             depth: int = 0) -> train.Static:
    """The largest network of an arch (of a width and depth, if given): each size at its
    maximum over the grid (a network's memory grows with every one of them)."""
    n = max(sweep.n)
    n_test = max(config_lib.held_out_points(sweep, k, task) for k in sweep.n
                 for task in config_lib.tasks(sweep))
    return train.Static(width=width or max(sweep.widths), depth=depth or max(sweep.depths),
                        n=n, d=sweep.d, batch_size=n, loss="squared", optimizer="gd",
                        param="du", arch=arch, momentum=sweep.momentum, dtype=sweep.dtype,
                        n_test=n_test, gram_every=sweep.gram_every,
                        chunk_records=chunk_records, sharpness_every=sweep.sharpness_every,
                        sharpness_iters=sweep.sharpness_iters)


def _batches(sweep: config_lib.Sweep, chunk_records: int, inputs: int, *, budget: int,
             devices: int, cache_bytes: int) -> list[tuple[int, train.Static]]:
    """(the most networks a batch can hold, the largest network) of each (arch, width,
    depth) of the grid. inputs: the least bytes of a network's training and test points.

    A batch fits the plan's budget on each device by XLA's measure, which counts at
    least each network's state and initial weights, inputs and records (the chunk
    program's arguments and outputs), unless it is the smallest batch there is: the
    devices times a cache group (`make_plan`). It holds networks of one shape only,
    at most those of its (arch, width, depth): the grid's networks over those
    combinations."""
    itemsize = _itemsize(sweep.dtype)
    share = num_networks(sweep) // (len(sweep.arch) * len(sweep.widths) * len(sweep.depths))
    out = []
    for arch, width, depth in itertools.product(sweep.arch, sweep.widths, sweep.depths):
        static = _largest(sweep, arch, chunk_records, width=width, depth=depth)
        floor = (state_bytes(static) + num_params(static) * itemsize + inputs
                 + chunk_records * record_values(depth) * itemsize)
        group = cache_bytes // max(1, min(sweep.n) * width * _positions(static) * itemsize)
        smallest = devices * max(1, group)
        out.append((min(share, max(devices * budget // floor, smallest)), static))
    return out


def footprint(sweep: config_lib.Sweep, *, device_bytes: int, workers: int, devices: int = 1,
              processes: int = 1, cache_bytes: int = 0, fixed_loops: bool = False) -> Footprint:
    """The bound on what `sweep` holds and writes (`Footprint`), item by item.

    device_bytes: one device's memory; workers: the threads that compute the kernels
    H^inf at once (`prepare.kernels`: one per core); devices: this process's devices (a
    batch spans them); processes: the processes of the sweep (each trains, and
    checkpoints, one batch at a time: a finished batch's checkpoint keeps no state);
    cache_bytes, fixed_loops: `make_plan`'s. A batch holds at most `_batches`' networks.

    Host: HOST_BASE; RUN_HOST_BYTES per network; every training and test set, kept
    ((n + n_test) (d + 1) values each), and the largest one being drawn (four float64
    copies, its Parquet table, its teacher's (n + n_test) x teacher_width activations,
    the separation's n x n distances); `workers` kernels at once, (4 L + 10) n x n
    float64 each (the arc-cosine recursion's layers, the eigensolver's and the solve's
    copies), and with Gram tracking every H^inf kept; a batch's inputs (twice), a
    chunk's records as rows (two chunks: one written while the next trains) and a
    checkpoint's state; HOST_FILE_ENTRY per file of the manifest. Disk: the rows of
    steps/ and layers/ (networks x records (x layers)) and of datasets/ at DISK_SLACK
    times their raw bytes, PART_BYTES per file, runs.parquet, each process's
    checkpoint and the manifest twice (an atomic replacement holds the old file and
    the new), CHECKPOINT_ENTRY per part in the checkpoints' lists. The number of
    batches, unknown before the plan, is bounded by the number of networks (a batch
    holds at least one).
    """
    itemsize = _itemsize(sweep.dtype)
    count = num_networks(sweep)
    num_records, chunk_records, num_chunks = sweep_chunking(sweep, fixed_loops)
    last_step = num_chunks * chunk_records * sweep.record_every
    rows = {"steps": count * num_records,
            "layers": count // len(sweep.depths) * sum(sweep.depths) * num_records}
    parts = 2 * count * num_chunks  # steps/ and layers/, per batch and chunk
    sets = [(n + config_lib.held_out_points(sweep, n, task), n) for n in sweep.n
            for task in config_lib.tasks(sweep)]
    num_sets = sweep.num_seeds * len(sets)
    files = parts + num_sets + 1
    points = sweep.num_seeds * sum(k for k, _ in sets)
    big, n, d, L = max(k for k, _ in sets), max(sweep.n), sweep.d, max(sweep.depths)
    device = PROGRAM_BYTES + max(bytes_per_network(_largest(sweep, arch, chunk_records))
                                 for arch in sweep.arch)
    inputs = (big * (d + 1) + (n * n if sweep.gram_every else 0)) * itemsize
    budget = int(sweep.memory_budget_mb * 2**20) or int(DEVICE_MEMORY_SHARE * device_bytes)
    least = min(k for k, _ in sets) * (d + 1) * itemsize  # the smallest set's points
    batches = _batches(sweep, chunk_records, least, budget=budget, devices=devices,
                       cache_bytes=cache_bytes)
    state = max(b * state_bytes(s) for b, s in batches)
    chunk = max(b * chunk_records * (1 + s.depth) for b, s in batches)  # rows of a chunk
    row_bytes = HOST_ROW_BYTES + 32 * record_values(1)

    teacher = 0
    if sweep.labels.startswith("teacher"):
        teacher = sweep.teacher_width * (d + 1 + 2 * big) * 8
    separation = 41 * n * n if sweep.sign_labels else 0
    table = big * (3 * dataset_row_bytes(d, sweep.dtype) + 512)
    drawing = big * (4 * (d + 1) * 8 + 8 * d + 160) + table + teacher + separation
    kernels = 0
    if "mlp" in sweep.arch:
        count_kernels = num_sets * len(sweep.param) * len(sweep.depths)
        kernels = min(workers, count_kernels) * (4 * L + 10) * n * n * 8
        if sweep.gram_every:  # kept
            kernels += (sweep.num_seeds * sum(k * k for _, k in sets) * len(sweep.param)
                        * len(sweep.depths) * itemsize)
    host = {
        "runs": count * RUN_HOST_BYTES + HOST_BASE,
        "training and test sets": points * (d + 1) * itemsize,
        "drawing a set": drawing,
        "kernels H^inf": kernels,
        "a batch's inputs": 2 * max(b for b, _ in batches) * inputs,
        "a chunk's records": 2 * chunk * row_bytes,
        "a checkpoint": state,
        "the manifest": files * HOST_FILE_ENTRY,
    }
    slack = lambda raw: int(raw * DISK_SLACK)
    disk = {
        "steps/": slack(rows["steps"] * steps_row_bytes(sweep.dtype)),
        "layers/": slack(rows["layers"] * layers_row_bytes(sweep.dtype)),
        "datasets/": slack(points * dataset_row_bytes(d, sweep.dtype)),
        "files' footers": files * PART_BYTES,
        "runs.parquet": 2 * (count * RUN_ROW_BYTES + PART_BYTES),
        "checkpoints": 2 * processes * state + parts * CHECKPOINT_ENTRY,
        "manifest.json": 2 * (MANIFEST_BASE + (files + count + num_sets) * MANIFEST_ENTRY),
    }
    return Footprint(networks=count, host=host, device=device, disk=disk, rows=rows,
                     last_step=last_step)


def numeric_fields() -> tuple[str, ...]:
    """The fields whose values are numbers (or tuples of numbers): those a size can come
    from, and so the fields a refused size is blamed on."""
    def numeric(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return tuple(f.name for f in config_lib.FIELDS
                 if numeric(f.default) or (isinstance(f.default, tuple)
                                           and all(numeric(v) for v in f.default)))


def _culprit(sweep: config_lib.Sweep, need: Callable[[config_lib.Sweep], int],
             fallback: str) -> str:
    """The field to change: of the numeric fields that `need` grows with (doubling the
    value raises it: a size, not a switch such as sharpness_every), the one whose
    default lowers `need(sweep)` the most; `fallback` where none does."""
    def replaced(name: str, value) -> int:
        return need(dataclasses.replace(sweep, **{name: value}))

    def doubled(value):
        return tuple(2 * v for v in value) if isinstance(value, tuple) else 2 * value

    now, best, field = need(sweep), 0, fallback
    for name in numeric_fields():
        value = getattr(sweep, name)
        lower = now - replaced(name, config_lib.DEFAULTS[name])
        if lower > best and replaced(name, doubled(value)) > now:
            best, field = lower, name
    return field


def disk_room(out: str | os.PathLike) -> int:
    """The bytes a sweep may write into `out`: the free space of its file system (that of
    its nearest existing ancestor) and the files `out` holds already (a resumed or
    replaced sweep's own, which its writes replace)."""
    out = Path(os.path.abspath(out))
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    held = 0
    if out.is_dir():
        try:
            held = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        except OSError:
            held = 0
    return free + held


def _top(items: dict[str, int], k: int = 3) -> str:
    """The k largest items, as 'name size, ...'."""
    top = sorted(items.items(), key=lambda kv: -kv[1])[:k]
    return ", ".join(f"{name} {_size(v)}" for name, v in top if v)


def check_resources(sweep: config_lib.Sweep, out: str | os.PathLike | None = None, *,
                    device_bytes: int | None = None, host_bytes: int | None = None,
                    disk_bytes: int | None = None, workers: int | None = None,
                    devices: int | None = None, processes: int | None = None,
                    cache_bytes: int | None = None) -> None:
    """Refuses, before anything is allocated or written, a sweep this machine cannot hold.

    Arithmetic on the fields only (`footprint`), so it answers at once. ConfigError,
    one line naming the field to change (`_culprit`: of the numeric fields the need
    grows with, the one whose default lowers it the most) and the size: more
    networks than MAX_NETWORKS; a
    training that runs past STEP_LIMIT (the int32 step counter); a memory_budget_mb
    beyond a device; one network larger than a device (`device_bytes`, default the
    first local device's memory, or the RAM on the CPU); host arrays beyond HOST_SHARE
    of the RAM (`host_bytes`, default the RAM); writes beyond `disk_bytes` (default
    `disk_room(out)`; not checked without either). workers (default the CPU count),
    devices, processes and cache_bytes (default this process's JAX's): `footprint`'s.
    """
    count = num_networks(sweep)
    if count > MAX_NETWORKS:
        sizes = _grid_sizes(sweep)
        field = max(sizes, key=sizes.get)
        raise config_lib.ConfigError(field, f"the grid has {count:,} networks, more than the "
                                     f"{MAX_NETWORKS:,} a sweep may have (its runs alone "
                                     f"would take ~{_size(count * RUN_HOST_BYTES)} of host "
                                     "memory); split it into several sweeps")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    device_bytes = device_capacity() if device_bytes is None else device_bytes
    host_bytes = ram if host_bytes is None else host_bytes
    if disk_bytes is None and out is not None:
        disk_bytes = disk_room(out)
    from overparam import programs

    if cache_bytes is None:
        cache_bytes = programs.cache_bytes()
    machine = dict(device_bytes=device_bytes, workers=workers or os.cpu_count() or 1,
                   devices=devices or len(jax.local_devices()),
                   processes=processes or jax.process_count(), cache_bytes=cache_bytes,
                   fixed_loops=programs.fixed_loops())
    fp = lambda s: footprint(s, **machine)
    need = fp(sweep)
    if need.last_step > STEP_LIMIT:
        raise config_lib.ConfigError("steps", f"training runs through step {need.last_step:,} "
                                     "(steps, in equal chunks); the step counter is int32: at "
                                     f"most {STEP_LIMIT:,}")
    if sweep.memory_budget_mb * 2**20 > device_bytes:
        raise config_lib.ConfigError("memory_budget_mb", f"{sweep.memory_budget_mb:,.0f} MiB "
                                     f"is more than the device's {_size(device_bytes)}")
    if need.device > device_bytes:
        field = _culprit(sweep, lambda s: fp(s).device, "widths")
        big = _largest(sweep, sweep.arch[0], sweep_chunking(sweep, machine["fixed_loops"])[1])
        raise config_lib.ConfigError(field, f"one network (width {big.width:,}, depth "
                                     f"{big.depth:,}, d={big.d:,}, n={big.n:,}, n_test="
                                     f"{big.n_test:,}, {big.chunk_records:,} records a chunk)"
                                     f" needs ~{_size(need.device)} of device memory; the "
                                     f"device has {_size(device_bytes)}")
    limit = int(HOST_SHARE * host_bytes)
    if sum(need.host.values()) > limit:
        field = _culprit(sweep, lambda s: sum(fp(s).host.values()), "n")
        raise config_lib.ConfigError(field, f"the sweep needs ~{_size(sum(need.host.values()))} "
                                     f"of host memory ({_top(need.host)}); the limit is "
                                     f"{_size(limit)}, {HOST_SHARE:.0%} of {_size(host_bytes)} "
                                     "of RAM")
    if disk_bytes is not None and sum(need.disk.values()) > disk_bytes:
        field = _culprit(sweep, lambda s: sum(fp(s).disk.values()), "steps")
        raise config_lib.ConfigError(field, f"the sweep writes ~{_size(sum(need.disk.values()))} "
                                     f"({need.rows['steps']:,} steps/ rows, "
                                     f"{need.rows['layers']:,} layers/ rows: "
                                     f"{_top(need.disk)}); --out has {_size(disk_bytes)} of "
                                     "room")


def step_flops(static: train.Static) -> int:
    """FLOPs of one training step of one network (forward and backward over its batch): of
    the MLP's matrices, or of 3x3 convolutions at each of an image's d positions (cnn,
    resnet; a flax module counts as the MLP of its width and depth)."""
    m, L = static.width, static.depth
    if static.arch in config_lib.CONV_ARCHS:
        return 6 * static.batch_size * (static.d * 9 * (m + (L - 1) * m * m) + m)
    return 6 * static.batch_size * (static.d * m + (L - 1) * m * m + m)


def chunking(steps: int, record_every: int, chunk_steps: int,
             period: int = 1) -> tuple[int, int, int]:
    """(num_records, chunk_records, num_chunks) with equal chunks and fewer than
    num_chunks x period spare records.

    period: chunk_records is a multiple of it (`record_period`: the records from one
    record that is both a Gram and a sharpness record to the next), so that every chunk
    starts where a period does and its Gram and sharpness records are at the same
    positions (what the accelerators' programs need: train.Static.fixed_loops). A chunk
    is at most chunk_steps long, or one period where that is longer.
    """
    num_records = steps // record_every + 1
    target = max(1, chunk_steps // record_every)
    target = max(period, target // period * period)
    num_chunks = -(-num_records // target)  # integer ceilings: exact for any size
    return num_records, -(-num_records // (num_chunks * period)) * period, num_chunks


def record_period(sweep: config_lib.Sweep) -> int:
    """`train.record_period` of the sweep: records from one Gram-and-sharpness record to
    the next (1 without either)."""
    return train.record_period(sweep.record_every, sweep.gram_every, sweep.sharpness_every)


def sweep_chunking(sweep: config_lib.Sweep, fixed_loops: bool) -> tuple[int, int, int]:
    """`chunking` of the sweep: (num_records, chunk_records, num_chunks); chunks of whole
    `record_period`s for the accelerators' programs (fixed_loops), else of any length (a
    Gram period longer than the run costs the CPU nothing)."""
    period = record_period(sweep) if fixed_loops else 1
    return chunking(sweep.steps, sweep.record_every, sweep.chunk_steps, period)


DEVICE_MEMORY_SHARE = 0.6  # of the memory a device can still give (of RAM on the CPU: half that)
GPU_RESERVE_BYTES = 2**30  # of a GPU's free memory: CUDA's and its libraries' own, outside JAX

Measure = Callable[[train.Static, int], int]  # (shape, batch size) -> peak bytes per device


def device_room(stats: dict, device_free: int | None) -> int | None:
    """Bytes that a device's JAX allocator can still give this process; None if unknown.

    stats: the device's `memory_stats()`. bytes_limit is the allocator's cap (on
    a GPU, XLA's BFC allocator: total memory x XLA_PYTHON_CLIENT_MEM_FRACTION, 0.75 by
    default; a TPU may give bytes_reservable_limit instead), bytes_in_use what
    this process holds, pool_bytes what the allocator has taken from the device
    (all of bytes_limit once preallocated; it grows with use when
    XLA_PYTHON_CLIENT_PREALLOCATE=false, overparam's default).
    device_free: the device's free memory as its driver reports it (a GPU), or
    None: memory that other processes hold is not free, and GPU_RESERVE_BYTES
    of it stays free for CUDA's own allocations.
    The room is the smaller of the allocator's (limit - in use) and the device's
    (taken but unused + free - reserve).
    """
    in_use = stats.get("bytes_in_use", 0)
    limit = stats.get("bytes_limit") or stats.get("bytes_reservable_limit")
    rooms = [] if limit is None else [limit - in_use]
    if device_free is not None:
        taken_unused = max(stats.get("pool_bytes", in_use) - in_use, 0)
        rooms.append(taken_unused + device_free - GPU_RESERVE_BYTES)
    return max(min(rooms), 0) if rooms else None


def gpu_free_bytes(device, cuda=None) -> int | None:
    """A CUDA device's free memory (cuMemGetInfo, in the primary context that XLA uses),
    or None where the driver cannot be asked. cuda: the driver library (default
    libcuda.so.1, loaded with ctypes; tests pass a fake)."""
    ordinal = getattr(device, "local_hardware_id", None)
    if not isinstance(ordinal, int):
        return None
    try:
        cuda = cuda or ctypes.CDLL("libcuda.so.1")
        dev, ctx = ctypes.c_int(), ctypes.c_void_p()
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        if (cuda.cuInit(0) or cuda.cuDeviceGet(ctypes.byref(dev), ordinal)
                or cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev)):
            return None
        try:
            if cuda.cuCtxPushCurrent_v2(ctx):
                return None
            try:
                failed = cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total))
            finally:
                cuda.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
        finally:
            cuda.cuDevicePrimaryCtxRelease_v2(dev)
        return None if failed else free.value
    except (OSError, AttributeError, TypeError):  # no driver, or not this driver's API
        return None


def _memory_stats(device) -> dict:
    try:
        return device.memory_stats() or {}
    except (RuntimeError, NotImplementedError):  # a backend without statistics
        return {}


def device_capacity() -> int:
    """The most one local device can hold, in bytes: the RAM on the CPU, else the
    allocator's cap (bytes_limit, or a TPU's bytes_reservable_limit), or without one
    what it can still give (`device_room`); never the RAM. Raises ConfigError
    (memory_budget_mb) on an accelerator that tells neither."""
    device = jax.local_devices()[0]
    if device.platform == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    stats = _memory_stats(device)
    limit = stats.get("bytes_limit") or stats.get("bytes_reservable_limit") or device_room(
        stats, gpu_free_bytes(device) if device.platform == "gpu" else None)
    if limit is None:
        raise config_lib.ConfigError(
            "memory_budget_mb", f"the {device.platform} device tells neither its allocator's "
            "limit nor its free memory; set the budget per program, in MiB")
    return limit


def device_memory_budget_mb() -> float:
    """A memory budget for one program on each local device, in MiB.

    On an accelerator: DEVICE_MEMORY_SHARE of the memory it can still give
    (`device_room`, the least of the local devices'). The rest is headroom: for
    XLA:GPU's autotuning, which runs each GEMM's candidate kernels on real
    buffers of its operands' size while a program compiles (make_plan compiles
    no batch before an estimate says it fits), for the allocator's
    fragmentation, and for what XLA's memory analysis does not count. On the
    CPU, where devices share the RAM, half that share of RAM is split among them.
    Raises ConfigError (memory_budget_mb) on an accelerator that tells neither.
    """
    devices = jax.local_devices()
    if devices[0].platform == "cpu":
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return DEVICE_MEMORY_SHARE / 2 * ram / len(devices) / 2**20
    rooms = [device_room(_memory_stats(d), gpu_free_bytes(d) if d.platform == "gpu" else None)
             for d in devices]
    if None in rooms:
        raise config_lib.ConfigError(
            "memory_budget_mb", f"the {devices[0].platform} device tells neither its allocator's "
            "limit nor its free memory; set the budget per program, in MiB")
    return DEVICE_MEMORY_SHARE * min(rooms) / 2**20


def _round_up(x: int, multiple_of: int) -> int:
    return math.ceil(x / multiple_of) * multiple_of


def _equal_batches(count: int, fit: int, multiple_of: int) -> int:
    """The size of equal batches (multiples of `multiple_of`) of at most `fit` for `count`."""
    fit = max(multiple_of, fit // multiple_of * multiple_of)
    return _round_up(math.ceil(count / math.ceil(count / fit)), multiple_of)


def _fit_measured(static: train.Static, count: int, budget: int, multiple_of: int,
                  measure: Measure, cap: int, first: int | None = None) -> tuple[int, int]:
    """(batch size, its measured bytes) for `count` networks of one shape.

    Starts from `first` (default: one batch of all of them) and shrinks it, by
    the measured bytes per network, until it fits. Memory is close to linear in
    the batch size (everything but the step counter has a networks axis), so
    this takes one measurement when the group fits and usually two when it is
    split. Started below the whole group, it grows once to the size that the
    measured bytes per network fit (kept if it fits). Each size is measured
    with the program it runs (`with_cache_group`).
    """
    whole = _round_up(count, multiple_of)
    size, may_grow, fitted = first or whole, bool(first) and first < whole, None
    while True:
        need = measure(with_cache_group(static, size, cap), size)
        if need <= budget:
            grown = min(_equal_batches(count, int(budget / (need / size)), multiple_of), whole)
            if not may_grow or grown <= size:
                return size, need
            fitted, may_grow, size = (size, need), False, grown
            continue
        if fitted is not None:  # the grown size did not fit after all
            return fitted
        if size == multiple_of:
            return size, need
        new = _equal_batches(count, int(budget / (need / size)), multiple_of)
        size = min(new, size - multiple_of)


def with_cache_group(static: train.Static, size: int, cap: int) -> train.Static:
    """The program of a batch of `size`: in groups of `cap` where it has several."""
    return dataclasses.replace(static, cache_group=cap) if cap and size > cap and size % cap == 0 \
        else static


def make_plan(sweep: config_lib.Sweep, runs: list[config_lib.Run] | None = None,
              *, multiple_of: int = 1, budget_mb: float | None = None,
              measure: Measure | None = None, groups: Sequence[dict] | None = None,
              cache_bytes: int = 0, compiling_allocates: bool | None = None,
              fixed_loops: bool = False) -> Plan:
    """Groups `runs` (default: all of the sweep) into batches that fit the memory budget.

    budget_mb: device memory per program and device; default
    sweep.memory_budget_mb, or `device_memory_budget_mb()` where that is 0.
    multiple_of: batch sizes are rounded up to it (the number of devices).
    measure: the peak bytes of a batch's programs (default: the analytic
    estimate). groups: each shape group's batch size and memory, as
    `Plan.groups` gives them; set, they are used as they are (a resumed sweep).
    A batch of `multiple_of` networks is the smallest there is, even if it
    needs more than the budget (`describe` says so). cache_bytes: where a shape
    has more networks than `cache_group_size` gives, its batches are multiples of
    that group (padded) and run group by group; 0 (the default): no groups.
    compiling_allocates: compiling a program takes device memory, as on a GPU
    (default: JAX runs on one), where XLA autotunes each GEMM on real buffers of
    its operands: then `measure` starts from the batch that the analytic
    estimate fits in the budget, not from the whole group.
    fixed_loops: the programs are the accelerators' (`train.Static.fixed_loops`).
    """
    runs = config_lib.expand(sweep) if runs is None else runs
    num_records, chunk_records, num_chunks = sweep_chunking(sweep, fixed_loops)
    by_shape: dict[train.Static, list[config_lib.Run]] = {}
    for run in runs:
        by_shape.setdefault(static_for(sweep, run, chunk_records, fixed_loops), []).append(run)
    if groups is not None and len(groups) != len(by_shape):
        raise ValueError(f"{len(groups)} groups given for {len(by_shape)} shapes")
    budget_mb = budget_mb or sweep.memory_budget_mb or device_memory_budget_mb()
    budget = int(budget_mb * 2**20)
    batches = []
    for g, (static, group) in enumerate(by_shape.items()):
        cap = cache_group_size(static, cache_bytes)
        step = math.lcm(multiple_of, cap) if cap and len(group) > cap else multiple_of
        if groups is not None:
            size, need, measured = (groups[g][k] for k in ("size", "memory_bytes", "measured"))
        elif measure is not None:
            if compiling_allocates is None:
                compiling_allocates = jax.default_backend() == "gpu"
            first = (min(_equal_batches(len(group), budget // bytes_per_network(static), step),
                         _round_up(len(group), step)) if compiling_allocates else None)
            size, need = _fit_measured(static, len(group), budget, step, measure, cap, first)
            measured = True
        else:
            size = _equal_batches(len(group), budget // bytes_per_network(static), step)
            need, measured = size * bytes_per_network(static), False
        static = with_cache_group(static, size, cap)
        for start in range(0, len(group), size):
            real = tuple(group[start:start + size])
            padded = real + (real[-1],) * (size - len(real))
            batches.append(Batch(index=len(batches), static=static, runs=padded,
                                 num_real=len(real), memory_bytes=need, measured=measured))
    return Plan(batches=tuple(batches), num_records=num_records, chunk_records=chunk_records,
                num_chunks=num_chunks, budget_mb=budget_mb, multiple_of=multiple_of,
                record_every=sweep.record_every)


def describe(plan: Plan) -> str:
    """A short table of the plan: one line per batch."""
    lines = [f"{plan.num_runs} networks, {plan.num_programs} programs, {len(plan.batches)} "
             f"batches, {plan.num_chunks} chunks of {plan.chunk_records} records, "
             f"memory budget {plan.budget_mb:,.0f} MiB per program"]
    for b in plan.batches:
        s = b.static
        mb = b.memory_bytes / 2**20
        how = "measured" if b.measured else "estimated"
        over = " OVER THE BUDGET" if mb > plan.budget_mb else ""
        lines.append(f"  batch {b.index}: {b.num_real} networks (+{b.size - b.num_real} pad) "
                     f"width={s.width} depth={s.depth} n={s.n} batch_size={s.batch_size} "
                     f"loss={s.loss} optimizer={s.optimizer} param={s.param} "
                     f"{mb:,.1f} MiB ({how}){over}"
                     + (f", in groups of {s.cache_group}" if s.cache_group else ""))
    return "\n".join(lines)
