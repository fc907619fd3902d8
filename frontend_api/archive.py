"""Reading a user's zip of images safely: bounded counts and sizes, no path tricks, no zip bombs. Pure.

Every entry is checked before anything is extracted: its name (no absolute paths, drive letters,
backslashes or ``..`` segments), its type (no symlinks, no encryption), its declared size and its
compression ratio. Extraction then reads at most the declared size of each entry, so an archive that
lies about its sizes is caught too.
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO

from frontend_api.errors import ApiError
from lambdas.jobs import s3_layout

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".heic", ".heif")
CAPTION_SUFFIX = ".txt"
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 1000
    max_images: int = 200
    max_entry_bytes: int = 25 * 1024 * 1024
    max_total_bytes: int = 1024 * 1024 * 1024
    # A photo hardly compresses; text compresses ~10x. 100x is a bomb.
    max_ratio: int = 100


@dataclass
class ArchivePlan:
    """What will be extracted (entry -> relative key) and what is skipped, with why."""

    entries: list[tuple[zipfile.ZipInfo, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def image_count(self) -> int:
        return sum(1 for _, name in self.entries if name.lower().endswith(IMAGE_SUFFIXES))


def safe_entry_name(name: str) -> str:
    """The entry's relative path, or ApiError ``unsafe_archive`` naming the entry."""
    unsafe = ApiError(
        "unsafe_archive",
        f"the archive entry {name!r} has an unsafe path (absolute, '..', backslash or drive letter); "
        "zip the photos with plain relative names",
    )
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or (len(name) > 1 and name[1] == ":")
    ):
        raise unsafe
    parts = name.rstrip("/").split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise unsafe
    return "/".join(parts)


def plan(archive: zipfile.ZipFile, limits: ArchiveLimits) -> ArchivePlan:
    infos = archive.infolist()
    files = [info for info in infos if not info.is_dir()]
    if len(files) > limits.max_entries:
        raise ApiError(
            "archive_too_many_files",
            f"the archive holds {len(files)} files; at most {limits.max_entries} are accepted "
            f"(and at most {limits.max_images} images)",
        )
    result = ArchivePlan()
    total = 0
    for info in files:
        name = safe_entry_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ApiError("unsafe_archive", f"the archive entry {name!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise ApiError("unsafe_archive", f"the archive entry {name!r} is encrypted: upload a plain zip")
        path = PurePosixPath(name)
        if (
            path.parts[0] == "__MACOSX"
            or path.name.startswith(".")
            or path.name.lower() in s3_layout.IGNORED_UPLOAD_NAMES
        ):
            result.skipped.append({"file": name, "reason": "system or hidden file"})
            continue
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES and suffix != CAPTION_SUFFIX:
            result.skipped.append(
                {"file": name, "reason": f"not an image or caption ({suffix or 'no extension'})"}
            )
            continue
        if info.file_size > limits.max_entry_bytes:
            raise ApiError(
                "unsafe_archive",
                f"the archive entry {name!r} is {info.file_size} bytes; each image may be at most "
                f"{limits.max_entry_bytes} bytes",
            )
        if info.file_size > limits.max_ratio * max(info.compress_size, 1) and info.file_size > 1024 * 1024:
            raise ApiError(
                "unsafe_archive",
                f"the archive entry {name!r} expands {info.file_size // max(info.compress_size, 1)}x: "
                "refused as a zip bomb",
            )
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ApiError(
                "unsafe_archive", f"the archive expands to more than {limits.max_total_bytes} bytes"
            )
        result.entries.append((info, name))
    if result.image_count > limits.max_images:
        raise ApiError(
            "too_many_images",
            f"the archive holds {result.image_count} images; a job takes at most {limits.max_images}",
        )
    if result.image_count == 0:
        raise ApiError("no_images", "the archive holds no images (.jpg, .png, .webp, .gif, .bmp)")
    return result


def read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The entry's bytes, never more than it declared; a lying header or a bad CRC is unsafe_archive."""
    chunks, size = [], 0
    try:
        with archive.open(info) as handle:
            while chunk := handle.read(_READ_CHUNK):
                size += len(chunk)
                if size > info.file_size:
                    raise ApiError(
                        "unsafe_archive", f"the archive entry {info.filename!r} is larger than it declares"
                    )
                chunks.append(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as err:
        raise ApiError(
            "unsafe_archive",
            f"the archive entry {info.filename!r} is corrupt or larger than it declares ({err})",
        ) from None
    return b"".join(chunks)


def open_archive(data: IO[bytes]) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(data)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as err:
        raise ApiError("unsafe_archive", f"images_url is not a readable zip archive ({err})") from None
