"""Tests for overparam.interrupt: the first Ctrl-C is acknowledged and stops at the next
chunk boundary, a second one stops now; SIGTERM stays a clean stop; past training
nothing stops the sweep. End to end: two Ctrl-Cs to `python -m overparam.sweep`
whose writer thread never returns (a test hook), then a resume to the tables of an
uninterrupted run.

Signals are raised with `signal.raise_signal`, which runs the handler before it
returns, and a second signal is sent only once the first was acknowledged (two
signals sent together may arrive as one): nothing depends on timing.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import runpy
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tables import assert_same_tables

from overparam import config as config_lib
from overparam import engine, interrupt, programs
from overparam.interrupt import HOLDING, NOTICE, Interrupted

ROOT = Path(__file__).resolve().parents[1]


def test_first_ctrl_c_is_acknowledged_and_the_second_stops_now():
    said = []
    with interrupt.deferred(said.append) as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.signum == signal.SIGINT and said == [NOTICE]
        with pytest.raises(Interrupted) as e:
            signal.raise_signal(signal.SIGINT)
    assert e.value.signum == signal.SIGINT and e.value.now
    assert said == [NOTICE]


def test_sigterm_is_a_clean_stop_however_often():
    said = []
    with interrupt.deferred(said.append) as stop:
        for _ in range(3):
            signal.raise_signal(signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        signal.raise_signal(signal.SIGINT)     # after a SIGTERM: the first Ctrl-C
        assert said == ["SIGTERM: stopping after this chunk"] * 3 + [NOTICE]
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGINT)
    assert stop.signum == signal.SIGTERM     # the first signal is the one reported


def test_past_training_nothing_stops_the_sweep():
    said = []
    with interrupt.deferred(said.append) as stop:
        signal.raise_signal(signal.SIGINT)
        stop.hold()
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
    assert said == [NOTICE, HOLDING, HOLDING]


def test_handlers_come_back_and_install_raises_at_once():
    before = {sig: signal.getsignal(sig) for sig in interrupt.SIGNALS}
    with interrupt.deferred(lambda text: None):
        assert all(signal.getsignal(sig) is not h for sig, h in before.items())
    assert all(signal.getsignal(sig) is h for sig, h in before.items())
    try:
        interrupt.install()
        with pytest.raises(Interrupted) as e:
            signal.raise_signal(signal.SIGTERM)
        assert e.value.signum == signal.SIGTERM and not e.value.now
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_install_once_raises_for_the_first_signal_only_and_remembers_it():
    """The analysis's mode: a library's `except Exception` does not take the Interrupted,
    one that catches everything cannot hide that a signal came, and a second signal does
    not cut the first one's stop short."""
    before = {sig: signal.getsignal(sig) for sig in interrupt.SIGNALS}
    try:
        interrupt.install(once=True)
        assert interrupt.installed() and interrupt.received() is None
        with pytest.raises(Interrupted) as e:
            try:
                signal.raise_signal(signal.SIGTERM)
            except Exception:  # noqa: BLE001 - what a library's error handling does
                pass
        assert e.value.signum == signal.SIGTERM
        signal.raise_signal(signal.SIGINT)  # while stopping: ignored
        assert interrupt.received() == signal.SIGTERM
        interrupt.install(once=True)
        try:
            signal.raise_signal(signal.SIGINT)
        except BaseException:  # noqa: BLE001 - swallowed on the way
            pass
        assert interrupt.received() == signal.SIGINT
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert not interrupt.installed()


def test_the_default_acknowledgement_is_a_line_on_stderr(capsys):
    with interrupt.deferred():
        signal.raise_signal(signal.SIGINT)
    assert capsys.readouterr().err == NOTICE + "\n"


def test_a_second_ctrl_c_interrupts_a_wait_on_the_writer():
    """The main thread waits on a future that never completes (a writer stuck on the
    device); Ctrl-C twice from another thread, the second once the first was
    acknowledged, ends the wait with Interrupted(now=True)."""
    acknowledged = threading.Event()

    def notify(text):
        acknowledged.set()

    def press_twice():
        os.kill(os.getpid(), signal.SIGINT)
        if acknowledged.wait(timeout=60):
            os.kill(os.getpid(), signal.SIGINT)

    never = concurrent.futures.Future()
    presser = threading.Thread(target=press_twice)
    with interrupt.deferred(notify), pytest.raises(Interrupted) as e:
        presser.start()
        interrupt.wait(never, poll=0.05)
    presser.join()
    assert e.value.now and acknowledged.is_set()


def test_wait_returns_the_result_and_raises_the_error():
    done = concurrent.futures.Future()
    done.set_result(3)
    assert interrupt.wait(done) == 3
    failed = concurrent.futures.Future()
    failed.set_exception(OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        interrupt.wait(failed)


# ------------------------------------------------------------------ end to end

# Two batches of four chunks, a checkpoint after every chunk.
FIELDS = {"widths": (8, 16), "num_seeds": 2, "steps": 20, "chunk_steps": 5,
          "checkpoint_seconds": 0}
ARGS = ["--config=sweeps/default.py",
        *(f"--config.{k}={v}".replace(" ", "") for k, v in FIELDS.items())]


def _in_process(out):
    c = runpy.run_path(str(ROOT / "sweeps" / "default.py"))["get_config"]()
    for k, v in FIELDS.items():
        setattr(c, k, v)
    programs.enable_compilation_cache(os.environ["OVERPARAM_COMPILATION_CACHE"])
    engine.run_sweep(config_lib.validate(c), out, show_progress=False, log_fn=lambda *a: None)


@pytest.mark.slow
def test_two_ctrl_c_stop_a_stuck_sweep_now_and_it_resumes_to_the_same_tables(tmp_path):
    """At the second chunk's boundary the writer thread sends the first SIGINT and then
    never returns (OVERPARAM_HANG_AT): only the second Ctrl-C can stop the sweep."""
    out = tmp_path / "r"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "OVERPARAM_CRASH_AT": "chunk:2",
           "OVERPARAM_CRASH_SIGNAL": "SIGINT", "OVERPARAM_HANG_AT": "chunk:2"}
    proc = subprocess.Popen([sys.executable, "-m", "overparam.sweep", *ARGS, f"--out={out}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    watchdog = threading.Timer(300, proc.kill)   # a guard only: stuck, it never ends
    watchdog.start()
    try:
        before = []
        for line in proc.stderr:      # the progress bar is on: a log's whole lines
            before.append(line)
            if NOTICE in line:
                break
        assert NOTICE in before[-1], "".join(before)
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
    finally:
        watchdog.cancel()
        proc.kill()
    stderr = "".join(before) + rest
    assert proc.returncode == 128 + signal.SIGINT, stderr[-2000:]
    assert "Traceback" not in stderr and "stopped now" in stderr
    assert "resume with the same command" in stderr
    assert "compiling 1: width 8 depth 1" in stderr
    bars = [x for x in stderr.splitlines() if x.startswith(("[", "compiling"))]
    assert bars and "\r" not in stderr and all(len(x) <= 80 for x in bars)
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    assert not list(out.rglob(".*.tmp"))
    _in_process(out)
    reference = tmp_path / "reference"
    _in_process(reference)
    assert_same_tables(reference, out)
