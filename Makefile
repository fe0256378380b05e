# overparam: `make sweep` and `make test` set everything up on a fresh machine.
#   make sweep [DEVICE=cpu|gpu|tpu] [CONFIG=sweeps/x.py] [ARGS='--config.num_seeds=64'] [OUT=results/x]
#   make analyze RESULTS=results/<name>
#   make test | make test-quick | make bench [ARGS=--smoke] | make lint | make install [DEVICE=...]
#   make gpu-wheels                 # the wheels benchmarks/gpu_check.sh carries to a GPU
# DEVICE=gpu installs jax for CUDA 13 (NVIDIA driver R580 or newer); CUDA=12 for older drivers.

DEVICE ?= cpu
CUDA ?= 13
CONFIG ?= sweeps/default.py
ARGS ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

JAX_PLATFORMS_cpu := cpu
JAX_PLATFORMS_gpu := cuda
JAX_PLATFORMS_tpu := tpu
EXTRAS_cpu := test
EXTRAS_gpu := test,cuda$(CUDA)
EXTRAS_tpu := test,tpu

ifeq ($(filter $(DEVICE),cpu gpu tpu),)
$(error DEVICE must be one of cpu, gpu, tpu; got '$(DEVICE)')
endif

ifeq ($(filter $(CUDA),12 13),)
$(error CUDA must be 12 or 13; got '$(CUDA)')
endif
OTHER_CUDA := $(if $(filter 12,$(CUDA)),13,12)

STAMP := $(VENV)/.installed-$(DEVICE)$(if $(filter gpu,$(DEVICE)),-cuda$(CUDA))
OUT_FLAG := $(if $(OUT),--out=$(OUT),)
# ARGS reach the command through the environment, split on spaces with globbing off
# (`set -f`): flag values such as --config.loss=(hinge,logistic) are never shell syntax.
export OVERPARAM_ARGS = $(ARGS)

.PHONY: install sweep analyze test test-quick bench gpu-wheels lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(filter gpu,$(DEVICE)),rm -f $(VENV)/.installed-gpu-cuda$(OTHER_CUDA); \
	    $(PY) -m pip uninstall -q -y jax-cuda$(OTHER_CUDA)-plugin jax-cuda$(OTHER_CUDA)-pjrt)
	$(PY) -m pip install -q -e '.[$(EXTRAS_$(DEVICE))]'
	touch $@

sweep: $(STAMP)
	set -f; JAX_PLATFORMS=$(JAX_PLATFORMS_$(DEVICE)) $(PY) -m overparam.sweep \
	    --config=$(CONFIG) --device=$(DEVICE) --analyze $(OUT_FLAG) $$OVERPARAM_ARGS

analyze: $(VENV)/.installed-cpu
	@test -n "$(RESULTS)" || { echo "usage: make analyze RESULTS=results/<name>" >&2; exit 2; }
	set -f; JAX_PLATFORMS=cpu $(PY) -m overparam.analyze --results=$(RESULTS) $$OVERPARAM_ARGS

# Test files run in parallel (pytest-xdist), a file's tests in one worker: its fixtures
# are made once. The files go out in the order tests/conftest.py gives them (the longest
# first), not xdist's (the most tests first). The quick tier leaves out the tests marked
# slow (tests/conftest.py).
PYTEST := JAX_PLATFORMS=cpu $(PY) -m pytest tests -n auto --maxprocesses=4 --dist loadfile \
	--no-loadscope-reorder

test: $(VENV)/.installed-cpu
	$(PYTEST)

test-quick: $(VENV)/.installed-cpu
	$(PYTEST) -m "not slow"

bench: $(VENV)/.installed-cpu
	$(PY) -m pip install -q -e '.[bench]'
	set -f; JAX_PLATFORMS=cpu $(PY) benchmarks/bench.py $$OVERPARAM_ARGS

# The packages of pyproject's dependencies and test extra that the lent GPU machine's python3
# (3.12, no network) lacks, as wheels in .whl/ for benchmarks/gpu_check.sh: the device tool's
# run carries .whl (BENCHMARKS.md, "GPU"). ml_collections is pure Python; its own needs
# (absl-py, PyYAML) are there.
GPU_WHEELS := ml_collections==1.1.0
gpu-wheels:
	rm -rf .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	    --implementation cp --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	@ls .whl

lint: $(VENV)/.installed-cpu
	$(PY) -m ruff check overparam tests sweeps benchmarks examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .whl
