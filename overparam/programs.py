"""Compiled programs: the backend, XLA's options, sharding, and compiling with memory analysis.

Owns what the engine asks of JAX before training: that the backend is the
one asked for, the persistent compilation cache, the CPU compiler options, the
split of a batch's networks over local devices, and the compiled init and
chunk executables of each (shape, batch size) with their peak device memory
(what `plan.make_plan` measures). It never touches files or the results.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from overparam import chunks, train, trainstate, writes
from overparam.cli import one_line

BACKENDS = {"cpu": "cpu", "gpu": "gpu", "tpu": "tpu"}


class BackendError(RuntimeError):
    """The requested device is not the one JAX got."""


def check_backend(device: str | None) -> str:
    """Returns JAX's backend; raises BackendError if it is not `device` (cpu|gpu|tpu)."""
    try:
        backend = jax.default_backend()
    except Exception as e:  # noqa: BLE001 - JAX raises RuntimeError or AssertionError here
        # An empty message (AssertionError): JAX has no plugin of that name installed.
        reason = (str(e).strip().splitlines() or ["no jax plugin for it is installed"])[0]
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


def fixed_loops() -> bool:
    """The programs' variant here (`train.Static.fixed_loops`): on a GPU or TPU no
    data-dependent control flow (on XLA:GPU each one copies its predicate to the host);
    on the CPU the power iteration's early stop and the records' lax.cond: the tables of
    every sweep before the variant existed, bit for bit, and faster there (16 networks
    of width 1024 at n = d = 256, alternated 3 times in separate processes: 1.26x the
    network-steps per second, 1.16 to 1.33, and 1.3x less compile time; at d = 16,
    whose iterations are on a 16 x 16 matrix, the same speed)."""
    return jax.default_backend() != "cpu"


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


class Executables:
    """The compiled init and chunk executables of each (shape, batch size), compiled once
    from `chunks.jit_program`'s jitted functions (`chunks.Jitted`).

    Compiling needs only shapes, so the planner asks `memory` for the peak
    device memory of a batch size it considers, and training then runs the
    very programs that were measured. The chunk donates its state argument
    (`chunks.jit_program(donate=True)`): its new state takes the old one's
    buffers, so a batch holds one state rather than two, and a state passed to
    a chunk cannot be used again.

    progress: where each compile is shown, "compiling k/N: width W depth L n=..
    (batch B)" (a `progress.Progress`; None: nowhere). N, the number of programs
    in all, is known once the engine has its plan (`expect`); until then it is left out.
    """

    def __init__(self, progress=None):
        self.compile_seconds = 0.0  # spent compiling, over every program
        self.progress, self.expected = progress, None
        self._compiled: dict[tuple[train.Static, int], tuple[Any, Any, int]] = {}
        self._inits: dict[tuple[train.Static, int], tuple[Any, Any]] = {}

    def expect(self, keys) -> None:
        """The (static, size) of every program still to be trained: N of the compile lines
        becomes the programs compiled so far and those still to compile."""
        self.expected = len(self._compiled.keys() | set(keys))

    def _compiling(self, static: train.Static, size: int):
        if self.progress is None:
            return contextlib.nullcontext()
        of = f"/{self.expected}" if self.expected else ""
        return self.progress.compiling(
            f"compiling {len(self._compiled) + 1}{of}: width {static.width} depth "
            f"{static.depth} n={static.n} (batch {size})")

    def _abstract(self, static: train.Static, size: int):
        sharding = models_sharding(size)
        return (*abstract_arguments(static, size, sharding), sharding)

    def get(self, static: train.Static, size: int) -> tuple[Any, Any]:
        """(init, chunk): executables called as init(keys, data) and
        chunk(state, scalars, data, start) (data: a `trainstate.Data`, its test arrays
        None where static.n_test is 0). Shapes with the same `train.init_static` share
        their init executable."""
        key = (static, size)
        if key not in self._compiled:
            writes.crash_point("compile")
            program = chunks.jit_program(static, donate=True)
            keys, scalars, data, sharding = self._abstract(static, size)
            t = time.perf_counter()
            with self._compiling(static, size):
                init_key = (train.init_static(static), size)
                if init_key not in self._inits:
                    lowered = program.init.lower(keys, data)
                    self._inits[init_key] = (
                        lowered.compile(compiler_options=compiler_options()), lowered.out_info)
                init, out_info = self._inits[init_key]
                state = jax.tree_util.tree_map(
                    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                    out_info)
                compiled_chunk = program.chunk.lower(
                    state, scalars, data, jax.ShapeDtypeStruct((), jnp.int32)
                ).compile(compiler_options=compiler_options())
            self.compile_seconds += time.perf_counter() - t
            state_bytes = sum(a.size * a.dtype.itemsize
                              for a in jax.tree_util.tree_leaves(state))
            self._compiled[key] = (init, compiled_chunk,
                                   _peak_bytes(init, compiled_chunk, state_bytes, sharding))
        return self._compiled[key][:2]

    def memory(self, static: train.Static, size: int) -> int:
        """Peak bytes, per device, of training a batch of `size` networks of this shape."""
        self.get(static, size)
        return self._compiled[(static, size)][2]

    @property
    def num_compiled(self) -> int:
        return len(self._compiled)


def abstract_arguments(static: train.Static, size: int, sharding=None) -> tuple[
        trainstate.Keys, trainstate.RunScalars, trainstate.Data]:
    """The arguments of a batch of `size` networks' programs as shapes
    (jax.ShapeDtypeStruct): keys, scalars and data (its test arrays None without test
    points, its H_inf None where the program takes none), as `prepare.Prepared.batch_arrays`
    gives them: init(keys, data) and chunk(state, scalars, data, start), state: init's
    output."""
    dtype = jnp.dtype(static.dtype)
    spec = lambda *shape, dt=dtype: jax.ShapeDtypeStruct((size, *shape), dt, sharding=sharding)
    keys = trainstate.Keys(*(spec(2, dt=jnp.uint32) for _ in trainstate.Keys._fields))
    scalars = trainstate.RunScalars(spec(dt=jnp.uint32), spec(dt=jnp.uint32),
                                    spec(dt=jnp.uint32), spec(), spec())
    # H^inf: the mlp's analytic kernel, for the Gram matrix's distance to it and the
    # infinite-width trajectory (train.takes_h_inf).
    H = spec(static.n, static.n) if train.takes_h_inf(static) else None
    test = ((spec(static.n_test, static.d), spec(static.n_test)) if static.n_test
            else (None, None))
    return keys, scalars, trainstate.Data(spec(static.n, static.d), spec(static.n), H, *test)


def _peak_bytes(init, chunk, state_bytes: int, sharding) -> int:
    """Peak device memory of a batch from XLA's memory analysis of its programs.

    A chunk holds its arguments, outputs and temporaries, less the outputs
    that reuse an argument's buffers (the state, which the chunk donates), and
    meanwhile the previous chunk's records wait to be copied to the host: its
    outputs less the state. Where the analysis is unavailable, raises
    RuntimeError.
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
