"""Resource checks: what a sweep holds and writes, bounded from its fields alone.

Before anything is allocated or written, `check_resources` holds a sweep to a
bound computed from its fields alone (`footprint`: arithmetic, at once): the
number of networks, the step counter, one network against a device, every
array the host builds (training and test sets, kernels, a batch's inputs, a
chunk's records, a checkpoint, the manifest) against half the RAM, and every
byte written (steps/ and layers/ rows, datasets, checkpoints, manifest)
against the free space of --out's file system; a refusal is one line naming
the field (`_culprit`).
"""

from __future__ import annotations

import dataclasses
import fractions
import itertools
import os
import shutil
import types
from collections.abc import Callable
from pathlib import Path

import jax

from overparam import config as config_lib
from overparam import train
from overparam.config import num_networks
from overparam.plan.batches import static_for, sweep_chunking
from overparam.plan.memory import DEVICE_MEMORY_SHARE, device_capacity
from overparam.plan.sizes import (
    bytes_per_network,
    dataset_row_bytes,
    dtype_bytes,
    layers_row_bytes,
    num_params,
    positions_of,
    record_values,
    state_bytes,
    steps_row_bytes,
)
from overparam.plan.sizes import size_text as _size

MAX_NETWORKS = 1_000_000  # per sweep: the host holds one Run and one runs.parquet row each
STEP_LIMIT = 2**31 - 1     # trainstate.State.step and diverged_step are int32
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
    maximum over the grid (a network's memory grows with every one of them), the other
    swept settings at their first values, full batch; the program `static_for` gives that
    grid point."""
    point = {config_lib.RUN_NAMES[k]: max(v) if all(_numeric(x) for x in v) else v[0]
             for k, v in ((k, getattr(sweep, k)) for k in config_lib.SWEPT)}
    n = max(sweep.n)
    n_test = max(config_lib.held_out_points(sweep, k, task) for k in sweep.n
                 for task in config_lib.tasks(sweep))
    point.update(arch=arch, width=width or point["width"], depth=depth or point["depth"],
                 n=n, batch_size=n, n_test=n_test)
    return static_for(sweep, types.SimpleNamespace(**point), chunk_records)


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    itemsize = dtype_bytes(sweep.dtype)
    share = num_networks(sweep) // (len(sweep.arch) * len(sweep.widths) * len(sweep.depths))
    out = []
    for arch, width, depth in itertools.product(sweep.arch, sweep.widths, sweep.depths):
        static = _largest(sweep, arch, chunk_records, width=width, depth=depth)
        floor = (state_bytes(static) + num_params(static) * itemsize + inputs
                 + chunk_records * record_values(depth) * itemsize)
        group = cache_bytes // max(1, min(sweep.n) * width * positions_of(static) * itemsize)
        smallest = devices * max(1, group)
        out.append((min(share, max(devices * budget // floor, smallest)), static))
    return out


def footprint(sweep: config_lib.Sweep, *, device_bytes: int, workers: int, devices: int = 1,
              processes: int = 1, cache_bytes: int = 0, fixed_loops: bool = False) -> Footprint:
    """The bound on what `sweep` holds and writes (`Footprint`), item by item.

    device_bytes: one device's memory; workers: the threads that compute the kernels
    H^inf at once (`prepare.ntk_limits`: one per core); devices: this process's devices (a
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
    itemsize = dtype_bytes(sweep.dtype)
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
    return tuple(f.name for f in config_lib.FIELDS
                 if _numeric(f.default) or (isinstance(f.default, tuple)
                                            and all(_numeric(v) for v in f.default)))


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
        sizes = config_lib.grid_sizes(sweep)
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
