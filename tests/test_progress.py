"""Tests for overparam.progress: work-weighted ETA, 80 columns, in-place redraws on a
terminal, whole lines elsewhere, the redraw timer, the compile line.

The clock and stream are injected (a fake clock, an in-memory stream) and the
timer is driven by `tick`, so the tests need no sleeps and no threads.
"""

from __future__ import annotations

import io

import pytest

from overparam import config as config_lib
from overparam import plan as plan_lib
from overparam import programs
from overparam.progress import COLUMNS, Progress, duration, flop_rate


class Clock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Stream(io.StringIO):
    """A stream that remembers each write and the clock time it came at."""

    def __init__(self, clock=None, tty=False):
        super().__init__()
        self.clock, self.tty, self.writes, self.times = clock, tty, [], []

    def isatty(self):
        return self.tty

    def write(self, s):
        self.writes.append(s)
        self.times.append(self.clock() if self.clock else None)
        return super().write(s)


def _screen(text: str) -> list[str]:
    """What a terminal shows after `text`: carriage returns overwrite, newlines advance."""
    rows, row, col = [], [], 0
    for ch in text:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            rows.append("".join(row).rstrip())
            row, col = [], 0
        else:
            row[col:col + 1] = [ch]
            col += 1
    return rows + ["".join(row).rstrip()]


def _lines(stream) -> list[str]:
    return stream.getvalue().splitlines()


def _tty(clock, **kwargs):
    stream = Stream(clock, tty=True)
    return Progress(stream=stream, clock=clock, **kwargs), stream


# ------------------------------------------------------------------ work, not count


def test_eta_weighs_each_batch_by_its_flops_per_step():
    """Widths 64x apart: at half the network-steps, almost all the work is left."""
    sweep = config_lib.validate(dict(widths=(16, 1024), depths=(1,), num_seeds=4, n=(32,),
                                     d=8, lr=(0.1,), steps=100, chunk_steps=50))
    narrow, wide = plan_lib.make_plan(sweep).batches
    flops = [plan_lib.step_flops(b.static) for b in (narrow, wide)]
    assert flops[1] / flops[0] > 60
    work = [b.num_real * sweep.steps * f for b, f in zip((narrow, wide), flops)]
    clock, stream = Clock(), Stream()
    p = Progress(sum(work), stream=stream, clock=clock, min_interval=0.0)
    clock.t += 10.0                   # the narrow batch, half the network-steps, in 10 s
    p.update(narrow.num_real * sweep.steps * flops[0])
    left = 10.0 * work[1] / work[0]   # its work rate, over the wide batch's work
    assert p.eta() == pytest.approx(left)
    assert left > 600                 # counting network-steps would have said 10 s
    line = _lines(stream)[-1]
    assert f"ETA {duration(left)}" in line
    assert f"{100 * work[0] / sum(work):5.1f}%" in line
    assert flop_rate(work[0] / 10.0) in line


def test_time_spent_compiling_is_not_in_the_rate():
    clock, stream = Clock(), Stream()
    p = Progress(1000, stream=stream, clock=clock, min_interval=0.0)
    with p.compiling("compiling 1/2: width 8 depth 1 n=8 (batch 2)"):
        clock.t += 100.0
    clock.t += 10.0
    p.update(100)                     # 100 work in 10 s of training
    assert p.rate() == pytest.approx(10.0)
    assert p.eta() == pytest.approx(90.0)
    assert "01:50 elapsed" in _lines(stream)[-1]   # elapsed is the wall clock's


def test_eta_counts_down_between_updates():
    clock = Clock()
    p = Progress(1000, stream=Stream(), clock=clock, min_interval=0.0)
    assert p.eta() is None            # no rate yet
    clock.t += 10.0
    p.update(100)
    clock.t += 30.0
    assert p.eta() == pytest.approx(60.0)
    clock.t += 100.0
    assert p.eta() == 0.0


def test_formats():
    assert duration(6) == "00:06" and duration(3601) == "1:00:01"
    assert duration(99 * 3600 + 59 * 60 + 59) == "99:59:59"
    assert duration(100 * 3600) == "4d04h" and duration(1e12) == ">999d"
    assert duration(None) == "--:--" and duration(float("inf")) == "--:--"
    assert flop_rate(12.3e9) == "12.3 GFLOP/s" and flop_rate(999.9) == "999.9 FLOP/s"
    assert flop_rate(999.96) == "1.0 kFLOP/s" and flop_rate(0) == "-- FLOP/s"
    assert flop_rate(1e40) == ">999 QFLOP/s"


# ------------------------------------------------------------------ 80 columns


@pytest.mark.parametrize("tty", [False, True])
@pytest.mark.parametrize("total,done,seconds", [
    (1e30, 4e29, 1e-3),     # a huge count at a huge rate
    (1e30, 1.0, 1e9),       # a tiny rate: an ETA of millennia
    (7, 3, 359_999.0),      # 99:59:59 elapsed
    (0, 5, 0.0),            # nothing to do
])
def test_every_line_fits_in_80_columns(tty, total, done, seconds):
    clock = Clock()
    stream = Stream(clock, tty=tty)
    p = Progress(total, stream=stream, clock=clock, min_interval=0.0)
    with p.compiling("compiling 1234/5678: width 1048576 depth 1000 n=1000000000 "
                     "(batch 123456) and then some more text"):
        clock.t += seconds
        p.tick()
    clock.t += seconds
    p.update(done)
    p.tick()
    p.close()
    limit = COLUMNS - 1 if tty else COLUMNS
    for row in _screen(stream.getvalue()):
        assert len(row) <= limit, row
    for piece in stream.getvalue().replace("\r", "\n").split("\n"):
        assert len(piece) <= limit, piece


def test_a_narrow_terminal_drops_the_bar_not_the_numbers():
    clock = Clock()
    stream = Stream(clock, tty=True)
    p = Progress(100, stream=stream, clock=clock, columns=60)
    clock.t += 1
    p.update(50)
    (row,) = _screen(stream.getvalue())
    assert "[" not in row and "50.0%" in row and len(row) <= 59


# ------------------------------------------------------------------ terminal


def test_tty_redraw_leaves_no_garbage_of_a_longer_line():
    clock = Clock()
    p, stream = _tty(clock, redraw_interval=0.0)
    p.begin(3601 * 100)
    clock.t += 1.0
    p.update(100)                     # ETA 1:00:00: the longer line
    assert "ETA 1:00:00" in _screen(stream.getvalue())[-1]
    clock.t += 3000.0                 # counted down: ETA 10:00, a shorter line
    p.tick()
    (row,) = _screen(stream.getvalue())
    assert row == p.line().rstrip() and row.endswith("ETA 10:00")
    with p.compiling("compiling 2/6: width 1024 depth 2 n=128 (batch 64)"):
        (row,) = _screen(stream.getvalue())
        assert row == "compiling 2/6: width 1024 depth 2 n=128 (batch 64)  00:00"
    (row,) = _screen(stream.getvalue())
    assert row.startswith("[") and row.endswith("ETA 10:00")
    assert "\x1b" not in stream.getvalue()     # padding, no escape sequences


def test_timer_redraws_a_terminal_without_updates():
    clock = Clock()
    p, stream = _tty(clock, redraw_interval=0.5)
    p.begin(1000)
    clock.t += 10.0
    p.update(100)                     # 10/s: ETA 01:30
    draws = stream.getvalue().count("\r")
    for _ in range(4):
        clock.t += 0.5
        p.tick()
    assert stream.getvalue().count("\r") == draws + 4
    (row,) = _screen(stream.getvalue())
    assert "00:12 elapsed" in row and "ETA 01:28" in row


def test_tty_updates_between_ticks_are_throttled_but_the_end_is_drawn():
    clock = Clock()
    p, stream = _tty(clock, redraw_interval=0.5)
    p.begin(100)
    before = len(stream.writes)
    for _ in range(9):                # every 0.01 s, just after begin drew the bar
        clock.t += 0.01
        p.update(10)
    assert len(stream.writes) == before       # the timer draws them
    clock.t += 0.01
    p.update(10)
    assert stream.getvalue().endswith("\n")
    assert "100.0%" in _screen(stream.getvalue())[0]
    p.tick()
    p.close()                         # nothing after the finished line
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1


def test_close_ends_the_terminal_line_and_erases_a_lone_compile_line():
    clock = Clock()
    p, stream = _tty(clock)
    with p.compiling("compiling 1: width 8 depth 1 n=8 (batch 2)"):
        clock.t += 2.0
        p.tick()
        assert _screen(stream.getvalue()) == ["compiling 1: width 8 depth 1 n=8 (batch 2)  00:02"]
    assert _screen(stream.getvalue()) == [""]  # planning done: the plan prints on a clean line
    p.begin(100)
    clock.t += 1.0
    p.update(30)
    p.close()
    rows = _screen(stream.getvalue())
    assert rows[-1] == "" and "30.0%" in rows[-2]


def test_a_message_goes_above_the_bar():
    clock = Clock()
    p, stream = _tty(clock)
    p.begin(100)
    clock.t += 1
    p.update(40)
    p.message("stopping after this chunk; Ctrl-C again to stop now")
    rows = _screen(stream.getvalue())
    assert rows[0] == "stopping after this chunk; Ctrl-C again to stop now"
    assert "40.0%" in rows[1] and len(rows) == 2


# ------------------------------------------------------------------ not a terminal


def test_not_a_tty_gets_whole_lines_only():
    clock = Clock()
    stream = Stream(clock)
    p = Progress(stream=stream, clock=clock, min_interval=1.0)
    with p.compiling("compiling 1: width 8 depth 1 n=8 (batch 2)"):
        clock.t += 3.0
        p.tick()
    p.begin(100)
    for _ in range(30):
        clock.t += 0.1
        p.update(3)
        p.tick()
    p.message("stopping after this chunk; Ctrl-C again to stop now")
    p.close()
    assert all(w.endswith("\n") and w.count("\n") == 1 for w in stream.writes)
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    lines = _lines(stream)
    assert lines[0] == "compiling 1: width 8 depth 1 n=8 (batch 2)"
    assert lines[-2] == "stopping after this chunk; Ctrl-C again to stop now"
    assert "90.0%" in lines[-1]       # close writes the update held back


def test_not_a_tty_lines_at_most_every_min_interval_and_always_at_the_end():
    clock = Clock()
    stream = Stream(clock)
    p = Progress(1000, stream=stream, clock=clock, min_interval=1.0)
    for _ in range(99):               # 9.9 s of updates every 0.1 s
        clock.t += 0.1
        p.update(10)
    drawn = list(stream.times)
    assert 9 <= len(drawn) <= 10
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(drawn, drawn[1:]))
    clock.t += 0.01                   # the end is written even inside min_interval
    p.update(10)
    assert len(_lines(stream)) == len(drawn) + 1
    assert "100.0%" in _lines(stream)[-1] and "ETA 00:00" in _lines(stream)[-1]


def test_not_a_tty_timer_writes_an_update_held_back():
    clock = Clock()
    stream = Stream(clock)
    p = Progress(100, stream=stream, clock=clock, min_interval=5.0)
    clock.t += 1.0
    p.update(10)                      # the first update is written at once
    clock.t += 1.0
    p.update(10)                      # held back
    assert len(_lines(stream)) == 1
    clock.t += 3.9
    p.tick()
    assert len(_lines(stream)) == 1
    clock.t += 0.1
    p.tick()
    assert len(_lines(stream)) == 2 and "20.0%" in _lines(stream)[-1]
    clock.t += 10.0
    p.tick()                          # nothing new: no line
    assert len(_lines(stream)) == 2


def test_disabled_writes_nothing_but_messages():
    clock = Clock()
    stream = Stream(clock)
    p = Progress(100, stream=stream, clock=clock, min_interval=0.0, enabled=False)
    with p.compiling("compiling 1: width 8 depth 1 n=8 (batch 2)"):
        clock.t += 1
    for _ in range(10):
        clock.t += 1
        p.update(10)
        p.tick()
    p.close()
    assert p.done == 100 and stream.getvalue() == ""
    p.message("stopping after this chunk; Ctrl-C again to stop now")
    assert stream.getvalue() == "stopping after this chunk; Ctrl-C again to stop now\n"


@pytest.mark.parametrize("total", [0, -5])
def test_degenerate_total(total):
    clock = Clock()
    stream = Stream(clock)
    p = Progress(total, stream=stream, clock=clock, min_interval=10.0)
    p.update(1)
    assert "100.0%" in stream.getvalue()


# ------------------------------------------------------------------ compile lines


class _Shown:
    def __init__(self):
        self.texts = []

    def compiling(self, text):
        import contextlib

        self.texts.append(text)
        return contextlib.nullcontext()


def test_programs_compile_line_counts_programs_once_the_plan_is_known():
    sweep = config_lib.validate(dict(widths=(8, 1024), depths=(2,), num_seeds=1, n=(128,),
                                     d=4, lr=(0.1,), steps=4, chunk_steps=4))
    a, b = plan_lib.make_plan(sweep).batches
    shown = _Shown()
    compiled = programs.Executables(progress=shown)
    with compiled._compiling(a.static, 64):
        pass
    compiled._compiled[(a.static, 64)] = None      # as if compiled while planning
    compiled.expect([(a.static, 64), (b.static, 64)])
    with compiled._compiling(b.static, 64):
        pass
    assert shown.texts == ["compiling 1: width 8 depth 2 n=128 (batch 64)",
                           "compiling 2/2: width 1024 depth 2 n=128 (batch 64)"]


def test_not_in_logs_writes_only_to_a_terminal():
    clock = Clock()
    log, tty = Stream(clock), Stream(clock, tty=True)
    for stream in (log, tty):
        p = Progress(stream=stream, clock=clock, in_logs=False)
        with p.compiling("compiling 1: width 8 depth 1 n=8 (batch 2)"):
            clock.t += 1
    assert log.getvalue() == "" and _screen(tty.getvalue()) == [""]
    assert "compiling 1" in tty.getvalue()


def test_nothing_is_drawn_after_close():
    """A writer thread left running by a second Ctrl-C may still report its chunk."""
    clock = Clock()
    stream = Stream(clock)
    p = Progress(100, stream=stream, clock=clock, min_interval=0.0)
    p.close()
    clock.t += 1
    p.update(50)
    p.tick()
    assert stream.getvalue() == ""
