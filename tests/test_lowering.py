"""The accelerators' programs, checked on the CPU: every shipped sweep's init and chunk
programs lowered for 'cuda' and 'tpu'.

JAX lowers a jitted function for another platform from shapes alone
(`jax.jit(f).trace(*shapes).lower(lowering_platforms=(platform,))`: no device, nothing
compiled or run). For each sweep file of sweeps/, its full size and its ':quick' variant,
the planner's own batches (`plan.make_plan` with fixed_loops, as on a GPU or TPU) are
lowered, and the StableHLO text must hold:

- no host callback (no custom call to a Python callback, no infeed, outfeed, send or recv);
- no float64 (every shipped sweep is float32);
- no custom call but the eigendecomposition, and that in the chunk only where Gram or
  sharpness tracking asks for one (in init also where a layer's ||W(0)||_2 is exact:
  fan-in <= metrics.GRAM_MAX_FAN_IN, or the Gram matrix H(0) is formed);
- no data-dependent control flow in the chunk: no conditional (`case`, `if`) and only
  while loops of a fixed trip count (hlo.while_loops: a counter from a constant, +1, below
  a constant), which XLA:GPU runs without copying a predicate to the host; init (once
  per batch) may keep the early stop of its cold power iterations.

One program per structure: batches whose Statics differ only in sizes (width, n, d,
batch size, test points) lower to the same ops, loops and calls, but for the route of
each layer's spectral norm (fan-in <= GRAM_MAX_FAN_IN or not), which is part of the
structure; each structure is lowered once (about 30 in all) and cached across sweeps.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
from pathlib import Path

import hlo
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overparam import chunks, metrics, programs, train
from overparam import config as config_lib
from overparam import plan as plan_lib

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ("cuda", "tpu")
# The custom calls of an eigendecomposition (jnp.linalg.eigh): cuSOLVER's on a GPU; on a
# TPU, Eigh up to 256 x 256, and above that JAX's own QDWH spectral divide and conquer,
# whose QR decompositions are custom calls and whose iterations run to convergence in
# while loops. A TPU runs a while loop on the device itself (its core's scalar unit
# evaluates the predicate): no host round trip, so those loops are allowed there, in the
# functions JAX lowers the eigendecomposition into (EIGH_FUNCTIONS) and nowhere else.
EIGH = {"cuda": {"cusolver_syevd_ffi", "cusolver_syevj_ffi"},
        "tpu": {"Eigh", "Qr", "ProductOfElementaryHouseholderReflectors"}}
EIGH_FUNCTIONS = r"_?(eigh|eigvalsh)(_\d+)?$"
HOST = ("infeed", "outfeed", "send", "recv")


def _sweep_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SWEEPS = [(path.stem, arg) for path in sorted((ROOT / "sweeps").glob("*.py"))
          for arg in (None, "quick")]


@functools.cache
def _plan(name: str, arg: str | None) -> plan_lib.Plan:
    """The sweep's plan as on an accelerator (fixed_loops); batch sizes from the analytic
    estimate for a 4 GiB budget (sizes do not change what is lowered)."""
    sweep = config_lib.validate(_sweep_file(ROOT / "sweeps" / f"{name}.py").get_config(arg))
    return plan_lib.make_plan(sweep, budget_mb=4096, fixed_loops=True)


def _fan_ins(static: train.Static) -> tuple[int, ...]:
    """Each measured layer's fan-in as a matrix (`Network.matrix`'s columns)."""
    if static.arch == "mlp":
        return (static.d,) + (static.width,) * (static.depth - 1)
    if static.arch in config_lib.CONV_ARCHS:  # 3x3 kernels; images of one channel
        return (9,) + (9 * static.width,) * (static.depth - 1)
    raise NotImplementedError(f"a structure key for arch {static.arch!r}")


def _structure(static: train.Static) -> train.Static:
    """static with its sizes replaced by what the lowered program's structure depends on."""
    routes = sum(2**i for i, k in enumerate(_fan_ins(static)) if k <= metrics.GRAM_MAX_FAN_IN)
    return dataclasses.replace(static, width=routes, n=0, d=0, chunk_records=0,
                               batch_size=int(static.batch_size < static.n),
                               n_test=int(static.n_test > 0))


def _programs(name: str, arg: str | None) -> dict[train.Static, tuple[train.Static, int]]:
    """One (static, batch size) of the plan per structure."""
    out = {}
    for batch in _plan(name, arg).batches:
        out.setdefault(_structure(batch.static), (batch.static, batch.size))
    return out


@functools.cache
def _traced_init(init_static: train.Static, size: int):
    """The traced init program (shared by the shapes of one `train.init_static`)."""
    keys, _, data = programs.abstract_arguments(init_static, size)
    return chunks.jit_program(init_static).init.trace(keys, data)


def _traced(static: train.Static, size: int):
    """The traced init and chunk of a batch, as `programs.Executables` lowers them."""
    init = _traced_init(train.init_static(static), size)
    _, scalars, data = programs.abstract_arguments(static, size)
    chunk = chunks.jit_program(static, donate=True).chunk.trace(
        init.out_info, scalars, data, jax.ShapeDtypeStruct((), jnp.int32))
    return init, chunk


_LOWERED: dict[tuple[str, train.Static, str], tuple[train.Static, str]] = {}


def _lowered(static: train.Static, size: int, platform: str) -> tuple[train.Static, str, str]:
    """(the static lowered, init, chunk as StableHLO text for `platform`): once per
    structure (of the chunk, and of the init program), the first static of that structure
    met in any sweep."""
    chunk_key = ("chunk", _structure(static), platform)
    init_key = ("init", _structure(train.init_static(static)), platform)
    if chunk_key not in _LOWERED or init_key not in _LOWERED:
        init, chunk = _traced(static, size)
        for key, traced in ((init_key, init), (chunk_key, chunk)):
            if key not in _LOWERED:
                _LOWERED[key] = (static, traced.lower(lowering_platforms=(platform,)).as_text())
    return _LOWERED[chunk_key][0], _LOWERED[init_key][1], _LOWERED[chunk_key][1]


def _problems(text: str, platform: str, *, eigh: bool, step_loop: bool,
              dtype: str = "float32") -> list[str]:
    """What the text holds that an accelerator's program must not."""
    found = []
    targets = hlo.custom_calls(text)
    found += [f"host callback {t}" for t in targets if "callback" in t.lower()]
    found += [f"{op} op" for op in HOST if hlo.ops(text, op)]
    if dtype == "float32" and hlo.has_float64(text):
        found.append("float64 in a float32 program")
    found += [f"custom call {t}" for t in targets - EIGH[platform]]
    if eigh != bool(targets & EIGH[platform]):
        found.append(f"an eigendecomposition {'missing' if eigh else 'not asked for'}")
    if step_loop:
        on_device = hlo.only_within(text, EIGH_FUNCTIONS) if platform == "tpu" else set()
        found += [f"{op} (a conditional) in {function}"
                  for function, body in hlo.functions(text).items() if function not in on_device
                  for op in ("case", "if") if hlo.ops("\n".join(body), op)]
        found += [f"a data-dependent while loop in {function}: {cond.strip()[:200]}"
                  for function, cond, fixed in hlo.while_loops(text)
                  if not fixed and function not in on_device]
    return found


@pytest.mark.slow
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("name,arg", SWEEPS, ids=[f"{n}:{a}" if a else n for n, a in SWEEPS])
def test_every_shipped_sweep_lowers_for_an_accelerator_without_host_round_trips(
        name, arg, platform):
    plan = _plan(name, arg)
    assert plan.batches and all(b.static.fixed_loops for b in plan.batches)
    for static, size in _programs(name, arg).values():
        static, init, chunk = _lowered(static, size, platform)
        small = any(k <= metrics.GRAM_MAX_FAN_IN for k in _fan_ins(static))
        problems = (
            [f"init: {p}" for p in _problems(init, platform, step_loop=False,
                                              eigh=small or bool(static.gram_every))]
            + [f"chunk: {p}" for p in _problems(
                chunk, platform, step_loop=True,
                eigh=bool(static.gram_every or static.sharpness_every))])
        assert not problems, (static, problems)
        assert hlo.ops(chunk, "while") >= 1  # the scan over records is there


def test_the_check_finds_the_cpu_programs_data_dependent_control_flow():
    """The CPU's variant of the default sweep's program (early stop, Gram records by
    lax.cond), lowered for cuda: the check names both (it can fail)."""
    static, size = next(iter(_programs("default", None).values()))
    _, chunk = _traced(dataclasses.replace(static, fixed_loops=False), size)
    chunk = chunk.lower(lowering_platforms=("cuda",)).as_text()
    problems = _problems(chunk, "cuda", step_loop=True, eigh=True)
    assert any("conditional" in p for p in problems), problems
    assert any("data-dependent while loop" in p for p in problems), problems
    assert _problems(chunk, "cuda", step_loop=False, eigh=True) == []


def test_the_loop_check_on_small_programs():
    """hlo.while_loops against loops whose nature is known."""
    x = jax.ShapeDtypeStruct((3,), jnp.float32)

    def kinds(f):
        text = jax.jit(f).trace(x).lower(lowering_platforms=("cuda",)).as_text()
        return [fixed for _, _, fixed in hlo.while_loops(text)]

    assert kinds(lambda v: jax.lax.fori_loop(0, 5, lambda i, u: u * 2, v)) == [True]
    assert kinds(lambda v: jax.lax.scan(lambda c, _: (c + 1, c), v, None, length=4)[0]) \
        == [True]
    assert kinds(lambda v: jax.lax.while_loop(lambda u: u[0] < 10, lambda u: u * 2, v)) \
        == [False]
    assert kinds(lambda v: jax.lax.fori_loop(0, v[0].astype(jnp.int32),
                                             lambda i, u: u * 2, v)) == [False]


def test_the_planner_chooses_fixed_loops_on_an_accelerator(monkeypatch):
    """programs.fixed_loops() is the backend's choice, and the plan makes every chunk whole
    periods of Gram and sharpness records, so that their positions are static."""
    assert programs.fixed_loops() is False  # the tests' CPU
    monkeypatch.setattr(programs.jax, "default_backend", lambda: "gpu")
    assert programs.fixed_loops() is True
    for name, arg in SWEEPS:
        plan = _plan(name, arg)
        period = plan_lib.record_period(config_lib.validate(
            _sweep_file(ROOT / "sweeps" / f"{name}.py").get_config(arg)))
        assert plan.chunk_records % period == 0
        for batch in plan.batches:
            kinds = chunks.record_kinds(batch.static)
            assert sum(count for _, count in kinds) == period
            every = [batch.static.gram_every, batch.static.sharpness_every]
            k = 0
            for kind, count in kinds:
                for _ in range(count):
                    want = tuple(bool(e) and (k * batch.static.record_every) % e == 0
                                 for e in every)
                    assert kind == want
                    k += 1


@pytest.mark.slow
def test_the_chunk_donates_its_state():
    """Every state argument of the engine's chunk program is donated (aliased to an output),
    and XLA's memory analysis counts the aliased bytes (programs.Executables' measure)."""
    static = train.Static(width=16, depth=2, n=8, d=4, batch_size=8, loss="squared",
                          optimizer="gd", param="ntk", chunk_records=2)
    init, chunk = _traced(static, 3)
    text = chunk.lower(lowering_platforms=("cuda",)).as_text()
    main = text[text.index("func.func public @main("):]
    main = main[:main.index("{\n")]
    state = jax.tree_util.tree_leaves(init.out_info)
    assert main.count("tf.aliasing_output") + main.count("jax.buffer_donor") >= sum(
        a.size > 0 for a in state)
    compiled = programs.Executables()
    measured = compiled.memory(static, 3)
    _, executable = compiled.get(static, 3)
    analysis = executable.memory_analysis()
    state_bytes = sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for a in state)
    assert analysis.alias_size_in_bytes >= 0.9 * state_bytes
    assert measured < (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                       + analysis.temp_size_in_bytes)
