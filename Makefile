# Two promises to a new user: `make demo` runs the service locally, `make test` proves it.
# Both set up everything they need (.venv, the pinned CDK CLI) on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# jsii prints a banner per process on Node 20; the CLI's telemetry cannot reach anything offline.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export CDK_DISABLE_CLI_TELEMETRY := true

.PHONY: setup demo test lint synth clean gpu-bench gpu-bundle

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt lambdas/requirements.txt trainer_image/requirements.txt trainer_image/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e trainer_image
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(BIN)/python -m local_pipeline demo

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

synth: setup
	npx cdk synth --quiet

# The GPU benchmark (dreambooth_trainer.bench): SD 1.5-shaped random weights per preset and a naive
# baseline, one JSON table. Without CUDA it runs the tiny model (proves the path, measures nothing on a GPU).
# On the GPU machine, which reaches no registry: `bash trainer_image/gpu_bench.sh` (needs .whl/ below).
gpu-bench: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m dreambooth_trainer.bench

# The wheels the GPU machine lacks (diffusers, pydantic, bitsandbytes, ...), for its Python 3.12, into .whl/.
gpu-bundle: setup
	$(BIN)/python -m dreambooth_trainer.gpu_bundle --dest .whl --python-version 3.12

clean:
	rm -rf cdk.out local-output .pytest_cache .ruff_cache
