"""Image format and dimensions from a file's first bytes, without decoding pixels.

Validation reads only a ranged prefix of each upload, so a batch of large photos is checked before any
GPU is paid for, in pure Python (no Pillow in the Lambda). Covers the formats the trainer reads:
JPEG, PNG, WebP (lossy, lossless, extended), GIF and BMP.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Enough for nearly every file; JPEGs with a big EXIF/ICC block before the frame header need more.
FIRST_READ_BYTES = 64 * 1024
MAX_READ_BYTES = 1024 * 1024


class ImageHeaderError(ValueError):
    """The bytes are not a readable image header; the message says what was found."""


class NeedMoreBytes(ImageHeaderError):
    """The header is plausible but the frame size lies beyond the bytes read so far."""


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg" | "png" | "webp" | "gif" | "bmp"
    width: int
    height: int


def sniff_image(data: bytes) -> ImageHeader:
    """The format and size named by ``data`` (a file's first bytes); raises when it is not an image."""
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(data)
    if data[:2] == b"BM":
        return _bmp(data)
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace").strip()
        raise ImageHeaderError(
            f"{'AVIF' if brand.startswith('avi') else 'HEIC/HEIF'} image (brand {brand!r}) is not supported: "
            "export it as JPEG or PNG (on an iPhone: Settings > Camera > Formats > Most Compatible)"
        )
    raise ImageHeaderError(f"not a JPEG, PNG, WebP, GIF or BMP image ({_describe(data)})")


def _checked(fmt: str, width: int, height: int) -> ImageHeader:
    if width <= 0 or height <= 0:
        raise ImageHeaderError(f"{fmt.upper()} header names an empty image ({width}x{height})")
    return ImageHeader(fmt, width, height)


def _need(data: bytes, end: int, fmt: str) -> None:
    if len(data) < end:
        raise NeedMoreBytes(f"{fmt.upper()} header is cut short")


def _png(data: bytes) -> ImageHeader:
    _need(data, 24, "png")
    if data[12:16] != b"IHDR":
        raise ImageHeaderError("PNG without an IHDR chunk (damaged file)")
    width, height = struct.unpack(">II", data[16:24])
    return _checked("png", width, height)


def _gif(data: bytes) -> ImageHeader:
    _need(data, 10, "gif")
    width, height = struct.unpack("<HH", data[6:10])
    return _checked("gif", width, height)


def _bmp(data: bytes) -> ImageHeader:
    _need(data, 26, "bmp")
    header_size = struct.unpack("<I", data[14:18])[0]
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
    elif header_size >= 40:
        width, height = struct.unpack("<ii", data[18:26])
    else:
        raise ImageHeaderError(f"BMP with an unknown header size {header_size}")
    return _checked("bmp", abs(width), abs(height))  # negative height: top-down rows


def _webp(data: bytes) -> ImageHeader:
    _need(data, 30, "webp")
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageHeaderError("WebP (lossy) without a frame start code (damaged file)")
        width, height = struct.unpack("<HH", data[26:30])
        return _checked("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise ImageHeaderError("WebP (lossless) without its signature byte (damaged file)")
        bits = int.from_bytes(data[21:25], "little")
        return _checked("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return _checked("webp", width, height)
    raise ImageHeaderError(f"WebP with an unknown first chunk {chunk!r}")


# JPEG start-of-frame markers (baseline, progressive, lossless, ...); C4, C8 and CC are not frames.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])


def _jpeg(data: bytes) -> ImageHeader:
    offset = 2
    while True:
        _need(data, offset + 4, "jpeg")
        if data[offset] != 0xFF:
            raise ImageHeaderError(f"JPEG segment marker missing at byte {offset} (damaged file)")
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _STANDALONE_MARKERS:
            offset += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            raise ImageHeaderError("JPEG without a frame header (damaged file)")
        length = struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        if length < 2:
            raise ImageHeaderError(f"JPEG segment with an impossible length {length} (damaged file)")
        if marker in _SOF_MARKERS:
            _need(data, offset + 9, "jpeg")
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return _checked("jpeg", width, height)
        offset += 2 + length


def _describe(data: bytes) -> str:
    if not data:
        return "the file is empty"
    head = data[:64]
    if head.lstrip().startswith((b"{", b"[")):
        return "looks like JSON"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "looks like text"
    return f"starts with bytes {data[:8].hex(' ')}"
