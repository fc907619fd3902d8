"""Upload the finished model folder to S3 ourselves, then manifest.json, then the `_SUCCESS` marker last.

Why not let SageMaker do it: it tars /opt/ml/model into one model.tar.gz after the job, which for a 2-4 GB
diffusers folder means minutes of single-stream gzip and a file nobody can load without unpacking. boto3's
transfer manager uploads each file with multipart and concurrency, and the service reads the files where they
land. `_SUCCESS` is written after every file and the manifest (and removed first when a restarted job uploads
again), so its presence means the model is complete.

Transient S3 errors (throttling, 5xx, timeouts, dropped connections) are retried twice over: per request by
botocore's standard retry mode, and per file around the transfer manager with exponential backoff. A
permanent one (AccessDenied, NoSuchBucket, ...) fails the job with the S3 error named.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .errors import ModelUploadError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SUCCESS_NAME = "_SUCCESS"  # written last: the model under this prefix is complete
MANIFEST_VERSION = 1

# botocore's standard mode retries throttling, 5xx and connection errors per request with backoff.
CLIENT_MAX_ATTEMPTS = 10
# Around the transfer manager: a whole file again, for what outlasts the per-request retries.
UPLOAD_ATTEMPTS = 4
BACKOFF_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 60.0
TRANSIENT_S3_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalError",
        "ServiceUnavailable",
        "500",
        "502",
        "503",
        "504",
    }
)

T = TypeVar("T")


def s3_client() -> Any:
    """From boto3's default chain (honours AWS_ENDPOINT_URL: moto, LocalStack), with standard retries."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", config=Config(retries={"mode": "standard", "total_max_attempts": CLIENT_MAX_ATTEMPTS})
    )


def s3_error(exc: BaseException) -> tuple[str, str]:
    """(code, message) of an S3 failure; the transfer manager hides the ClientError in __context__."""
    from botocore.exceptions import ClientError

    cause = exc if isinstance(exc, ClientError) else exc.__cause__ or exc.__context__
    if isinstance(cause, ClientError):
        error = cause.response.get("Error", {})
        return str(error.get("Code") or "Unknown"), str(error.get("Message") or cause)
    return type(exc).__name__, str(exc)


def is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    if isinstance(exc, (BotoConnectionError, HTTPClientError)):  # timeouts, dropped and refused connections
        return True
    return s3_error(exc)[0] in TRANSIENT_S3_CODES


def with_retries(
    action: Callable[[], T],
    what: str,
    *,
    attempts: int = UPLOAD_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run action; retry transient S3 errors with exponential backoff; ModelUploadError naming the error."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            code, message = s3_error(exc)
            if is_transient(exc) and attempt < attempts:
                delay = min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2 ** (attempt - 1))
                log.warning(
                    "%s: transient S3 error %s (%s); attempt %d of %d, retrying in %.0f s",
                    what,
                    code,
                    message,
                    attempt,
                    attempts,
                    delay,
                )
                sleep(delay)
                continue
            tried = f" after {attempt} attempts" if attempt > 1 else ""
            raise ModelUploadError(
                f"could not upload the model: {what} failed{tried} with S3 error {code}: {message}"
            ) from None
    raise AssertionError("unreachable")


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
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_uri(s3_uri)
    keys: list[str] = []
    try:
        client = client or s3_client()
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


def model_manifest(files: list[tuple[str, Path]], s3_uri: str, fields: dict[str, Any]) -> dict[str, Any]:
    """manifest.json: the record's fields, where the model lies and every file with its size."""
    bucket, prefix = parse_s3_uri(s3_uri)
    return {
        "manifest_version": MANIFEST_VERSION,
        **fields,
        "s3_uri": f"s3://{bucket}/{prefix}",
        "files": [{"key": key, "size": path.stat().st_size} for key, path in files],
        "total_bytes": sum(path.stat().st_size for _, path in files),
        "completed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def upload_model_folder(
    folder: Path,
    s3_uri: str,
    manifest_fields: dict[str, Any],
    *,
    client: Any = None,
    max_concurrency: int = 8,
    multipart_mb: int = 64,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Upload every file under folder to s3_uri, then the manifest, then `_SUCCESS`; return the manifest.

    ModelUploadError (naming the S3 error) when a file cannot be uploaded after retries.
    """
    from boto3.s3.transfer import TransferConfig

    bucket, prefix = parse_s3_uri(s3_uri)
    client = client or s3_client()
    part = multipart_mb * 2**20  # UNet weights (1.7 GB in fp16) go up as ~27 concurrent parts
    config = TransferConfig(
        multipart_threshold=part, multipart_chunksize=part, max_concurrency=max_concurrency
    )
    where = f"s3://{bucket}/{prefix}"
    # A restarted job uploading again: the prefix is not complete until this upload is.
    with_retries(
        lambda: client.delete_object(Bucket=bucket, Key=prefix + SUCCESS_NAME),
        f"removing {where}{SUCCESS_NAME}",
        sleep=sleep,
    )
    files = list_model_files(folder)
    for key, path in files:
        with_retries(
            lambda key=key, path=path: client.upload_file(str(path), bucket, prefix + key, Config=config),
            f"uploading {key} to {where}",
            sleep=sleep,
        )
    manifest = model_manifest(files, s3_uri, manifest_fields)
    body = json.dumps(manifest, indent=2).encode()
    with_retries(
        lambda: client.put_object(
            Bucket=bucket, Key=prefix + MANIFEST_NAME, Body=body, ContentType="application/json"
        ),
        f"writing {where}{MANIFEST_NAME}",
        sleep=sleep,
    )
    with_retries(
        lambda: client.put_object(Bucket=bucket, Key=prefix + SUCCESS_NAME, Body=b""),
        f"writing {where}{SUCCESS_NAME}",
        sleep=sleep,
    )
    log.info(
        "uploaded %d file(s), %d bytes, to s3://%s/%s", len(files), manifest["total_bytes"], bucket, prefix
    )
    return manifest
