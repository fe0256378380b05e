"""The networks axis sharded over 4 simulated CPU devices gives the tables of one device."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import overparam

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--config=sweeps/default.py", "--config.widths=(8,16)", "--config.num_seeds=3",
        "--config.steps=12", "--config.chunk_steps=5",
        "--config.optimizer=(gd,sgd)", "--config.batch_size=(16,)", "--progress=false"]
# With Gram tracking; and without it (its state an empty array, which XLA hands back
# unsharded) but with the sharpness's warm start and the centered model's f(0).
FEATURES = {"gram": ["--config.gram_every=4"],
            "sharpness": ["--config.gram_every=0", "--config.sharpness_every=3",
                          "--config.center_output=True", "--config.param=(mup,)"]}


def _sweep(out, devices, features):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')} "  # conftest's, and:
                        f"--xla_force_host_platform_device_count={devices}").strip()
    proc = subprocess.run([sys.executable, "-m", "overparam.sweep", *ARGS, *features,
                           f"--out={out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return overparam.load(out)


@pytest.mark.slow
@pytest.mark.parametrize("features", FEATURES.values(), ids=FEATURES.keys())
def test_four_devices_match_one(tmp_path, features):
    one, four = _sweep(tmp_path / "one", 1, features), _sweep(tmp_path / "four", 4, features)
    assert one.manifest["device"]["device_count"] == 1
    assert four.manifest["device"]["device_count"] == 4
    assert four.manifest["batch_multiple_of"] == 4 and "(+1 pad)" in four.manifest["plan"][1]
    for name, keys in (("steps", ["run_id", "step"]), ("layers", ["run_id", "step", "layer"])):
        a, b = getattr(one, name), getattr(four, name)
        assert a[keys].equals(b[keys]), name
        num = [c for c in a.columns if c not in keys and a[c].dtype.kind == "f"]
        np.testing.assert_allclose(a[num].to_numpy(), b[num].to_numpy(), rtol=1e-5, atol=1e-7,
                                   err_msg=name)
    cols = ["run_id", "status", "steps_to_zero_error"]
    pd.testing.assert_frame_equal(one.runs[cols].sort_values("run_id", ignore_index=True),
                                  four.runs[cols].sort_values("run_id", ignore_index=True))
