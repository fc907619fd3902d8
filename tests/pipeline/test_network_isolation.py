"""Network-isolated training through the synthesized state machine with the real handlers
(context training_network_isolation): an S3 base model's run trains isolated, SageMaker's model.tar.gz
carries the model, UnpackModel puts it in the model prefix and the notification names it complete."""

import io
import json
import tarfile

import pytest

from dreambooth_trainer.hyperparameters import parse_hyperparameters
from lambdas.jobs import s3_layout
from local_aws import TrainingOutcome

from .support import (
    Subscriber,
    fake_trainer,
    photos,
    requests_for,
    start_emulator,
    states_entered,
    upload_all,
)

FILES = {
    "pytorch_lora_weights.safetensors": b"\1" * 4000,
    "samples/sample-00.png": b"png",
    "dreambooth.json": json.dumps({"kind": "lora", "family": "sd", "steps": 5}).encode(),
}


@pytest.fixture(scope="module")
def aws():
    emulator = start_emulator(training_network_isolation=True)
    s3 = emulator.boto3_client("s3")
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
    s3.put_object(Bucket=emulator.bucket, Key="base-models/tiny-sd/model_index.json", Body=json.dumps(index))
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def subscriber(aws):
    return Subscriber(aws)


def isolated_trainer(aws, files: dict[str, bytes]):
    """What an isolated job leaves: no upload of its own; /opt/ml/model (files and the trainer's manifest)
    as SageMaker's model.tar.gz under the request's S3OutputPath."""

    def run(job):
        manifest = {
            "manifest_version": 1,
            "kind": "lora",
            "family": "sd",
            "lora_weight_name": "pytorch_lora_weights.safetensors",
            "s3_uri": job.model_output_s3_uri,
            "files": [{"key": k, "size": len(v)} for k, v in FILES.items()],  # what the trainer wrote
        }
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name, data in {**files, "manifest.json": json.dumps(manifest).encode()}.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        bucket, prefix = s3_layout.split_s3_uri(job.output_s3_path.rstrip("/") + "/")
        key = f"{prefix}{job.name}/output/model.tar.gz"
        aws.boto3_client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
        return TrainingOutcome("Completed", training_seconds=300, billable_seconds=100)

    return run


def run_job(aws, job: str, base_model: str, runner) -> dict:
    """Upload a LoRA job on ``base_model``, train it with ``runner``; its finished execution."""
    spec = {"base_model": base_model, "class_word": "dog", "training_method": "lora"}
    aws.set_training_runner(runner)
    try:
        upload_all(aws, job, {**photos(3), "job.json": json.dumps(spec).encode()})
        (execution,) = aws.wait_for_runs(job)
    finally:
        aws.set_training_runner(None)
    return execution


def s3_base(aws) -> str:
    return f"s3://{aws.bucket}/base-models/tiny-sd/"


def test_an_s3_base_model_trains_isolated_and_its_model_is_unpacked(aws, subscriber):
    execution = run_job(aws, "quiet dog", s3_base(aws), isolated_trainer(aws, FILES))
    assert execution["status"] == "SUCCEEDED"
    assert "UnpackModel" in states_entered(aws, execution["executionArn"])
    (request,) = requests_for(aws, "quiet dog")
    assert request.request["EnableNetworkIsolation"] is True
    assert parse_hyperparameters(request.hyperparameters).model_hand_over == "sagemaker"

    (message,) = subscriber.messages("quiet dog")
    model = message["payload"]["model"]
    assert model["complete"] is True
    bucket, prefix = s3_layout.split_s3_uri(request.model_output_s3_uri)
    s3 = aws.boto3_client("s3")
    for name, data in FILES.items():
        assert s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read() == data
    s3.head_object(Bucket=bucket, Key=prefix + s3_layout.SUCCESS_MARKER_FILENAME)


def test_a_tarball_missing_a_listed_file_fails_the_run_saying_so(aws, subscriber):
    partial = {k: v for k, v in FILES.items() if not k.startswith("samples/")}
    execution = run_job(aws, "torn dog", s3_base(aws), isolated_trainer(aws, partial))
    assert execution["status"] == "FAILED"
    (message,) = subscriber.messages("torn dog")
    failure = message["payload"]["failure"]
    assert "unpacking the model" in failure["reason"] and "samples/sample-00.png" in failure["reason"]
    assert "Traceback" not in json.dumps(message["payload"])


def test_a_hub_base_model_needs_the_network_and_trains_as_before(aws, subscriber):
    execution = run_job(aws, "open dog", "sd15", fake_trainer(aws, lora=True))
    assert execution["status"] == "SUCCEEDED"
    assert "UnpackModel" not in states_entered(aws, execution["executionArn"])
    (request,) = requests_for(aws, "open dog")
    assert request.request["EnableNetworkIsolation"] is False
    assert parse_hyperparameters(request.hyperparameters).model_hand_over == "upload"
