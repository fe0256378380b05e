#!/usr/bin/env bash
# Every GPU check in one device call (benchmarks/gpu_check.py), on the lent machine, which has
# no network: its python3 has jax with CUDA, torch, flax, optax, pandas, pyarrow, absl-py and
# pytest; ml_collections travels as a wheel in .whl/ (`make gpu-wheels` here, then the device
# tool's run with command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=420).
# The results land in $OUT: gpu.md, gpu.json, tests.log, steps.log.
#   bash benchmarks/gpu_check.sh [--smoke] [--budget=S] [--only=tests,matmul,...]
# PYTHON (default python3) runs it; GPU_CHECK_WHEELS (default .whl) holds the wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    site=$(mktemp -d /tmp/overparam-site.XXXXXX)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$WHEELS"/*.whl
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "gpu_check.sh: no wheels in $WHEELS/ (make gpu-wheels): using $PYTHON's packages" >&2
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
if [[ " $* " != *" --smoke "* ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec "$PYTHON" benchmarks/gpu_check.py --out "${OUT:-/tmp/gpu_check}" "$@"
