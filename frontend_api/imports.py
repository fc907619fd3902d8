"""``images_url``: fetch a zip (https:// or s3://) or a list of image URLs, with limits, into a job's uploads.

Every URL passes :mod:`frontend_api.url_safety` (again after each redirect), downloads stop at the size
limit whatever Content-Length claims, and a zip passes :mod:`frontend_api.archive` before anything of it
lands under ``uploads/<job>/``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urljoin, urlsplit

import urllib3

from frontend_api import archive, http_client
from frontend_api.errors import ApiError
from frontend_api.models import check_file_name
from frontend_api.url_safety import UnsafeUrl, check_url
from lambdas.jobs import s3_layout

MAX_REDIRECTS = 3
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ImportSettings:
    max_download_bytes: int = 512 * 1024 * 1024
    timeout_seconds: float = 20.0
    allow_local: bool = False
    allowed_s3_buckets: frozenset[str] = frozenset()


def download(url: str, *, max_bytes: int, settings: ImportSettings, s3: Any) -> IO[bytes]:
    """The object at ``url`` in a temporary file (spooled), never more than ``max_bytes``."""
    if url.startswith("s3://"):
        return _download_s3(url, max_bytes=max_bytes, settings=settings, s3=s3)
    deadline = time.monotonic() + settings.timeout_seconds
    for _ in range(MAX_REDIRECTS + 1):
        try:
            checked = check_url(url, what="images_url", allow_local=settings.allow_local)
        except UnsafeUrl as err:
            raise ApiError("unsafe_url", str(err)) from None
        try:
            response = http_client.request(checked, "GET", read_timeout=settings.timeout_seconds)
        except urllib3.exceptions.HTTPError as err:
            raise ApiError("images_url_unreachable", f"could not fetch {url}: {type(err).__name__}") from None
        try:
            if response.status in {301, 302, 303, 307, 308} and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                continue
            if response.status != 200:
                raise ApiError(
                    "images_url_unreachable", f"{url} answered HTTP {response.status}; expected 200"
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(url, max_bytes)
            spool = _spool()
            size = 0
            try:
                for chunk in response.stream(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise _too_large(url, max_bytes)
                    if time.monotonic() > deadline:
                        raise ApiError(
                            "images_url_unreachable",
                            f"{url} did not finish within {settings.timeout_seconds:.0f} s",
                        )
                    spool.write(chunk)
            except urllib3.exceptions.HTTPError as err:
                raise ApiError(
                    "images_url_unreachable", f"reading {url} failed: {type(err).__name__}"
                ) from None
            spool.seek(0)
            return spool
        finally:
            response.release_conn()
    raise ApiError("images_url_unreachable", f"{url} redirects more than {MAX_REDIRECTS} times")


def _download_s3(url: str, *, max_bytes: int, settings: ImportSettings, s3: Any) -> IO[bytes]:
    try:
        bucket, key = s3_layout.split_s3_uri(url)
    except ValueError as err:
        raise ApiError("unsafe_url", str(err)) from None
    if bucket not in settings.allowed_s3_buckets:
        raise ApiError(
            "unsafe_url",
            f"s3://{bucket}/ is not a bucket this deployment imports from; allowed: "
            + (", ".join(sorted(settings.allowed_s3_buckets)) or "none (set the api_import_buckets context)"),
        )
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except Exception as err:
        code = (getattr(err, "response", {}) or {}).get("Error", {}).get("Code")
        raise ApiError(
            "images_url_unreachable", f"could not read {url} ({code or type(err).__name__})"
        ) from None
    if obj["ContentLength"] > max_bytes:
        raise _too_large(url, max_bytes)
    spool = _spool()
    for chunk in obj["Body"].iter_chunks(_CHUNK):
        spool.write(chunk)
    spool.seek(0)
    return spool


def _spool() -> IO[bytes]:
    """Memory up to 64 MB, then a temporary file: the caller closes it (returned, so no `with` here)."""
    return tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115


def _too_large(url: str, max_bytes: int) -> ApiError:
    return ApiError("images_url_too_large", f"{url} is larger than the {max_bytes} bytes accepted")


@dataclass
class Fetched:
    """Every file of an import, read and checked in full before any of it is uploaded."""

    files: list[tuple[str, bytes]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def image_count(self) -> int:
        return sum(1 for name, _ in self.files if name.lower().endswith(archive.IMAGE_SUFFIXES))


def fetch_zip(url: str, *, limits: archive.ArchiveLimits, settings: ImportSettings, s3: Any) -> Fetched:
    """The accepted entries of a zip: the whole archive is checked before one entry is read."""
    with download(url, max_bytes=settings.max_download_bytes, settings=settings, s3=s3) as data:
        zipped = archive.open_archive(data)
        with zipped:
            planned = archive.plan(zipped, limits)
            fetched = Fetched(skipped=planned.skipped)
            for info, name in planned.entries:
                fetched.files.append((name, archive.read_entry(zipped, info)))
    return fetched


def fetch_list(
    urls: list[str], *, limits: archive.ArchiveLimits, settings: ImportSettings, s3: Any
) -> Fetched:
    """One image per URL, named ``NNN-<last path segment>`` so two URLs never collide."""
    if len(urls) > limits.max_images:
        raise ApiError("too_many_images", f"{len(urls)} image URLs; a job takes at most {limits.max_images}")
    named = []
    for index, url in enumerate(urls, start=1):
        base = PurePosixPath(unquote(urlsplit(url).path)).name or "image"
        try:
            name = check_file_name(f"{index:03d}-{base}")
        except ValueError as err:
            raise ApiError("invalid_image_name", f"images_url[{index - 1}]: {err}") from None
        if not name.lower().endswith(archive.IMAGE_SUFFIXES):
            raise ApiError(
                "invalid_image_name",
                f"images_url[{index - 1}] ({url}) does not end in an image extension "
                "(.jpg, .png, .webp, ...)",
            )
        named.append((url, name))
    fetched = Fetched()
    for url, name in named:
        with download(url, max_bytes=limits.max_entry_bytes, settings=settings, s3=s3) as data:
            fetched.files.append((name, data.read()))
    return fetched
