"""Every script in benchmarks/ runs at toy sizes (its --smoke) and prints its rows.

The runs are subprocesses, as `make bench` and the GPU check run them; the ones that the
selected tests need start together on first use, two at a time, so that a 2-core machine
is kept busy. torch is in the bench extra only (not the test extra): where it is not
installed, bench.py's and the GPU check's smoke runs take their no-torch path, and the
tests check that path's line instead of the torch rows.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
import gpu_check  # noqa: E402  (imports no JAX)

HAS_TORCH = importlib.util.find_spec("torch") is not None
# Each script in benchmarks/ -> the smoke run that runs it (bench.py runs gemm.py,
# overhead.py and compile_cost.py with --smoke and peers.py; the GPU check runs
# conv_cost.py --smoke and gpu_check.py through gpu_check.sh).
COVERED_BY = {"bench.py": "bench", "gemm.py": "bench", "overhead.py": "bench",
              "compile_cost.py": "bench", "peers.py": "bench",
              "cache_groups.py": "cache_groups", "gram_cost.py": "gram_cost",
              "host_cost.py": "host_cost", "sharpness_cost.py": "sharpness_cost",
              "lazy_cost.py": "lazy_cost",
              "conv_cost.py": "gpu_check", "gpu_check.py": "gpu_check",
              "gpu_check.sh": "gpu_check"}
RUNS = {  # longest first: they start in this order
    "bench": ["benchmarks/bench.py", "--smoke"],
    "gpu_check": None,  # the shell wrapper: see _command
    "sharpness_cost": ["benchmarks/sharpness_cost.py", "--smoke"],
    "cache_groups": ["benchmarks/cache_groups.py", "--smoke"],
    "gram_cost": ["benchmarks/gram_cost.py", "--smoke"],
    "host_cost": ["benchmarks/host_cost.py", "--smoke"],
    "lazy_cost": ["benchmarks/lazy_cost.py", "--smoke"],
}
RUN_OF_TEST = {"test_bench_smoke_prints_the_summary": "bench",
               "test_gpu_check_smoke_through_its_shell_wrapper": "gpu_check",
               "test_sharpness_cost_smoke": "sharpness_cost",
               "test_cache_groups_smoke": "cache_groups", "test_gram_cost_smoke": "gram_cost",
               "test_host_cost_smoke": "host_cost", "test_lazy_cost_smoke": "lazy_cost"}
ENV = {**os.environ, "JAX_PLATFORMS": "cpu",
       "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _command(name: str, out: Path) -> tuple[list[str], dict]:
    if name == "gpu_check":
        (out / "no-wheels").mkdir(exist_ok=True)
        return (["bash", "benchmarks/gpu_check.sh", "--smoke", f"--out={out / 'gpu'}"],
                {**ENV, "PYTHON": sys.executable, "GPU_CHECK_WHEELS": str(out / "no-wheels")})
    return [sys.executable, *RUNS[name]], ENV


def _run(name: str, out: Path) -> subprocess.CompletedProcess:
    cmd, env = _command(name, out)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    proc.seconds = time.perf_counter() - t
    return proc


@pytest.fixture(scope="module")
def smoke(request, tmp_path_factory):
    """smoke(name): the finished smoke run `name` (exit 0 asserted), with .stdout."""
    wanted = {RUN_OF_TEST[item.originalname] for item in request.session.items
              if item.module.__name__ == __name__ and item.originalname in RUN_OF_TEST}
    out = tmp_path_factory.mktemp("smoke")
    pool = concurrent.futures.ThreadPoolExecutor(2)
    futures = {name: pool.submit(_run, name, out) for name in RUNS if name in wanted}

    def get(name: str) -> subprocess.CompletedProcess:
        proc = futures[name].result()
        assert proc.returncode == 0, (f"{' '.join(proc.args)}: exit {proc.returncode}\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        print(f"{name} --smoke: {proc.seconds:.1f} s")
        return proc

    get.out = out
    yield get
    pool.shutdown(cancel_futures=True)


def _lines(text: str, *patterns: str) -> None:
    for p in patterns:
        assert re.search(p, text, re.MULTILINE), f"no line matches {p!r} in:\n{text}"


def test_every_benchmark_script_has_a_smoke_run():
    scripts = sorted(p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh"))
    assert scripts == sorted(COVERED_BY), (
        "every script in benchmarks/ needs a --smoke run in tests/test_benchmarks.py "
        "(COVERED_BY), so that none can break unseen")
    assert set(COVERED_BY.values()) == set(RUNS) == set(RUN_OF_TEST.values())
    for name in RUN_OF_TEST:
        assert callable(globals().get(name)), name


@pytest.mark.slow
def test_bench_smoke_prints_the_summary(smoke):
    out = smoke("bench").stdout
    _lines(out, r"^overparam \s+2 \s+[\d,]+ ", r"^overparam-warm ", r"^flax-mlp \s+2 ",
           r"^flax-mlp-warm ", r"^jax-seq \s+1 ", r"all metrics agree with overparam over 10",
           r"^overparam compile \(cold\): [\d.]+ s", r"^the MLP's flax twin .* cold [\d.]+",
           r"^float32 GEMM 128\^3 \(median of rounds\): NumPy \d+, XLA \d+ GFLOP/s",  # gemm.py
           r"^smoke m=16 L=2 +[\d.]+ms +[\d.]+ms",                                   # overhead.py
           r"^  sweeps/default.py: compile [\d.]+ s of [\d.]+ s wall",
           r"^    width=8 depth=1 n=16 gd: init [\d.]+/[\d.]+/[\d.]+, chunk",    # compile_cost.py
           r"^    XLA phases: ")
    if HAS_TORCH:
        _lines(out, r"^torch-seq \s+1 ", r"^torch-func \s+2 ", r"jax-seq, torch-seq, torch-func")
    else:
        _lines(out, r"torch not installed: torch-seq and torch-func skipped")


@pytest.mark.slow
def test_gpu_check_smoke_through_its_shell_wrapper(smoke):
    proc = smoke("gpu_check")
    gpu = smoke.out / "gpu"
    assert sorted(p.name for p in gpu.iterdir()) == ["gpu.json", "gpu.md", "steps.log",
                                                     "tests.log"]
    md = (gpu / "gpu.md").read_text()
    assert "FAILED" not in md, md
    _lines(md, r"^GPU checks on cpu \(cpu; python [\d.]+, jax [\d.]+",
           r"^\| numerics tests on the device \(theory, model\) \| 2 passed in \d+ s \|$",
           r"^\| matmul 128\^3 at 'highest' \(float32\) \| [\d.]+ TFLOP/s \|$",
           r"^\| matmul 128\^3 at TF32 \| not available: .*not supported .* on CPU \|$",
           r"^\| step with every metric, width 32 .* \| [\d.]+ ms, [\d.]+ TFLOP/s = \d+% of",
           r"^\| cnn chunk, width 4, 1 networks, n 8: .* \| patches [\d.]+ ms, lax [\d.]+ ms",
           r"^\| R with 2 seeds \(cold cache, whole process\) \| [\d.]+ s wall, compile",
           r"^\| 6 networks of width 16 \(du2018\) \| [\d.]+ s wall, 1 batches \(6 networks\);"
           r" planned peak [\d.]+ MiB per batch \(measured\), no measured peak",
           r"^\| whole run \| \d+ s \|$")
    _lines(md, r"torch-seq on the same device [\d,]+: " if HAS_TORCH
           else r"torch-seq not run: torch is not installed \(")
    record = json.loads((gpu / "gpu.json").read_text())
    assert list(record["steps"]) == [s.name for s in gpu_check.STEPS]
    assert {s["status"] for s in record["steps"].values()} == {"ok"}
    assert "2 passed" in (gpu / "tests.log").read_text()  # one pytest, both tests
    assert "no wheels in" in proc.stderr  # the wrapper said why it installed none


@pytest.mark.slow
def test_sharpness_cost_smoke(smoke):
    _lines(smoke("sharpness_cost").stdout, r"^ntk m=8 L=1 n=8 x2 +[\d.]+ +[\d.]+ +[\d.]+ \[")


@pytest.mark.slow
def test_cache_groups_smoke(smoke):
    _lines(smoke("cache_groups").stdout,
           r"^m=16 L=1 n=16 x8: g=all\*?: [\d.]+ ms +g=4\*?: [\d.]+ ms$")


@pytest.mark.slow
def test_gram_cost_smoke(smoke):
    _lines(smoke("gram_cost").stdout, r"^du m=16 L=1 n=8 x2 +[\d.]+ +[\d.]+ +[\d.]+$")


@pytest.mark.slow
def test_host_cost_smoke(smoke):
    _lines(smoke("host_cost").stdout, r"^  kernels: [\d.]+ s per training set \(n = d = 32",
           r"^  records: [\d.]+ s per chunk of a batch of 2$", r"^  checkpoint: [\d,]+ MiB/s",
           r"^  device \(estimated at 60 TFLOP/s\)")


@pytest.mark.slow
def test_bench_raises_a_failed_child_s_command_and_stderr_for_its_caller():
    """bench.py's children fail as ChildFailed (bench's main: one message, exit 1), not
    as sys.exit deep inside, which the GPU check's R step could not catch."""
    import bench

    with pytest.raises(bench.ChildFailed, match=r"(?s)exit 4\):.*the reason"):
        bench.run_child([sys.executable, "-c",
                         "import sys; print('the reason', file=sys.stderr); sys.exit(4)"])


# ---------------------------------------------------------------- the GPU check's parent


PY = sys.executable


def _step(name, code, rows=None):
    """A step that runs `code`; its row by default: its results as JSON."""
    rows = rows or (lambda r, context, opts: [(name, json.dumps(r))])
    return gpu_check.Step(name, lambda opts: [[PY, "-c", textwrap.dedent(code)]], rows)


@pytest.mark.slow
def test_gpu_check_records_each_failure_as_a_row_and_runs_the_rest(tmp_path):
    steps = [
        _step("raises", "raise ValueError('boom at step 1')"),
        _step("exits", "import sys; print('RESULT {\"half\": 1}'); sys.exit(3)"),
        _step("hangs", "import time; print('RESULT {\"started\": 1}', flush=True); "
              "time.sleep(600)"),
        _step("unreadable", "print('RESULT {\"x\": 1}')", rows=lambda r, c, o: [("y", r["y"])]),
        _step("fine", "print('RESULT {\"rate\": 2.5}')",
              rows=lambda r, c, o: [("fine figure", f"{r['rate']} and {c['exits']['half']}")]),
    ]
    report = gpu_check.Report(tmp_path, dict(versions={}, date="today"))
    caps = {"raises": 60, "exits": 60, "hangs": 2, "unreadable": 60, "fine": 60}
    gpu_check.run_steps(steps, argparse.Namespace(budget=600, smoke=True), report, caps)
    rows = dict(report.rows)
    assert rows["raises: FAILED"] == "exit 1: ValueError: boom at step 1"
    assert rows["exits"] == '{"half": 1}' and rows["exits: FAILED"] == "exit 3: no message"
    assert rows["hangs"] == '{"started": 1}'
    assert rows["hangs: FAILED"] == "stopped at its cap of 2 s"
    assert rows["unreadable: FAILED"] == ("its figures unreadable (KeyError: 'y'); "
                                          'printed: {"x": 1}')
    assert rows["fine figure"] == "2.5 and 1"  # after all of them, with an earlier's figure
    md = (tmp_path / "gpu.md").read_text()
    assert md.index("raises: FAILED") < md.index("hangs: FAILED") < md.index("fine figure")
    record = json.loads((tmp_path / "gpu.json").read_text())["steps"]
    assert record["fine"]["status"] == "ok" and record["exits"]["returncodes"] == [3]
    assert "ValueError: boom at step 1" in (tmp_path / "steps.log").read_text()


@pytest.mark.slow
def test_gpu_check_gives_the_last_step_what_is_left_and_skips_steps_past_the_budget(tmp_path):
    steps = [_step("last", "import time; time.sleep(600)"), _step("after", "print(1)")]
    report = gpu_check.Report(tmp_path, dict(versions={}, date="today"))
    gpu_check.run_steps(steps, argparse.Namespace(budget=6, smoke=True), report,
                        {"last": None, "after": 60})
    rows = dict(report.rows)
    assert rows["last: FAILED"] == "stopped at its cap of 6 s"
    assert rows["after: FAILED"].startswith("not run: ") and "after" not in rows
    assert "| after: FAILED | not run: " in (tmp_path / "gpu.md").read_text()


@pytest.mark.slow
def test_gpu_check_runs_a_step_s_commands_at_once_and_kills_each_group_at_the_cap():
    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(600)\n")
    outcome, quick = gpu_check.run_commands([[PY, "-c", code], [PY, "-c", "print('done')"]],
                                            3, dict(os.environ))
    assert outcome.returncode is None and (quick.returncode, quick.output) == (0, "done\n")
    grandchild = int(outcome.output.split()[0])
    for _ in range(100):  # killed at once; reaped by init soon after
        status = Path(f"/proc/{grandchild}/status")
        if not status.exists() or "zombie" in status.read_text():
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {grandchild} of the step still runs")


@pytest.mark.slow
def test_gpu_check_refuses_an_unknown_step_in_one_line(tmp_path):
    proc = subprocess.run([PY, str(BENCH / "gpu_check.py"), "--smoke", "--only=tests,nope",
                           f"--out={tmp_path}"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--only: unknown step 'nope'" in proc.stderr and not list(tmp_path.iterdir())


# ---------------------------------------------------------------- the cpu_only marker


@pytest.mark.slow
def test_cpu_only_tests_are_skipped_on_another_backend(tmp_path):
    """conftest skips the tests marked cpu_only where JAX's backend is not the CPU (here
    faked by a plugin loaded before it), so that the GPU check's -x cannot stop on them."""
    (tmp_path / "fake_gpu_backend.py").write_text(
        "import jax\njax.default_backend = lambda: 'gpu'\n")
    nodes = ["tests/test_train.py::test_tables_do_not_depend_on_cache_groups",
             "tests/test_gram.py::test_long_chunks_with_gram_tracking_do_not_deadlock"]
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), ENV["PYTHONPATH"]])}
    proc = subprocess.run([PY, "-m", "pytest", "-p", "fake_gpu_backend", "-p",
                           "no:cacheprovider", "-rs", *nodes], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 skipped" in proc.stdout and "cpu_only: JAX's backend here is gpu" in proc.stdout


@pytest.mark.slow
def test_lazy_cost_smoke(smoke):
    _lines(smoke("lazy_cost").stdout, r"^device: ",
           r"^ntk m=8 L=1 n=8 x2 +(\s+[\d.]+ x[\d.]+){6}$")
