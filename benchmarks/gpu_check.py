"""Every GPU check in one device call of at most 7 minutes, the machine's start included.

    make gpu-wheels                         # here: the wheels the check carries (.whl/)
    bash benchmarks/gpu_check.sh            # there: the device tool's run, carry=[".whl"]
    python benchmarks/gpu_check.py --smoke  # the same steps at toy sizes, on the CPU (tests)

This process imports no JAX: every step runs in child processes of its own, so the
GPU's memory is whole for each (JAX preallocates 75% of it in the first process that
uses it) and one step's failure cannot touch the next. Each step has its own time cap
(CAPS; the last one gets what is left of --budget) and runs in its own process group,
killed whole at the cap. A step prints its figures as `RESULT {json}` lines as they
come; when it ends its rows go to OUT/gpu.md (BENCHMARKS.md's table form) at once: its
figures, or why it failed (its exception's last line and exit code, or the cap it ran
into, beside what it had printed so far), and the next step starts. OUT/gpu.json holds
every step's raw numbers and status, OUT/tests.log the tests' output, OUT/steps.log
the end of every step's output. In this order:

  tests   the numerics tests (NUMERICS) on the device, one pytest per file at once,
          JAX's preallocation off; tests marked cpu_only are skipped (tests/conftest.py);
          --smoke: two of them (SMOKE_TESTS) in one pytest
  matmul  XLA's matrix-multiply rate per entry of MATMUL: 'highest' (float32) and, where
          the device has them, TF32 and bf16
  step    one training step with every metric, width 4096, depth 3, n = 256, d = 1024,
          8 networks, per entry of STEP_VARIANTS: its FLOP rate against the 'highest'
          matmul rate (target >= 50%)
  conv    the cnn chunk with the convolution as patches x kernel against XLA's (cuDNN's)
          convolution (benchmarks/conv_cost.py)
  R       sweep R with 256 seeds through the command line (cold cache, whole process)
          against the sequential PyTorch loop on the same GPU (target >= 100x)
  big     1,000 width-4096 networks (du2018, n = d = 1000) through the command line in
          the step's process: the plan's batches and its planned peak memory per batch
          beside the peak that the device's allocator measured (memory_stats)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
NUMERICS = ["tests/test_model.py", "tests/test_metrics.py", "tests/test_radius.py",
            "tests/test_gram.py", "tests/test_train.py", "tests/test_theory.py"]
SMOKE_TESTS = ["tests/test_theory.py::test_du_step_sizes",
               "tests/test_model.py::test_init_du_output_is_rademacher"]
# seconds per step on the GPU; the last step gets what is left of --budget
CAPS = {"tests": 110, "matmul": 30, "step": 45, "conv": 45, "R": 80, "big": None}
BUDGET, SMOKE_BUDGET, SMOKE_CAP = 330.0, 900.0, 300.0
# name -> jax.lax precision (a Precision or a DotAlgorithmPreset's name) of the matmul rates
MATMUL = {"'highest' (float32)": "HIGHEST", "TF32": "TF32_TF32_F32", "bf16": "BF16_BF16_F32"}
# name -> train.Static fields over the step's own: a training precision is one more line
STEP_VARIANTS = {"precision 'highest'": {}}
SIZES = {  # full, smoke
    "matmul": (8192, 128),
    "step": (dict(width=4096, depth=3, n=256, d=1024, networks=8),
             dict(width=32, depth=2, n=16, d=8, networks=2)),
    "conv": (["--rounds=1", "--width=256", "--networks=8"], ["--smoke"]),
    "R": (dict(widths=(64, 256, 1024), num_seeds=256, n=128, d=32, steps=300, lr=0.1),
          dict(widths=(8,), num_seeds=2, n=16, d=4, steps=10, lr=0.1)),
    "big": (dict(widths=(4096,), num_seeds=1000),
            dict(widths=(16,), num_seeds=6, n=(16,), d=16, steps=4, chunk_steps=2)),
}
VERSIONS = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "ml_collections")
NEEDED = ("jax", "flax", "optax", "pandas", "pyarrow", "absl", "ml_collections", "pytest")


# ------------------------------------------------------------------ the steps (children)


def emit(**results) -> None:
    """Figures of the running step, for the parent (merged in the order printed)."""
    print("RESULT " + json.dumps(results), flush=True)


def size_of(opts, step: str):
    return SIZES[step][1 if opts.smoke else 0]


def matmul_rate(size: int, precision: str) -> float:
    """FLOP/s of a jitted size^3 float32 matmul at `precision`, best of 5."""
    import jax
    import jax.numpy as jnp

    p = getattr(jax.lax.Precision, precision, None) or getattr(jax.lax.DotAlgorithmPreset,
                                                               precision)
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    f = jax.jit(lambda x: jnp.matmul(x, x, precision=p))
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def step_matmul(opts) -> None:
    import jax

    emit(device=jax.devices()[0].device_kind, backend=jax.default_backend(), size=size_of(
        opts, "matmul"))
    for name, precision in MATMUL.items():
        try:
            emit(**{name: matmul_rate(size_of(opts, "matmul"), precision)})
        except Exception as e:  # noqa: BLE001 - not every device has every precision
            emit(**{name: None, f"{name} error": one_line(e)})


def step_rate(width: int, depth: int, n: int, d: int, networks: int, records: int = 10,
              **fields) -> tuple[float, float]:
    """(seconds per step, training FLOP/s) of the engine's chunk with every metric."""
    import jax

    sys.path.insert(0, str(BENCH))
    import overhead

    from overparam import chunks, train, trainstate

    static = train.Static(**{**dict(width=width, depth=depth, n=n, d=d, batch_size=n,
                                    loss="squared", optimizer="gd", param="ntk",
                                    chunk_records=records), **fields})
    X, y, hyper = overhead.random_batch(networks, n, d)
    program = chunks.jit_program(static)
    state = program.init(trainstate.batch_keys(hyper), trainstate.Data(X, y))
    run = overhead.chunk_runner(program, state, hyper, X, y, records)
    jax.block_until_ready(run())
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(run())
        best = min(best, time.perf_counter() - t)
    seconds = best / records
    return seconds, networks * overhead.step_flops(width, depth, n, d) / seconds


def step_step(opts) -> None:
    for name, fields in STEP_VARIANTS.items():
        try:
            seconds, flops = step_rate(**size_of(opts, "step"), **fields)
            emit(**{name: dict(seconds=seconds, flops=flops)})
        except Exception as e:  # noqa: BLE001 - the other variants still run
            emit(**{name: dict(error=one_line(e))})


def sweep_command(config: str, fields: dict, out: Path, device: str) -> list[str]:
    return [sys.executable, "-m", "overparam.sweep", f"--config={config}",
            *(f"--config.{k}={v}".replace(" ", "") for k, v in fields.items()),
            f"--out={out}", f"--device={device}", "--progress=false",
            f"--compilation_cache={out}-cache"]


def step_R(opts) -> None:
    spec = size_of(opts, "R")
    fields = dict(widths=spec["widths"], num_seeds=spec["num_seeds"], n=(spec["n"],),
                  d=spec["d"], steps=spec["steps"], lr=(spec["lr"],), gram_every=0, n_test=0,
                  chunk_steps=100)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        proc = subprocess.run(sweep_command("sweeps/default.py", fields, tmp / "R",
                                            opts.device), cwd=ROOT, capture_output=True,
                              text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            sys.exit(f"the sweep failed (exit {proc.returncode}): "
                     + (proc.stderr.strip().splitlines() or ["no output"])[-1])
        manifest = json.loads((tmp / "R" / "manifest.json").read_text())
        emit(seeds=spec["num_seeds"], wall=wall, compile=manifest["timings"]["compile"],
             rate=manifest["num_runs"] * spec["steps"] / wall)
        try:
            import torch  # noqa: F401
        except ImportError as e:
            emit(torch_error=f"torch is not installed ({one_line(e)})")
            return
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # torch needs the GPU next
        sys.path.insert(0, str(BENCH))
        import bench

        import overparam
        from overparam import config as config_lib

        results = overparam.load(tmp / "R")
        runs = config_lib.expand(config_lib.validate(results.manifest["config"]))
        datasets = {r.dataset_id: results.dataset(r.dataset_id) for r in runs}
        rate, _, _ = bench.time_peer("torch-seq", spec, runs, datasets,
                                     1 if opts.smoke else 2, tmp)
        emit(torch_rate=rate)


PLAN_LINE = re.compile(r"batch (\d+): (\d+) networks \(\+(\d+) pad\).* ([\d,.]+) MiB "
                       r"\((measured|estimated)\)")


def step_big(opts) -> None:
    """The command line in this process (runpy), then the device's peak memory."""
    import runpy

    fields = size_of(opts, "big")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "big"
        sys.argv = sweep_command("sweeps/du2018.py", fields, out, opts.device)[2:]
        t = time.perf_counter()
        try:
            runpy.run_module("overparam.sweep", run_name="__main__", alter_sys=True)
        except SystemExit as e:
            if e.code not in (None, 0):
                raise
        wall = time.perf_counter() - t
        import jax

        stats = jax.local_devices()[0].memory_stats() or {}
        manifest = json.loads((out / "manifest.json").read_text())
        emit(networks=manifest["num_runs"], wall=wall, plan=manifest["plan"],
             diverged=manifest["num_diverged"], peak_bytes=stats.get("peak_bytes_in_use"),
             bytes_limit=stats.get("bytes_limit"), **{k: fields.get(k) for k in ("widths",)})


CHILDREN = {"matmul": step_matmul, "step": step_step, "R": step_R, "big": step_big}


# ------------------------------------------------------------------ running them (parent)


@dataclasses.dataclass
class Outcome:
    """What one command of a step did: returncode None if it ran into the cap."""

    returncode: int | None
    output: str
    seconds: float


def one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[-1][:300] or type(e).__name__


def run_commands(commands: list[list[str]], timeout: float, env: dict) -> list[Outcome]:
    """Runs `commands` at once, each in a process group of its own (stdout and stderr
    together); at `timeout` seconds kills every group still running, children included."""
    t = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace",
                              start_new_session=True) for cmd in commands]
    with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
        futures = [pool.submit(p.communicate) for p in procs]
        concurrent.futures.wait(futures, timeout=timeout)
        killed = [p for p in procs if p.poll() is None]
        for p in killed:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        outputs = [f.result()[0] or "" for f in futures]
    return [Outcome(None if p in killed else p.returncode, out, time.perf_counter() - t)
            for p, out in zip(procs, outputs)]


def status_of(outcomes: list[Outcome], timeout: float) -> str:
    """'ok', or why the step failed: the cap, or an exit code with the last output line."""
    if any(o.returncode is None for o in outcomes):
        return f"stopped at its cap of {timeout:.0f} s"
    for o in outcomes:
        if o.returncode:
            last = [line for line in o.output.strip().splitlines()
                    if line.strip() and not line.startswith("RESULT ")]
            return f"exit {o.returncode}: {last[-1].strip()[:300] if last else 'no message'}"
    return "ok"


def result_lines(outcomes: list[Outcome]) -> dict:
    """The `RESULT {json}` lines of the outputs, merged in order."""
    results = {}
    for o in outcomes:
        for line in o.output.splitlines():
            if line.startswith("RESULT "):
                try:
                    results.update(json.loads(line[len("RESULT "):]))
                except json.JSONDecodeError:
                    pass
    return results


@dataclasses.dataclass
class Step:
    name: str
    commands: Callable[[argparse.Namespace], list[list[str]]]
    rows: Callable[[dict, dict, argparse.Namespace], list[tuple[str, str]]]
    parse: Callable[[list[Outcome]], dict] = result_lines
    env: Callable[[argparse.Namespace], dict] = lambda opts: {}


class Report:
    """OUT/gpu.md, OUT/gpu.json and OUT/steps.log, rewritten after every step."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.meta, self.rows, self.steps, self.log = out, meta, [], {}, []

    def add(self, step: str, record: dict, rows: list[tuple[str, str]], log: str) -> None:
        """A step's record (status, results) and rows; a "log" in its results goes to
        OUT/<step>.log, the device's name and backend to the header."""
        results = record.get("results") or {}
        self.meta.update({k: results[k] for k in ("device", "backend") if k in results})
        if "log" in results:
            (self.out / f"{step}.log").write_text(results.pop("log")[-4_000_000:])
        self.steps[step] = record
        self.rows += rows
        self.log.append(log)
        for check, result in rows:
            print(f"{check}: {result}", flush=True)
        self.write()

    def write(self) -> None:
        m = self.meta
        head = (f"GPU checks on {m.get('device', '?')} ({m.get('backend', '?')}; "
                + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + f"; {m['date']})")
        table = [f"| {c} | {r} |" for c, r in self.rows]
        (self.out / "gpu.md").write_text("\n".join([head, "", "| check | result |", "|---|---|",
                                                    *table]) + "\n")
        (self.out / "gpu.json").write_text(json.dumps({"meta": m, "steps": self.steps},
                                                      indent=1, default=str) + "\n")
        (self.out / "steps.log").write_text("\n".join(self.log)[-2_000_000:])


def run_step(step: Step, opts, timeout: float, context: dict, report: Report) -> None:
    """Runs `step` under `timeout`; its rows (figures or failure) go to the report."""
    env = {**os.environ, **step.env(opts)}
    outcomes = run_commands(step.commands(opts), timeout, env)
    status = status_of(outcomes, timeout)
    try:
        results = step.parse(outcomes)
    except Exception as e:  # noqa: BLE001 - a parse error is the step's failure too
        results, status = {}, f"{status}; its output unreadable: {one_line(e)}"
    context[step.name] = results
    try:
        rows = step.rows(results, context, opts)
    except Exception as e:  # noqa: BLE001 - partial figures: shown raw below
        rows = []
        if status == "ok":
            status = f"its figures unreadable ({type(e).__name__}: {one_line(e)})"
    if status != "ok":
        partial = json.dumps(results, default=str)[:500] if results and not rows else ""
        rows.append((f"{step.name}: FAILED", status + (f"; printed: {partial}" if partial
                                                      else "")))
    seconds = max((o.seconds for o in outcomes), default=0.0)
    log = "\n".join(f"== {step.name} (command {i}): "
                    f"{'stopped at the cap' if o.returncode is None else f'exit {o.returncode}'}"
                    f", {o.seconds:.0f} s\n" + "\n".join(o.output.splitlines()[-60:])
                    for i, o in enumerate(outcomes))
    report.add(step.name, dict(status=status, seconds=seconds, results=results,
                               returncodes=[o.returncode for o in outcomes]), rows, log)


def run_steps(steps: list[Step], opts, report: Report, caps: dict) -> None:
    """Every step in order, each under min(its cap, what is left of opts.budget)."""
    start, context = time.perf_counter(), {}
    for step in steps:
        left = opts.budget - (time.perf_counter() - start)
        cap = caps.get(step.name)
        timeout = left if cap is None else min(cap, left)
        if left < 5:
            report.add(step.name, dict(status="not run: no time left"),
                       [(f"{step.name}: FAILED",
                         f"not run: {max(left, 0):.0f} s of the budget left")],
                       f"== {step.name}: not run")
            continue
        try:
            run_step(step, opts, timeout, context, report)
        except Exception as e:  # noqa: BLE001 - this process's own fault: the rest still run
            report.add(step.name, dict(status=f"gpu_check.py failed: {one_line(e)}"),
                       [(f"{step.name}: FAILED", f"gpu_check.py failed: {one_line(e)}")],
                       f"== {step.name}: {e!r}")
    report.rows.append(("whole run", f"{time.perf_counter() - start:.0f} s"))
    report.write()


# ------------------------------------------------------------------ the steps' rows


def test_commands(opts) -> list[list[str]]:
    shards = [SMOKE_TESTS] if opts.smoke else [[t] for t in NUMERICS]
    # -vv over pyproject's -q: a line per test (what ran, if the cap stops it), then the
    # summary line ("=== 3 passed, 1 skipped in 9.1s ===") that parse_tests reads
    return [[sys.executable, "-m", "pytest", "-vv", "-rfEs", "-p", "no:cacheprovider", *s]
            for s in shards]


def test_env(opts) -> dict:
    return {"XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # several processes share the GPU
            "OVERPARAM_COMPILATION_CACHE": tempfile.mkdtemp(prefix="gpu-check-tests-")}


COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def parse_tests(outcomes: list[Outcome]) -> dict:
    """Counts per outcome over the shards, the failed tests' ids; writes OUT/tests.log."""
    counts, failed = {}, []
    for o in outcomes:
        last = [line for line in o.output.splitlines() if COUNT.search(line)]
        for number, kind in COUNT.findall(last[-1] if last else ""):
            kind = "errors" if kind.startswith("error") else kind
            counts[kind] = counts.get(kind, 0) + int(number)
        failed += [line.split(" ", 1)[1].split(" - ")[0] for line in o.output.splitlines()
                   if line.startswith(("FAILED ", "ERROR "))]
    return dict(counts=counts, failed=failed, seconds=max(o.seconds for o in outcomes),
                log="\n\n".join(o.output for o in outcomes))


def test_rows(r, context, opts):
    files = ", ".join(Path(t.split("::")[0]).stem.removeprefix("test_") for t in
                      (SMOKE_TESTS if opts.smoke else NUMERICS))
    counts = ", ".join(f"{v} {k}" for k, v in r["counts"].items()) or "no summary line"
    failed = f"; failed: {', '.join(r['failed'][:12])}" if r["failed"] else ""
    return [(f"numerics tests on the device ({files})", f"{counts} in {r['seconds']:.0f} s"
             + failed)]


def matmul_rows(r, context, opts):
    rows = []
    for name in MATMUL:
        rate = r.get(name)
        rows.append((f"matmul {r['size']}^3 at {name}", f"{rate / 1e12:.2f} TFLOP/s"
                     if rate else f"not available: {r.get(f'{name} error', 'no figure')}"))
    return rows


def step_rows(r, context, opts):
    s = size_of(opts, "step")
    highest = context.get("matmul", {}).get(next(iter(MATMUL)))
    rows = []
    for name in STEP_VARIANTS:
        v = r.get(name, {"error": "no figure"})
        label = (f"step with every metric, width {s['width']} depth {s['depth']} n {s['n']} "
                 f"d {s['d']}, {s['networks']} networks, {name}")
        if "error" in v:
            rows.append((label, f"FAILED: {v['error']}"))
            continue
        of = (f" = {v['flops'] / highest:.0%} of the {next(iter(MATMUL))} matmul rate "
              "(target >= 50%)" if highest else "")
        rows.append((label, f"{1e3 * v['seconds']:.2f} ms, {v['flops'] / 1e12:.3f} TFLOP/s"
                     + of))
    return rows


def conv_commands(opts) -> list[list[str]]:
    return [[sys.executable, str(BENCH / "conv_cost.py"), "--json", *size_of(opts, "conv")]]


def parse_last_json(outcomes: list[Outcome]) -> dict:
    lines = [line for line in outcomes[0].output.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def conv_rows(r, context, opts):
    ms = {c: min(x["chunk_ms"] for x in r[c]) for c in ("patches", "lax")}
    ratio = sorted(r["ratios"])[len(r["ratios"]) // 2]
    return [(f"cnn chunk, width {r['width']}, {r['networks']} networks, n {r['n']}: patches x "
             "kernel against lax.conv (cuDNN)", f"patches {ms['patches']:.2f} ms, lax "
             f"{ms['lax']:.2f} ms per recorded step: patches {ratio:.2f}x as fast")]


def R_rows(r, context, opts):
    ours = (f"{r['wall']:.1f} s wall, compile {r['compile']:.1f} s: {r['rate']:,.0f} "
            "network-steps/s")
    theirs = (f"; torch-seq on the same device {r['torch_rate']:,.0f}: "
              f"{r['rate'] / r['torch_rate']:.1f}x (target >= 100x)" if "torch_rate" in r
              else f"; torch-seq not run: {r.get('torch_error', 'no figure')}")
    return [(f"R with {r['seeds']} seeds (cold cache, whole process)", ours + theirs)]


def parse_big(outcomes: list[Outcome]) -> dict:
    """RESULT lines, and the plan's lines from the output if the run was stopped."""
    results = result_lines(outcomes)
    if "plan" not in results:
        plan = [line.strip() for line in outcomes[0].output.splitlines()
                if PLAN_LINE.search(line) or " networks, " in line and " batches," in line]
        if plan:
            results["plan"] = plan
    return results


def big_rows(r, context, opts):
    batches = [PLAN_LINE.search(line) for line in r["plan"]]
    batches = [b for b in batches if b]
    planned = max(float(b.group(4).replace(",", "")) for b in batches)
    how = batches[0].group(5)
    sizes = ", ".join(f"{b.group(2)}" + (f"+{b.group(3)}" if b.group(3) != "0" else "")
                      for b in batches)
    peak = (f"measured peak {r['peak_bytes'] / 2**20:,.0f} MiB (memory_stats, limit "
            f"{r['bytes_limit'] / 2**20:,.0f} MiB)" if r.get("peak_bytes") else
            "no measured peak (memory_stats gives none here)")
    if "wall" not in r:
        return [("planned (the run did not finish)", f"{len(batches)} batches ({sizes} "
                 f"networks), planned peak {planned:,.1f} MiB per batch ({how})")]
    fields = size_of(opts, "big")
    return [(f"{r['networks']} networks of width {fields['widths'][0]} (du2018)",
             f"{r['wall']:.1f} s wall, {len(batches)} batches ({sizes} networks); planned "
             f"peak {planned:,.1f} MiB per batch ({how}), {peak}; {r['diverged']} diverged")]


STEPS = [
    Step("tests", test_commands, test_rows, parse_tests, test_env),
    Step("matmul", lambda o: [child_command("matmul", o)], matmul_rows),
    Step("step", lambda o: [child_command("step", o)], step_rows),
    Step("conv", conv_commands, conv_rows, parse_last_json),
    Step("R", lambda o: [child_command("R", o)], R_rows),
    Step("big", lambda o: [child_command("big", o)], big_rows, parse_big),
]


def child_command(step: str, opts) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), f"--step={step}",
            *(["--smoke"] if opts.smoke else [])]


def versions() -> dict:
    found = {"python": sys.version.split()[0]}
    for name in VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes, on the CPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_check"))
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds for every step (default {BUDGET:.0f}; --smoke "
                             f"{SMOKE_BUDGET:.0f})")
    parser.add_argument("--only", default="", help="comma-separated steps (default: all)")
    parser.add_argument("--step", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    opts.device = "cpu" if opts.smoke else "gpu"
    platform = "cpu" if opts.smoke else "cuda"
    os.environ.update(JAX_PLATFORMS=platform, OVERPARAM_TORCH_DEVICE=platform,
                      PYTHONUNBUFFERED="1")
    if opts.step:
        CHILDREN[opts.step](opts)
        return
    names = [s.name for s in STEPS]
    only = [s for s in opts.only.split(",") if s] or names
    if set(only) - set(names):
        print(f"gpu_check.py: --only: unknown step {sorted(set(only) - set(names))[0]!r}; "
              f"steps: {', '.join(names)}", file=sys.stderr)
        sys.exit(2)
    if opts.budget is None:
        opts.budget = SMOKE_BUDGET if opts.smoke else BUDGET
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    report = Report(out, dict(versions=versions(), date=time.strftime("%Y-%m-%d %H:%M"),
                              smoke=opts.smoke, budget=opts.budget))
    if missing:
        report.rows.append(("modules", f"MISSING: {', '.join(missing)} (make gpu-wheels here, "
                            "then carry .whl)"))
    caps = {k: SMOKE_CAP for k in CAPS} if opts.smoke else CAPS
    run_steps([s for s in STEPS if s.name in only], opts, report, caps)


if __name__ == "__main__":
    main()
