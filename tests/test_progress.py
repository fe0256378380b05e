"""Tests for overparam.progress: the progress bar's throttling, rate, ETA and end line.

The clock and stream are injected (a fake clock, an in-memory stream), so the
tests need no sleeps.
"""

from __future__ import annotations

import io

import pytest

from overparam.progress import Progress


class Clock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Stream(io.StringIO):
    """A non-tty stream that remembers the clock time of each write."""

    def __init__(self, clock):
        super().__init__()
        self.clock, self.times = clock, []

    def write(self, s):
        self.times.append(self.clock())
        return super().write(s)


class TtyStream(io.StringIO):
    def isatty(self):
        return True


def _lines(stream) -> list[str]:
    return stream.getvalue().splitlines()


def test_not_a_tty_writes_whole_lines():
    clock = Clock()
    stream = io.StringIO()
    p = Progress(100, stream=stream, clock=clock, min_interval=1.0)
    clock.t += 2
    p.update(50)
    assert stream.getvalue().endswith("\n")
    assert "\r" not in stream.getvalue()
    assert len(_lines(stream)) == 1


def test_line_has_done_total_rate_and_eta():
    clock = Clock()
    stream = io.StringIO()
    p = Progress(10_000, stream=stream, clock=clock, min_interval=0.5)
    clock.t += 2.0
    p.update(2_500)           # 1,250 network-steps/s; 7,500 left -> 6 s
    (line,) = _lines(stream)
    assert "2,500/10,000" in line
    assert "network-steps" in line
    assert "1,250/s" in line
    assert "ETA 00:06" in line
    assert "00:02 elapsed" in line
    assert "25.0%" in line
    assert p.rate() == pytest.approx(1250.0)


def test_eta_in_hours():
    clock = Clock()
    stream = io.StringIO()
    p = Progress(3601 * 10 + 10, stream=stream, clock=clock, min_interval=0.0)
    clock.t += 1.0
    p.update(10)              # 10/s, 36,010 left -> 1:00:01
    assert "ETA 1:00:01" in _lines(stream)[-1]


def test_lines_at_most_every_min_interval_and_always_at_end():
    clock = Clock()
    stream = Stream(clock)
    p = Progress(1000, stream=stream, clock=clock, min_interval=1.0)
    for _ in range(99):       # 9.9 s of updates every 0.1 s
        clock.t += 0.1
        p.update(10)
    assert p.done == 990
    drawn = list(stream.times)
    assert 8 <= len(drawn) <= 10
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(drawn, drawn[1:], strict=False))
    assert all(t - 100.0 >= 1.0 - 1e-9 for t in drawn)
    clock.t += 0.01           # completion is drawn even inside min_interval
    p.update(10)
    lines = _lines(stream)
    assert len(lines) == len(drawn) + 1
    assert "1,000/1,000" in lines[-1] and "100.0%" in lines[-1]
    assert "ETA 00:00" in lines[-1]


def test_no_line_before_min_interval():
    clock = Clock()
    stream = io.StringIO()
    p = Progress(100, stream=stream, clock=clock, min_interval=5.0)
    clock.t += 4.9
    p.update(10)
    assert stream.getvalue() == ""
    clock.t += 0.1
    p.update(10)
    assert "20/100" in stream.getvalue()


def test_rate_before_any_time_has_passed():
    clock = Clock()
    stream = io.StringIO()
    p = Progress(100, stream=stream, clock=clock, min_interval=0.0)
    p.update(100)             # done at once: no division by zero
    line = _lines(stream)[-1]
    assert "100/100" in line and "| 0/s |" in line


def test_disabled_writes_nothing():
    clock = Clock()
    stream = io.StringIO()
    p = Progress(100, stream=stream, clock=clock, min_interval=0.0, enabled=False)
    for _ in range(10):
        clock.t += 1
        p.update(10)
    assert p.done == 100
    assert stream.getvalue() == ""


def test_tty_redraws_in_place_and_ends_with_newline():
    clock = Clock()
    stream = TtyStream()
    p = Progress(30, stream=stream, clock=clock, min_interval=1.0)
    for _ in range(3):
        clock.t += 1
        p.update(10)
    text = stream.getvalue()
    assert text.count("\r") == 3
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "30/30" in text.split("\r")[-1]


@pytest.mark.parametrize("total", [0, -5])
def test_degenerate_total(total):
    clock = Clock()
    stream = io.StringIO()
    p = Progress(total, stream=stream, clock=clock, min_interval=10.0)
    p.update(1)
    assert "100.0%" in stream.getvalue()
