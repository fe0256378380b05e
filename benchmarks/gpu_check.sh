#!/usr/bin/env bash
# Every GPU check in one device call (benchmarks/gpu_check.py), on the lent machine:
# its python3 has jax with CUDA, torch, flax, optax, pandas, pyarrow, absl-py, pytest;
# ml_collections travels as a wheel in .whl/ (BENCHMARKS.md, "GPU", says how to fetch it).
# The results land in $OUT/gpu.md (and $OUT/tests.log).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/gpu_check.py --out "${OUT:-/tmp/gpu_check}" "$@"
