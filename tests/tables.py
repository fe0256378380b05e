"""Shared assertion of the tests that compare whole results directories."""

from pathlib import Path

import pandas as pd

import overparam


def assert_same_tables(a, b):
    """Results directories a and b hold bit-identical tables; b was left clean (no
    temporary files, no checkpoints)."""
    ra, rb = overparam.load(a), overparam.load(b)
    pd.testing.assert_frame_equal(ra.runs.sort_values("run_id", ignore_index=True),
                                  rb.runs.sort_values("run_id", ignore_index=True),
                                  check_exact=True)
    pd.testing.assert_frame_equal(ra.steps, rb.steps, check_exact=True)
    pd.testing.assert_frame_equal(ra.layers, rb.layers, check_exact=True)
    assert not list(Path(b).rglob(".*.tmp")) and not (Path(b) / ".state").exists()
