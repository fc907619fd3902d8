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
from dreambooth_trainer.errors import ModelUploadError
from dreambooth_trainer.offline_fixtures import write_sample_subject_images
from dreambooth_trainer.s3_upload import MANIFEST_NAME, parse_s3_uri, upload_class_images, upload_model_folder


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
        calls: list[tuple[str, str]] = []
        client.meta.events.register(
            "before-parameter-build.s3",
            lambda model, params, **_: calls.append((model.name, params.get("Key", ""))),
        )
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
        "jobs/sks/_SUCCESS": 0,
    }
    # The transfer manager at work; a stale marker removed first; the manifest, then _SUCCESS, last.
    names = [name for name, _ in upload_calls]
    assert "CreateMultipartUpload" in names and "CompleteMultipartUpload" in names
    assert upload_calls[0] == ("DeleteObject", "jobs/sks/_SUCCESS")
    assert upload_calls[-2:] == [("PutObject", "jobs/sks/manifest.json"), ("PutObject", "jobs/sks/_SUCCESS")]
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


# --- retries and failures -----------------------------------------------------------------------------------


def _model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "weights.safetensors").write_bytes(b"\1" * 1000)
    (folder / "model_index.json").write_text("{}")
    return folder


class FlakyTransfers:
    """The real (moto) client, whose transfer manager fails with `code` the first `failures` times."""

    def __init__(self, client, failures: int, code: str = "SlowDown") -> None:
        self._client, self.failures, self.code, self.calls = client, failures, code, 0

    def upload_file(self, filename, bucket, key, **kwargs):
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import ClientError

        self.calls += 1
        if self.calls <= self.failures:
            error = ClientError(
                {"Error": {"Code": self.code, "Message": "Please reduce your request rate."}}, "UploadPart"
            )
            try:
                raise error
            except ClientError as exc:  # how boto3's transfer manager reports it
                raise S3UploadFailedError(f"Failed to upload {filename} to {bucket}/{key}: {exc}")  # noqa: B904
        return self._client.upload_file(filename, bucket, key, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_):
        yield self.body


def test_the_client_retries_each_request_in_standard_mode(tmp_path: Path, aws_env) -> None:
    from dreambooth_trainer.s3_upload import CLIENT_MAX_ATTEMPTS, s3_client

    with mock_aws():
        client = s3_client()
        assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": CLIENT_MAX_ATTEMPTS}
        client.create_bucket(Bucket="models")
        sends: list[int] = []

        def unavailable_twice(request, **_):
            from botocore.awsrequest import AWSResponse

            sends.append(1)
            if len(sends) <= 2:
                body = b"<Error><Code>ServiceUnavailable</Code><Message>try again</Message></Error>"
                return AWSResponse(request.url, 503, {}, _Raw(body))
            return None

        client.meta.events.register("before-send.s3.PutObject", unavailable_twice)
        client.put_object(Bucket="models", Key="k", Body=b"x")
        assert client.get_object(Bucket="models", Key="k")["Body"].read() == b"x"
    assert len(sends) == 3  # two 503s, retried by botocore, then the real request


def test_a_transient_transfer_failure_is_retried_with_backoff(tmp_path: Path, aws_env, caplog) -> None:
    folder = _model_folder(tmp_path)
    delays: list[float] = []
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="models")
        flaky = FlakyTransfers(client, failures=2)
        with caplog.at_level(logging.WARNING):
            manifest = upload_model_folder(folder, "s3://models/m/", {}, client=flaky, sleep=delays.append)
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="models")["Contents"])
    assert delays == [2.0, 4.0]  # exponential backoff
    assert "transient S3 error SlowDown" in caplog.text
    assert keys == ["m/_SUCCESS", "m/manifest.json", "m/model_index.json", "m/unet/weights.safetensors"]
    assert len(manifest["files"]) == 2


def test_transient_failures_that_do_not_stop_fail_with_the_error_named(tmp_path: Path, aws_env) -> None:
    folder = _model_folder(tmp_path)
    delays: list[float] = []
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="models")
        with pytest.raises(ModelUploadError, match="failed after 4 attempts with S3 error SlowDown"):
            upload_model_folder(
                folder, "s3://models/m/", {}, client=FlakyTransfers(client, 99), sleep=delays.append
            )
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="models").get("Contents", [])]
    assert delays == [2.0, 4.0, 8.0]
    assert "m/_SUCCESS" not in keys and "m/manifest.json" not in keys


def test_a_permanent_failure_is_not_retried(tmp_path: Path, aws_env) -> None:
    delays: list[float] = []
    with mock_aws():
        client = boto3.client("s3")
        with pytest.raises(ModelUploadError, match="S3 error NoSuchBucket") as failure:
            upload_model_folder(
                _model_folder(tmp_path), "s3://missing/m/", {}, client=client, sleep=delays.append
            )
    assert delays == [] and "after" not in str(failure.value)


def test_a_stale_success_marker_is_removed_before_uploading_again(tmp_path: Path, aws_env) -> None:
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="models")
        client.put_object(Bucket="models", Key="m/_SUCCESS", Body=b"")
        with pytest.raises(ModelUploadError):
            upload_model_folder(
                _model_folder(tmp_path),
                "s3://models/m/",
                {},
                client=FlakyTransfers(client, 99),
                sleep=lambda _: None,
            )
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="models").get("Contents", [])]
    assert "m/_SUCCESS" not in keys  # a consumer no longer sees the half-replaced model as complete


def test_a_job_whose_upload_fails_says_so_in_the_failure_file(new_job, aws_env) -> None:
    job = new_job(
        {"training_method": "lora", "num_samples": "0", "model_output_s3_uri": "s3://no-such-bucket/m/"}
    )
    with mock_aws():
        assert job.run() == 1
    assert job.failure.startswith("could not upload the model: ")
    assert "S3 error NoSuchBucket" in job.failure


def test_without_network_the_model_stays_with_its_manifest_and_nothing_is_uploaded(
    new_job, monkeypatch
) -> None:
    """model_hand_over=sagemaker (network isolation): no S3 client is ever made, generated class images are
    not shared, and /opt/ml/model holds every file plus a manifest.json that lists them for the pipeline."""
    from dreambooth_trainer import s3_upload

    def no_network():
        raise AssertionError("an isolated job must not call S3")

    monkeypatch.setattr(s3_upload, "s3_client", no_network)
    job = new_job(
        {
            "training_method": "lora",
            "with_prior_preservation": "true",
            "class_prompt": "a photo of a dog",
            "num_class_images": "1",
            "class_inference_steps": "1",
            "class_images_output_s3_uri": "s3://data/class-images/0123456789abcdef/",
            "model_output_s3_uri": "s3://data/models/rex/r1/",
            "model_hand_over": "sagemaker",
        }
    )
    assert job.run() == 0, job.failure
    manifest = json.loads((job.model_dir / "manifest.json").read_text())
    on_disk = {
        p.relative_to(job.model_dir).as_posix(): p.stat().st_size
        for p in job.model_dir.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert {f["key"]: f["size"] for f in manifest["files"]} == on_disk
    assert manifest["s3_uri"] == "s3://data/models/rex/r1/" and manifest["kind"] == "lora"
    assert "pytorch_lora_weights.safetensors" in on_disk and "dreambooth.json" in on_disk
