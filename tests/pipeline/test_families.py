"""Model families through the synthesized state machine with the real handlers: the base model's family
chooses the instance, the training method, the smallest photo side and the volume; the notification names
the family and each LoRA file."""

import json

import pytest

from dreambooth_trainer.hyperparameters import parse_hyperparameters
from lambdas.jobs import s3_layout
from local_aws import TrainingOutcome

from .support import Subscriber, jpeg, requests_for, start_emulator, upload_all


@pytest.fixture(scope="module")
def aws():
    emulator = start_emulator()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def subscriber(aws):
    return Subscriber(aws)


def family_trainer(aws, family: str):
    """What a family run leaves: two LoRA files, samples, dreambooth.json (family, lora_files), manifest."""

    def run(job):
        bucket, prefix = s3_layout.split_s3_uri(job.model_output_s3_uri)
        lora_files = ["pytorch_lora_weights.safetensors", "model-lora.safetensors"]
        record = {"kind": "lora", "family": family, "lora_files": lora_files, "steps": 500}
        files = {name: b"weights" for name in lora_files}
        files["samples/sample-00.png"] = b"png"
        files["dreambooth.json"] = json.dumps(record).encode()
        s3 = aws.boto3_client("s3")
        for name, body in files.items():
            s3.put_object(Bucket=bucket, Key=prefix + name, Body=body)
        manifest = {
            "manifest_version": 1,
            "kind": "lora",
            "lora_weight_name": lora_files[0],
            "files": [{"key": name, "size": len(body)} for name, body in files.items()],
        }
        s3.put_object(
            Bucket=bucket, Key=prefix + s3_layout.MANIFEST_FILENAME, Body=json.dumps(manifest).encode()
        )
        s3.put_object(Bucket=bucket, Key=prefix + s3_layout.SUCCESS_MARKER_FILENAME, Body=b"")
        return TrainingOutcome("Completed", training_seconds=600, billable_seconds=200)

    return run


@pytest.fixture
def sdxl_trainer(aws):
    aws.set_training_runner(family_trainer(aws, "sdxl"))
    yield
    aws.set_training_runner(None)


def test_an_sdxl_job_trains_lora_on_its_familys_instance_and_skips_photos_under_512_px(
    aws, subscriber, sdxl_trainer
):
    files = {f"photo {i}.jpg": jpeg(i, size=(640, 560)) for i in range(3)}
    files["small.jpg"] = jpeg(9, size=(400, 400))
    files["job.json"] = json.dumps({"base_model": "sdxl", "class_word": "dog"}).encode()
    upload_all(aws, "xl dog", files)
    (execution,) = aws.wait_for_runs("xl dog")
    assert execution["status"] == "SUCCEEDED"

    (request,) = requests_for(aws, "xl dog")
    resources = request.request["ResourceConfig"]
    assert (resources["InstanceType"], resources["VolumeSizeInGB"]) == ("ml.g4dn.xlarge", 50)
    sent = request.hyperparameters
    hp = parse_hyperparameters(sent)
    assert hp.pretrained_model_name_or_path == "stabilityai/stable-diffusion-xl-base-1.0"
    assert hp.training_method == "lora"
    # The trainer fills SDXL's own steps and resolution: the service sends no SD numbers over them.
    assert "max_train_steps" not in sent and "resolution" not in sent

    (message,) = subscriber.messages("xl dog")
    payload = message["payload"]
    assert payload["training"]["images"] == 3
    assert payload["training"]["max_train_steps"] == 500  # the trainer's SDXL default, from its record
    assert payload["training"]["skipped"] == [
        {
            "file": "small.jpg",
            "reason": "400x400 px is too small: both sides need at least 512 px for sdxl base models, "
            "which train at 1024 px",
        }
    ]
    prefix = payload["model"]["s3_prefix"]
    assert payload["model"]["family"] == "sdxl"
    assert payload["model"]["lora_files"] == [
        prefix + "pytorch_lora_weights.safetensors",
        prefix + "model-lora.safetensors",
    ]
    assert payload["model"]["lora"] == prefix + "pytorch_lora_weights.safetensors"
    assert payload["model"]["checkpoint"] is None  # the ComfyUI/WebUI LoRA is no single-file checkpoint


def test_flux1_dev_on_a_t4_is_refused_at_validation_before_any_training_job(aws, subscriber, no_runner):
    files = {f"photo {i}.jpg": jpeg(i, size=(640, 560)) for i in range(3)}
    files["job.json"] = json.dumps({"base_model": "flux1-dev", "instance_type": "ml.g4dn.xlarge"}).encode()
    upload_all(aws, "flux on t4", files)
    (execution,) = aws.wait_for_runs("flux on t4")
    assert not requests_for(aws, "flux on t4")
    (message,) = subscriber.messages("flux on t4")
    failure = message["payload"]["failure"]
    assert failure["kind"] == "invalid_batch"
    text = json.dumps(failure)
    assert "flux (FLUX.1) trains in bf16" in text and "ml.g6.xlarge" in text


def test_a_subject_type_job_leaves_steps_and_prior_preservation_to_the_trainer(aws, subscriber, sdxl_trainer):
    files = {f"photo {i}.jpg": jpeg(i, size=(96, 80)) for i in range(3)}
    files["job.json"] = json.dumps({"subject_type": "object", "class_word": "toy"}).encode()
    upload_all(aws, "my toy", files)
    (execution,) = aws.wait_for_runs("my toy")
    assert execution["status"] == "SUCCEEDED"
    (request,) = requests_for(aws, "my toy")
    sent = request.hyperparameters
    assert parse_hyperparameters(sent).subject_type == "object"
    assert not {"max_train_steps", "with_prior_preservation", "class_prompt"} & set(sent)
    assert request.request["ResourceConfig"]["VolumeSizeInGB"] == 50  # an SD 1.5 job
