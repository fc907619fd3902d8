# Two promises to a new user: `make demo` runs the service locally, `make test` proves it.
# Both set up everything they need (.venv, the pinned CDK CLI) on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Node 22 and 24 are the CDK CLI's lines; 20 (end-of-life) still works. jsii prints a banner per process
# for an end-of-life or deprecated Node: silenced for these three (local_aws/node_runtime.py does the same
# for `python -m local_pipeline`). The CLI's telemetry cannot reach anything offline.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20,22,24
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export CDK_DISABLE_CLI_TELEMETRY := true

.PHONY: setup demo test lint synth clean checkov-venv gpu-bench gpu-bundle

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

# checkov's dependencies conflict with the project's pins: it gets a venv of its own (used by
# tests/infra/test_checkov.py, which runs this target first).
CHECKOV_VENV := .venv-checkov

checkov-venv: $(CHECKOV_VENV)/.installed

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
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
	rm -rf cdk.out local-output .pytest_cache .ruff_cache $(CHECKOV_VENV)
