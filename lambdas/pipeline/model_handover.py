"""Runs trained with network isolation: the model comes back inside SageMaker's model.tar.gz.

The isolated trainer has no network and no credentials, so it leaves the model and its manifest.json in
/opt/ml/model (model_hand_over=sagemaker) and SageMaker uploads that folder as
``<S3OutputPath>/<training job>/output/model.tar.gz``. This unpacks it to the run's model prefix in the
order the trainer keeps when it uploads itself: every file (streamed through boto3's transfer manager,
never the whole archive in memory or on disk), then manifest.json once every file it lists has arrived
with its size, then ``_SUCCESS`` last, the mark that the model is complete.
"""

from __future__ import annotations

import json
import tarfile
from typing import Any

from boto3.s3.transfer import TransferConfig

from lambdas.jobs import s3_layout
from lambdas.jobs.naming import training_job_name

PART_BYTES = 64 * 2**20  # UNet weights (1.7 GB in fp16) go up as ~27 parts
TRANSFER = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=4)


class ModelHandOverError(RuntimeError):
    """The archive cannot become a complete model folder; the message says why."""


def tarball_key(job_name: str, run_id: str) -> str:
    """The run's model.tar.gz (its training job is named from the job and the run)."""
    return s3_layout.sagemaker_model_tarball_key(job_name, run_id, training_job_name(job_name, run_id))


def member_key(name: str) -> str:
    """A member's path inside the model folder; anything that would leave it is refused."""
    cleaned = name.removeprefix("./")
    parts = cleaned.split("/")
    if not cleaned or cleaned.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ModelHandOverError(f"model.tar.gz holds an entry outside the model folder: {name!r}")
    return cleaned


def unpack_model(s3: Any, bucket: str, job_name: str, run_id: str) -> dict[str, int]:
    """model.tar.gz -> models/<job>/<run>/ (files, manifest.json, _SUCCESS); returns the counts."""
    key = tarball_key(job_name, run_id)
    prefix = s3_layout.model_prefix(job_name, run_id)
    s3.delete_object(Bucket=bucket, Key=prefix + s3_layout.SUCCESS_MARKER_FILENAME)  # a retried unpack
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except s3.exceptions.NoSuchKey:
        raise ModelHandOverError(f"the training job left no model: s3://{bucket}/{key} is missing") from None
    manifest: dict[str, Any] | None = None
    stored: dict[str, int] = {}
    with tarfile.open(fileobj=body, mode="r|gz") as archive:
        for member in archive:
            if member.isdir():
                continue
            name = member_key(member.name)
            if not member.isfile():
                raise ModelHandOverError(f"model.tar.gz holds {name!r}, which is not a regular file")
            data = archive.extractfile(member)
            if name == s3_layout.MANIFEST_FILENAME:
                manifest = json.loads(data.read())
                continue
            s3.upload_fileobj(_ReadOnly(data), bucket, prefix + name, Config=TRANSFER)
            stored[name] = member.size
    if manifest is None:
        raise ModelHandOverError(f"s3://{bucket}/{key} has no {s3_layout.MANIFEST_FILENAME}")
    missing = [f["key"] for f in manifest.get("files", []) if stored.get(f["key"]) != f["size"]]
    if missing:
        raise ModelHandOverError(f"model.tar.gz lacks file(s) its manifest lists: {', '.join(missing[:5])}")
    s3.put_object(
        Bucket=bucket,
        Key=prefix + s3_layout.MANIFEST_FILENAME,
        Body=json.dumps(manifest, indent=2).encode(),
        ContentType="application/json",
    )
    s3.put_object(Bucket=bucket, Key=prefix + s3_layout.SUCCESS_MARKER_FILENAME, Body=b"")
    return {"files": len(stored), "bytes": sum(stored.values())}


class _ReadOnly:
    """A streamed archive member as a plain reader: tarfile's stream-mode file objects claim seekable() and
    then fail it, and boto3 asks before it uploads."""

    def __init__(self, source: Any) -> None:
        self.read = source.read
