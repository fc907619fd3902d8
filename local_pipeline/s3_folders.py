"""Copy folders to and from S3 prefixes: the local mode's one way of moving files through the bucket."""

from __future__ import annotations

from pathlib import Path

from lambdas.jobs.s3_layout import split_s3_uri


def download_prefix(s3_client, uri: str, target: Path) -> list[Path]:
    """Every object under ``uri`` into ``target``, keys relative to the prefix (as SageMaker's File mode)."""
    bucket, prefix = split_s3_uri(uri)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) :].lstrip("/")
            if not relative or relative.endswith("/"):
                continue  # folder placeholders
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            s3_client.download_file(bucket, item["Key"], str(destination))
            written.append(destination)
    return written


def upload_folder(s3_client, folder: Path, uri: str) -> list[str]:
    """Every file under ``folder`` to the prefix ``uri``; boto3's upload_file does multipart as needed."""
    bucket, prefix = split_s3_uri(uri.rstrip("/") + "/")
    keys = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = prefix + path.relative_to(folder).as_posix()
            s3_client.upload_file(str(path), bucket, key)
            keys.append(key)
    return keys
