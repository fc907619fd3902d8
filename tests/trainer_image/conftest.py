"""Shared fixtures: one tiny random-weight Stable Diffusion per session, SageMaker job folders to run in."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dreambooth_trainer import entrypoint
from dreambooth_trainer.family_fixtures import build_tiny_family_model
from dreambooth_trainer.offline_fixtures import (
    build_tiny_base_model,
    write_sample_subject_images,
    write_single_file_checkpoint,
)

# Shared 2-core machines: two torch threads fall 20-70x under load, one stays steady.
torch.set_num_threads(1)

# What every test job shares: tiny resolution, few steps, one thread.
BASE_HYPERPARAMETERS = {
    "instance_prompt": "a photo of sks dog",
    "resolution": "32",
    "max_train_steps": "4",
    "learning_rate": "1e-3",
    "logging_steps": "2",
    "num_threads": "1",
    "center_crop": "true",
    "num_samples": "1",  # samples on, but cheap: one image, two denoising steps
    "sample_inference_steps": "2",
}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials for moto; no profile or endpoint of this machine leaks in."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_base_model(tmp_path_factory.mktemp("base") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_family_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """tiny_family_model("sdxl" | "flux" | "zimage") -> a tiny random-weight diffusers folder, built once."""
    cache = tmp_path_factory.mktemp("families")
    return lambda family: build_tiny_family_model(family, cache)


@pytest.fixture(scope="session")
def tiny_single_file(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_single_file_checkpoint(tiny_model, tmp_path_factory.mktemp("single") / "tiny-sd.safetensors")


@pytest.fixture(scope="session")
def subject_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("subject")
    write_sample_subject_images(folder, n=4, size=48, seed=0)
    return folder


class SageMakerJob:
    """A /opt/ml tree in a temporary folder, run through the real entrypoint (SAGEMAKER_BASE_DIR)."""

    def __init__(self, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.base = base
        self._monkeypatch = monkeypatch

    def channel(self, name: str) -> Path:
        path = self.base / "input" / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_channel(self, name: str, source: Path) -> Path:
        target = self.channel(name)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy2(source, target / source.name)
        return target

    def write_hyperparameters(self, hyperparameters: dict[str, str], *, defaults: bool = True) -> None:
        config = self.base / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        values = {**BASE_HYPERPARAMETERS, **hyperparameters} if defaults else hyperparameters
        (config / "hyperparameters.json").write_text(json.dumps(values))

    def run(self) -> int:
        self._monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(self.base))
        self._monkeypatch.setenv("TRAINING_JOB_NAME", "test-job")
        return entrypoint.main(["train"])

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def checkpoints_dir(self) -> Path:
        return self.base / "checkpoints"

    @property
    def failure(self) -> str | None:
        path = self.base / "output" / "failure"
        return path.read_text() if path.exists() else None


@pytest.fixture
def new_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path, subject_images: Path
) -> Callable[..., SageMakerJob]:
    """new_job(hyperparameters, images=True, model=True, name=...) -> a job ready to run."""
    counter = iter(range(1000))

    def make(
        hyperparameters: dict[str, str] | None = None,
        *,
        images: bool = True,
        model: bool = True,
        defaults: bool = True,
    ) -> SageMakerJob:
        job = SageMakerJob(tmp_path / f"job{next(counter)}", monkeypatch)
        if images:
            job.add_channel("images", subject_images)
        if model:
            job.add_channel("model", tiny_model)
        job.write_hyperparameters(hyperparameters or {}, defaults=defaults)
        return job

    return make


@pytest.fixture
def cpu_bnb(monkeypatch: pytest.MonkeyPatch) -> None:
    """diffusers refuses bitsandbytes loading without a GPU, though bnb runs NF4 on the CPU: lifted."""
    from diffusers.quantizers.bitsandbytes.bnb_quantizer import (
        BnB4BitDiffusersQuantizer,
        BnB8BitDiffusersQuantizer,
    )

    for quantizer in (BnB4BitDiffusersQuantizer, BnB8BitDiffusersQuantizer):
        monkeypatch.setattr(quantizer, "validate_environment", lambda self, *a, **k: None)
