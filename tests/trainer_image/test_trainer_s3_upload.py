"""The model upload to model_output_s3_uri, against moto: every file, then the manifest, and /opt/ml/model
left almost empty so SageMaker does not tar gigabytes."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import boto3
import pytest
import torch
from diffusers import StableDiffusionPipeline
from moto import mock_aws
from moto.server import ThreadedMotoServer

from dreambooth_trainer import job as job_module
from dreambooth_trainer.offline_fixtures import write_sample_subject_images
from dreambooth_trainer.s3_upload import MANIFEST_NAME, parse_s3_uri, upload_class_images, upload_model_folder


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
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


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/models/sks/", ("bucket", "models/sks/")),
        ("s3://bucket/models/sks", ("bucket", "models/sks/")),
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
    ],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_s3_uri(uri) == expected


def test_upload_sends_every_file_then_the_manifest(tmp_path: Path, aws_env) -> None:
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "weights.safetensors").write_bytes(b"\1" * (6 * 2**20))  # over the 5 MB part size
    (tmp_path / "model_index.json").write_text("{}")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="models")
        calls: list[str] = []
        client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
        manifest = upload_model_folder(
            tmp_path,
            "s3://models/jobs/sks",
            {"kind": "full", "prompt": "a sks dog"},
            client=client,
            multipart_mb=5,
        )
        upload_calls = list(calls)
        keys = {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket="models")["Contents"]}
        stored = json.loads(client.get_object(Bucket="models", Key="jobs/sks/manifest.json")["Body"].read())
    assert keys == {
        "jobs/sks/model_index.json": 2,
        "jobs/sks/unet/weights.safetensors": 6 * 2**20,
        "jobs/sks/manifest.json": keys["jobs/sks/manifest.json"],
    }
    # The transfer manager at work, and the manifest written last: its presence means "complete".
    assert "CreateMultipartUpload" in upload_calls and "CompleteMultipartUpload" in upload_calls
    assert upload_calls[-1] == "PutObject"
    assert stored == manifest
    assert stored["kind"] == "full" and stored["prompt"] == "a sks dog"
    assert stored["files"] == [
        {"key": "model_index.json", "size": 2},
        {"key": "unet/weights.safetensors", "size": 6 * 2**20},
    ]
    assert stored["s3_uri"] == "s3://models/jobs/sks/"


def test_training_job_uploads_through_aws_endpoint_url(
    new_job, tiny_model, tmp_path, aws_env, monkeypatch
) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv(
            "AWS_ENDPOINT_URL", f"http://{host}:{port}"
        )  # boto3 reads it; the trainer passes nothing
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="dreambooth-models")
        job = new_job(
            {
                "training_method": "lora",
                "manul_upload_model_path": "s3://dreambooth-models/users/42/sks/",  # the Quick Kit's spelling
                "model_name": "sks-dog",
            }
        )
        assert job.run() == 0
        manifest = json.loads(
            s3.get_object(Bucket="dreambooth-models", Key="users/42/sks/manifest.json")["Body"].read()
        )
        lora_dir = tmp_path / "downloaded"
        lora_dir.mkdir()
        for entry in manifest["files"]:
            (lora_dir / entry["key"]).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(
                "dreambooth-models", f"users/42/sks/{entry['key']}", str(lora_dir / entry["key"])
            )
            assert (lora_dir / entry["key"]).stat().st_size == entry["size"]
    finally:
        server.stop()
    assert manifest["kind"] == "lora" and manifest["prompt"] == "a photo of sks dog"
    assert manifest["model_name"] == "sks-dog" and manifest["job_name"] == "test-job"
    assert {entry["key"] for entry in manifest["files"]} == {
        "pytorch_lora_weights.safetensors",
        "sks-dog-lora.safetensors",
        "dreambooth.json",
        "samples/sample-0.png",
    }
    assert manifest["samples"] == ["samples/sample-0.png"] and manifest["single_file_name"] is None
    assert manifest["kohya_lora_name"] == "sks-dog-lora.safetensors"
    # /opt/ml/model keeps only the small pointers, so model.tar.gz stays tiny.
    assert sorted(p.name for p in job.model_dir.iterdir()) == ["dreambooth.json", MANIFEST_NAME]
    assert json.loads((job.model_dir / MANIFEST_NAME).read_text()) == manifest

    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_model, local_files_only=True, torch_dtype=torch.float32
    )
    pipe.load_lora_weights(lora_dir)  # what came back from S3 is a loadable LoRA


def test_class_images_are_shared_under_job_unique_content_named_keys(tmp_path: Path, aws_env, caplog) -> None:
    files = []
    for i in range(2):
        files.append(tmp_path / f"class-{i:06d}.png")
        files[-1].write_bytes(f"png {i}".encode())
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="data")
        keys = upload_class_images(files, "s3://data/class-images/abc/", "job-a", client=client)
        again = upload_class_images(files, "s3://data/class-images/abc", "job-a", client=client)
        other = upload_class_images(files, "s3://data/class-images/abc/", "job-b", client=client)
        stored = sorted(o["Key"] for o in client.list_objects_v2(Bucket="data")["Contents"])
        content_type = client.head_object(Bucket="data", Key=keys[0])["ContentType"]
        with caplog.at_level(logging.WARNING):
            missing = upload_class_images(files, "s3://no-such-bucket/x/", "job-a", client=client)
    digests = [hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files]
    assert keys == again == [f"class-images/abc/job-a-{d}.png" for d in digests]  # a retry overwrites itself
    assert other == [f"class-images/abc/job-b-{d}.png" for d in digests]  # never another job's files
    assert stored == sorted(keys + other) and content_type == "image/png"
    assert missing == [] and "could not share class images to s3://no-such-bucket/x/" in caplog.text


def test_generated_class_images_are_shared_before_training(new_job, aws_env, monkeypatch) -> None:
    """Only the newly generated image goes up, and it is there even though training then fails."""

    def failing_train(*args, **kwargs):
        raise RuntimeError("training broke after generation")

    monkeypatch.setattr(job_module, "train", failing_train)
    job = new_job(
        {
            "with_prior_preservation": "true",
            "class_prompt": "a photo of a dog",
            "num_class_images": "3",
            "class_inference_steps": "2",
            "class_images_output_s3_uri": "s3://data/class-images/0123456789abcdef/",
            "training_method": "lora",
        }
    )
    write_sample_subject_images(job.channel("class_images"), n=2, size=40, seed=7)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="data")
        assert job.run() != 0
        stored = [o["Key"] for o in s3.list_objects_v2(Bucket="data").get("Contents", [])]
    assert "training broke after generation" in (job.failure or "")
    (generated,) = sorted((job.checkpoints_dir / "class_images").glob("class-*.png"))
    digest = hashlib.sha256(generated.read_bytes()).hexdigest()[:16]
    assert stored == [f"class-images/0123456789abcdef/test-job-{digest}.png"]
