"""The real trainer through the SageMaker contract on each tiny family: a few LoRA steps at 64 px, then the
exported files loaded back into the family's diffusers pipeline reproduce the job's own sample image."""

from __future__ import annotations

import json

import boto3
import numpy as np
import pytest
import torch
from moto import mock_aws
from PIL import Image

from dreambooth_trainer.families import get_family
from dreambooth_trainer.model_loading import BaseModelSource

SEED = 42  # the trainer's default seed: sample i uses seed + i
HYPERPARAMETERS = {
    "training_method": "lora",
    "resolution": "64",
    "max_train_steps": "3",
    "learning_rate": "5e-2",
    "lora_rank": "4",
    "lora_alpha": "8",
    "output_dtype": "fp32",
    "model_name": "subject",
}


@pytest.mark.parametrize("name", ["sdxl", "flux", "zimage"])
def test_a_lora_job_trains_exports_and_reloads(new_job, tiny_family_model, name: str) -> None:
    job = new_job(HYPERPARAMETERS, model=False)
    job.add_channel("model", tiny_family_model(name))
    assert job.run() == 0, job.failure
    record = json.loads((job.model_dir / "dreambooth.json").read_text())
    assert record["family"] == name and record["steps"] == 3
    assert record["lora_files"] == ["pytorch_lora_weights.safetensors", "subject-lora.safetensors"]
    sample = np.asarray(Image.open(job.model_dir / record["samples"][0]), dtype=np.int16)

    family = get_family(name)
    base = family.load(BaseModelSource("folder", str(tiny_family_model(name))))
    base_render = np.asarray(
        family.render(base, "a photo of sks dog", steps=2, guidance=7.5, size=64, seed=SEED)
    )
    assert np.abs(base_render.astype(np.int16) - sample).max() > 8  # the adapter changed the image
    for weight_name in record["lora_files"]:
        model = family.load(BaseModelSource("folder", str(tiny_family_model(name))))
        model.pipeline.load_lora_weights(str(job.model_dir), weight_name=weight_name)
        image = family.render(model, "a photo of sks dog", steps=2, guidance=7.5, size=64, seed=SEED)
        assert np.abs(np.asarray(image, dtype=np.int16) - sample).max() <= 1, weight_name


def test_full_fine_tuning_of_a_family_base_is_refused_by_name(new_job, tiny_family_model) -> None:
    job = new_job({"training_method": "full", "resolution": "64"}, model=False)
    job.add_channel("model", tiny_family_model("flux"))
    assert job.run() != 0
    assert "training_method" in job.failure and "LoRA adapters only" in job.failure
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("name", ["sdxl", "flux"])
def test_prior_preservation_generates_class_images_with_the_family_pipeline(
    new_job, tiny_family_model, name: str
) -> None:
    prior = {"with_prior_preservation": "true", "class_prompt": "a photo of a dog", "num_class_images": "2"}
    job = new_job({**HYPERPARAMETERS, **prior, "class_inference_steps": "2", "num_samples": "0"}, model=False)
    job.add_channel("model", tiny_family_model(name))
    assert job.run() == 0, job.failure
    generated = sorted((job.checkpoints_dir / "class_images").glob("class-*.png"))
    assert len(generated) == 2 and Image.open(generated[0]).size == (64, 64)
    record = json.loads((job.model_dir / "dreambooth.json").read_text())
    assert record["class_images"] == 2 and record["class_prompt"] == "a photo of a dog"


@pytest.mark.parametrize(
    ("base", "method", "lora_file_count"), [("sd", "lora", None), ("sd", "full", 0), ("flux", "lora", 2)]
)
def test_record_and_manifest_name_the_family_and_every_lora_file(
    new_job, tiny_family_model, aws_env, base: str, method: str, lora_file_count: int | None
) -> None:
    settings = {
        **HYPERPARAMETERS,
        "training_method": method,
        "max_train_steps": "1",
        "num_samples": "0",
        "model_output_s3_uri": "s3://models/sks/",
    }
    if base == "sd":
        settings["resolution"] = "32"
        job = new_job(settings)
    else:
        job = new_job(settings, model=False)
        job.add_channel("model", tiny_family_model(base))
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="models")
        assert job.run() == 0, job.failure
        manifest = json.loads(s3.get_object(Bucket="models", Key="sks/manifest.json")["Body"].read())
        record = json.loads(s3.get_object(Bucket="models", Key="sks/dreambooth.json")["Body"].read())
    uploaded = {entry["key"] for entry in manifest["files"]}
    assert record["family"] == manifest["family"] == base and record["kind"] == manifest["kind"] == method
    assert record["lora_files"] == manifest["lora_files"]
    if lora_file_count is not None:
        assert len(record["lora_files"]) == lora_file_count
    if method == "lora":  # SD: the diffusers file, and the kohya file once export writes one for SD
        assert record["lora_files"][0] == record["lora_weight_name"] == "pytorch_lora_weights.safetensors"
    else:
        assert record["lora_weight_name"] is None and record["single_file_name"] == "subject.safetensors"
    assert set(record["lora_files"]) <= uploaded
