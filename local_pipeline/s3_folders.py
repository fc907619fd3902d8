"""Copy folders to and from S3 prefixes: the local mode's one way of moving files through the bucket.

An S3 key is text, not a path: ``uploads/esc/../../../pwned/x.jpg`` is a valid key that the AWS CLI
uploads as written. Every copy to disk goes through :func:`contained_path`, which refuses a key that
would land outside its target folder; the refused keys are returned so the caller can report them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lambdas.jobs.s3_layout import split_s3_uri


class UnsafeKeyError(ValueError):
    """An S3 key (or a name taken from a request) that cannot be written inside its target folder."""


def contained_path(root: Path, relative: str) -> Path:
    """``root / relative``, or UnsafeKeyError when that is not a file strictly inside ``root``.

    Refused: an empty name, an absolute one, any ``..`` segment (even one that would come back inside:
    a key is data, never a path to normalise), a backslash or NUL, and a name that resolves outside
    ``root`` through a symbolic link already there.
    """
    if not relative or "\x00" in relative or "\\" in relative:
        raise UnsafeKeyError(f"{relative!r}: empty, or holds a backslash or NUL")
    parts = PurePosixPath(relative).parts
    if relative.startswith("/") or ".." in parts:
        raise UnsafeKeyError(f"{relative!r}: an absolute name or a '..' segment would leave {root}")
    candidate = root.joinpath(*parts)
    resolved_root = root.resolve()
    resolved = candidate.resolve()
    if resolved == resolved_root or not resolved.is_relative_to(resolved_root):
        raise UnsafeKeyError(f"{relative!r}: resolves to {resolved}, outside {resolved_root}")
    return candidate


@dataclass(frozen=True)
class RefusedKey:
    key: str
    reason: str


@dataclass
class Download:
    """What a prefix copy wrote, and the keys it refused to write (named, never silently dropped)."""

    files: list[Path] = field(default_factory=list)
    refused: list[RefusedKey] = field(default_factory=list)

    def describe_refused(self) -> list[str]:
        return [f"refused S3 key {item.key!r}: {item.reason}" for item in self.refused]


def download_prefix(s3_client, uri: str, target: Path) -> Download:
    """Every object under ``uri`` into ``target``, keys relative to the prefix (as SageMaker's File mode).

    Keys that would land outside ``target`` are not downloaded; they are listed in ``refused``.
    """
    bucket, prefix = split_s3_uri(uri)
    objects = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) :].lstrip("/")
            if relative and not relative.endswith("/"):  # folder placeholders are skipped
                objects.append((item["Key"], relative))
    return download_objects(s3_client, bucket, objects, target)


def download_manifest(s3_client, manifest: list, target: Path) -> Download:
    """A SageMaker ``ManifestFile`` channel: ``[{"prefix": "s3://b/p/"}, "relative/key", ...]`` -> target.

    Each entry lands at ``target/<relative key>``, as SageMaker's File mode lays it out.
    """
    if not manifest or not isinstance(manifest[0], dict) or "prefix" not in manifest[0]:
        raise ValueError('a manifest starts with {"prefix": "s3://<bucket>/<prefix>"}')
    bucket, prefix = split_s3_uri(str(manifest[0]["prefix"]))
    objects = [(prefix + str(relative), str(relative)) for relative in manifest[1:]]
    return download_objects(s3_client, bucket, objects, target)


def download_objects(s3_client, bucket: str, objects: list[tuple[str, str]], target: Path) -> Download:
    """``(key, relative name)`` pairs into ``target``; names that would leave it are refused, not written."""
    target.mkdir(parents=True, exist_ok=True)
    result = Download()
    for key, relative in objects:
        try:
            destination = contained_path(target, relative)
        except UnsafeKeyError as err:
            result.refused.append(RefusedKey(key, str(err)))
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        s3_client.download_file(bucket, key, str(destination))
        result.files.append(destination)
    return result


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
