"""Where a cold sweep's compile time goes: per program, per phase.

    python benchmarks/compile_cost.py [--config=sweeps/default.py] [--json] [--smoke]

Plans the sweep as the engine does (measuring memory compiles its programs),
timing for every shape JAX's tracing, its lowering to StableHLO and XLA's
compile of the init and chunk programs separately, with the compile options
the engine uses and no persistent cache. XLA's own phases come from a
jax.profiler trace of all the compiles: HLO optimization passes, LLVM code
generation, and the thunk emitter. Shapes that share an init program (see
`train.init_static`) compile it once. The programs are called as
`programs.Executables.get` calls them. --smoke: the config at toy sizes (SMOKE), in seconds.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import runpy
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
from jax.profiler import ProfileData

from overparam import chunks, programs, train
from overparam import config as config_lib
from overparam import plan as plan_lib

PHASES = {  # profiler event name -> phase
    "HLO passes through layout assignment": "HLO passes",
    "HLO passes after layout assignment": "HLO passes",
    "JitCompiler::Compile": "LLVM codegen",
    "ThunkEmitter::EmitEntryComputation": "thunk emitter",
    "PjRtCpuClient::Compile": "XLA compile (all)",
}


# --smoke: the sweep's fields set to toy sizes (one shape, two networks, two records)
SMOKE = dict(widths=(8,), depths=(1,), num_seeds=2, n=(16,), d=4, steps=2, chunk_steps=2)


def load_sweep(spec: str, **fields) -> config_lib.Sweep:
    """The sweep of config file `spec` (path[:arg]), with `fields` set over its own."""
    path, _, arg = spec.partition(":")
    c = runpy.run_path(path)["get_config"](arg or None)
    c.update(fields)
    return config_lib.validate(c)


def program_costs(sweep: config_lib.Sweep) -> dict:
    runs = config_lib.expand(sweep)
    plan = plan_lib.make_plan(sweep, runs, budget_mb=1e6, cache_bytes=programs.cache_bytes())
    options = programs.compiler_options()
    rows, inits = [], {}
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for batch in {b.static: b for b in plan.batches}.values():
                static, size = batch.static, batch.size
                program = chunks.jit_program(static)
                keys, scalars, data, _ = programs.Executables()._abstract(static, size)
                row = dict(width=static.width, depth=static.depth, n=static.n,
                           optimizer=static.optimizer, batch=size)
                init_key = (train.init_static(static), size)
                if init_key not in inits:
                    t = time.perf_counter()
                    traced = program.init.trace(keys, data)
                    t1 = time.perf_counter()
                    lowered = traced.lower()
                    t2 = time.perf_counter()
                    lowered.compile(compiler_options=options)
                    t3 = time.perf_counter()
                    inits[init_key] = lowered.out_info
                    row.update(init_trace=t1 - t, init_lower=t2 - t1, init_compile=t3 - t2)
                state = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                               inits[init_key])
                t = time.perf_counter()
                traced = program.chunk.trace(state, scalars, data,
                                             jax.ShapeDtypeStruct((), jnp.int32))
                t1 = time.perf_counter()
                lowered = traced.lower()
                t2 = time.perf_counter()
                lowered.compile(compiler_options=options)
                t3 = time.perf_counter()
                row.update(chunk_trace=t1 - t, chunk_lower=t2 - t1, chunk_compile=t3 - t2)
                rows.append(row)
        phases = collections.Counter()
        for path in glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True):
            for plane in ProfileData.from_file(path).planes:
                for line in plane.lines:
                    for event in line.events:
                        if event.name in PHASES:
                            phases[PHASES[event.name]] += event.duration_ns / 1e9
    return {"programs": rows, "phases": dict(phases)}


def describe(result: dict) -> list[str]:
    """`program_costs`' result as lines: one per shape, then XLA's phases."""
    lines = []
    for r in result["programs"]:
        init = (f"init {r['init_trace']:.2f}/{r['init_lower']:.2f}/{r['init_compile']:.2f}"
                if "init_compile" in r else "init shared")
        lines.append(f"width={r['width']} depth={r['depth']} n={r['n']} {r['optimizer']}: "
                     f"{init}, chunk {r['chunk_trace']:.2f}/{r['chunk_lower']:.2f}/"
                     f"{r['chunk_compile']:.2f}")
    lines.append("XLA phases: " + ", ".join(f"{k} {v:.2f} s"
                                            for k, v in result["phases"].items()))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="sweeps/default.py")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (SMOKE), seconds")
    opts = parser.parse_args()
    result = program_costs(load_sweep(opts.config, **(SMOKE if opts.smoke else {})))
    if opts.json:
        json.dump(result, sys.stdout)
        return
    print(f"{opts.config}: seconds per program (trace / lower / XLA compile)")
    print("\n".join("  " + line for line in describe(result)))


if __name__ == "__main__":
    main()
