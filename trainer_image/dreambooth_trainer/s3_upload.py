"""Upload the finished model folder to S3 ourselves, then write manifest.json last.

Why not let SageMaker do it: it tars /opt/ml/model into one model.tar.gz after the job, which for a 2-4 GB
diffusers folder means minutes of single-stream gzip and a file nobody can load without unpacking. boto3's
transfer manager uploads each file with multipart and concurrency, and the service reads the files where they
land. The manifest is written after every file, so its presence means the upload is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix/") (prefix empty or ending with '/')."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def shared_class_image_name(job_name: str, path: Path) -> str:
    """``<training job name>-<first 16 hex of the file's sha256><suffix>``: jobs never overwrite each other,
    and a retried upload of the same file lands on the same key."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{job_name}-{digest}{path.suffix}"


def upload_class_images(files: list[Path], s3_uri: str, job_name: str, *, client: Any = None) -> list[str]:
    """Upload generated class images next to the shared ones under s3_uri; return the keys written.

    Best effort: generation was already paid for and the job goes on with the local files, so an upload
    error is logged (with what was not shared) instead of failing the training.
    """
    import boto3
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_uri(s3_uri)
    keys: list[str] = []
    try:
        client = client or boto3.client("s3")
        for path in files:
            key = prefix + shared_class_image_name(job_name, path)
            client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": "image/png"})
            keys.append(key)
    except (Boto3Error, BotoCoreError, ClientError, OSError) as exc:
        log.warning(
            "could not share class images to s3://%s/%s (%d of %d uploaded): %s",
            bucket,
            prefix,
            len(keys),
            len(files),
            exc,
        )
        return keys
    log.info("shared %d generated class image(s) to s3://%s/%s", len(keys), bucket, prefix)
    return keys


def list_model_files(folder: Path) -> list[tuple[str, Path]]:
    """(relative key, path) for every file, sorted; a manifest already there is not part of the model."""
    return [
        (path.relative_to(folder).as_posix(), path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != MANIFEST_NAME
    ]


def upload_model_folder(
    folder: Path,
    s3_uri: str,
    manifest_fields: dict[str, Any],
    *,
    client: Any = None,
    max_concurrency: int = 8,
    multipart_mb: int = 64,
) -> dict[str, Any]:
    """Upload every file under folder to s3_uri, then the manifest; return the manifest.

    The client comes from boto3's default chain, which honours AWS_ENDPOINT_URL (moto, LocalStack, ...).
    """
    import boto3
    from boto3.s3.transfer import TransferConfig

    bucket, prefix = parse_s3_uri(s3_uri)
    client = client or boto3.client("s3")
    part = multipart_mb * 2**20  # UNet weights (1.7 GB in fp16) go up as ~27 concurrent parts
    config = TransferConfig(
        multipart_threshold=part, multipart_chunksize=part, max_concurrency=max_concurrency
    )
    files = list_model_files(folder)
    for key, path in files:
        client.upload_file(str(path), bucket, prefix + key, Config=config)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        **manifest_fields,
        "s3_uri": f"s3://{bucket}/{prefix}",
        "files": [{"key": key, "size": path.stat().st_size} for key, path in files],
        "total_bytes": sum(path.stat().st_size for _, path in files),
        "completed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    client.put_object(
        Bucket=bucket,
        Key=prefix + MANIFEST_NAME,
        Body=json.dumps(manifest, indent=2).encode(),
        ContentType="application/json",
    )
    log.info(
        "uploaded %d file(s), %d bytes, to s3://%s/%s", len(files), manifest["total_bytes"], bucket, prefix
    )
    return manifest
