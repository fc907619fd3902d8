"""Helpers for the pipeline tests: the synthesized stack in the emulator, photos, notifications.

Every test uses its own job name, so tests in one module share one emulator without seeing each other.
"""

from __future__ import annotations

import io
import json
import time
from collections import defaultdict

from PIL import Image

from lambdas.jobs import s3_layout
from local_aws import FAST_CONTEXT, LocalAws, TrainingJobRequest, TrainingOutcome, synthesize


def start_emulator(**context) -> LocalAws:
    """The emulator over the fast-settings synth (shared with other modules through synthesize's cache)."""
    return LocalAws(synthesize({**FAST_CONTEXT, **context})).start()


def jpeg(seed: int = 0, size: tuple[int, int] = (96, 80)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color=(seed * 37 % 256, seed * 91 % 256, 128)).save(buffer, "JPEG")
    return buffer.getvalue()


def upload(aws: LocalAws, job: str, name: str, body: bytes) -> str:
    key = s3_layout.upload_prefix(job) + name
    aws.boto3_client("s3").put_object(Bucket=aws.bucket, Key=key, Body=body)
    return key


def upload_all(aws: LocalAws, job: str, files: dict[str, bytes]) -> list[str]:
    """Upload files whose events then arrive together, as from one `aws s3 cp --recursive`.

    Without holding the events, a loaded machine could let the 1 s quiet period pass between two
    uploads and rightly split them into two runs.
    """
    with aws.held_upload_events():
        return [upload(aws, job, name, body) for name, body in files.items()]


def photos(count: int = 3, start: int = 0) -> dict[str, bytes]:
    return {f"photo {i}.jpg": jpeg(i) for i in range(start, start + count)}


def upload_photos(aws: LocalAws, job: str, count: int = 3, start: int = 0) -> list[str]:
    return upload_all(aws, job, photos(count, start))


def upload_one_by_one(aws: LocalAws, job: str, files: dict[str, bytes]) -> list[str]:
    """Upload files each with its own event as it happens (for tests that hold or race events)."""
    return [upload(aws, job, name, body) for name, body in files.items()]


def fake_trainer(aws: LocalAws, *, lora: bool = False):
    """A runner that does what the trainer does at the end: model files, manifest.json, _SUCCESS last."""

    def run(job: TrainingJobRequest) -> TrainingOutcome:
        bucket, prefix = s3_layout.split_s3_uri(job.model_output_s3_uri)
        names = (
            ["pytorch_lora_weights.safetensors"]
            if lora
            else ["model_index.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json"]
        )
        names += ["samples/0.png", "dreambooth.json"]
        s3 = aws.boto3_client("s3")
        for name in names:
            s3.put_object(Bucket=bucket, Key=prefix + name, Body=b"weights")
        manifest = {
            "manifest_version": 1,
            "kind": "lora" if lora else "full",
            "prompt": job.hyperparameters["instance_prompt"],
            "lora_weight_name": "pytorch_lora_weights.safetensors" if lora else None,
            "s3_uri": job.model_output_s3_uri,
            "files": [{"key": name, "size": 7} for name in names],
            "total_bytes": 7 * len(names),
        }
        s3.put_object(
            Bucket=bucket, Key=prefix + s3_layout.MANIFEST_FILENAME, Body=json.dumps(manifest).encode()
        )
        s3.put_object(Bucket=bucket, Key=prefix + s3_layout.SUCCESS_MARKER_FILENAME, Body=b"")
        return TrainingOutcome("Completed", training_seconds=1200, billable_seconds=400)

    return run


class Subscriber:
    """An SQS queue subscribed to the topic: what a machine subscriber receives, sorted by job."""

    def __init__(self, aws: LocalAws) -> None:
        self.aws = aws
        self.url = aws.subscribe_queue()
        self.by_job: dict[str, list[dict]] = defaultdict(list)

    def messages(self, job: str, count: int = 1, timeout: float = 30) -> list[dict]:
        """The SNS envelopes for ``job`` (their Message parsed into ``payload``), once ``count`` arrived."""
        deadline = time.monotonic() + timeout
        sqs = self.aws.boto3_client("sqs")
        while len(self.by_job[job]) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.by_job[job])} of {count} notification(s) for {job!r}")
            for message in sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", []):
                envelope = json.loads(message["Body"])
                envelope["payload"] = json.loads(envelope["Message"])
                self.by_job[envelope["payload"]["job_name"]].append(envelope)
                sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
            time.sleep(0.05)
        return self.by_job[job][:count]


def run_record(aws: LocalAws, job: str, run_id: str) -> dict:
    from lambdas.pipeline.runs_table import JobsTable

    return JobsTable(aws.table_name, aws.boto3_client("dynamodb")).get_run(job, run_id)


def requests_for(aws: LocalAws, job: str) -> list[TrainingJobRequest]:
    """The training jobs of ``job``: their images channel is one of its runs' frozen inputs."""
    prefix = s3_layout.s3_uri(aws.bucket, f"{s3_layout.TRAINING_INPUT_ROOT}{job}/")
    return [r for r in aws.training_job_requests() if r.channels.get("images", "").startswith(prefix)]


def training_input(aws: LocalAws, job: TrainingJobRequest) -> dict[str, bytes]:
    """What a training job's images channel holds: relative name -> bytes (what SageMaker would copy)."""
    bucket, prefix = s3_layout.split_s3_uri(job.channels["images"])
    s3 = aws.boto3_client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {key.removeprefix(prefix): s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def states_entered(aws: LocalAws, execution_arn: str) -> list[str]:
    return [
        e["stateEnteredEventDetails"]["name"]
        for e in aws.execution_history(execution_arn)
        if "stateEnteredEventDetails" in e
    ]
