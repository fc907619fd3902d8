import io
import struct

import pytest
from PIL import Image

from lambdas.jobs.image_headers import (
    FIRST_READ_BYTES,
    ImageHeader,
    ImageHeaderError,
    NeedMoreBytes,
    sniff_image,
)


def encode(fmt: str, mode: str = "RGB", size=(123, 45), **options) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color=0).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (encode("JPEG"), "jpeg"),
        (encode("JPEG", progressive=True), "jpeg"),
        (encode("JPEG", mode="L"), "jpeg"),
        (encode("PNG", mode="RGBA"), "png"),
        (encode("WEBP"), "webp"),
        (encode("WEBP", mode="RGBA"), "webp"),
        (encode("WEBP", mode="RGBA", lossless=True), "webp"),
        (encode("GIF", mode="P"), "gif"),
        (encode("BMP"), "bmp"),
    ],
    ids=[
        "jpeg",
        "jpeg-progressive",
        "jpeg-grey",
        "png",
        "webp-lossy",
        "webp-extended",
        "webp-lossless",
        "gif",
        "bmp",
    ],
)
def test_dimensions_match_what_pillow_wrote(data, fmt):
    assert sniff_image(data) == ImageHeader(fmt, 123, 45)


def test_the_three_webp_chunk_kinds_are_all_covered():
    chunks = {
        encode("WEBP")[12:16],
        encode("WEBP", mode="RGBA")[12:16],
        encode("WEBP", mode="RGBA", lossless=True)[12:16],
    }
    assert chunks == {b"VP8 ", b"VP8X", b"VP8L"}


def test_a_jpeg_whose_frame_header_lies_beyond_the_first_read_asks_for_more():
    """Phone photos carry big EXIF/ICC blocks before the frame header."""
    data = encode("JPEG", icc_profile=b"\0" * (FIRST_READ_BYTES + 1000))
    with pytest.raises(NeedMoreBytes):
        sniff_image(data[:FIRST_READ_BYTES])
    assert sniff_image(data) == ImageHeader("jpeg", 123, 45)


def test_top_down_bmp_reports_a_positive_height():
    data = bytearray(encode("BMP"))
    data[22:26] = struct.pack("<i", -45)
    assert sniff_image(bytes(data)).height == 45


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b'{"token": "sks"}', "looks like JSON"),
        (b"hello, this is a caption", "looks like text"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC/HEIF"),
        (b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00", "AVIF"),
        (b"%PDF-1.7 ...", "looks like text"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT" + b"\0" * 8, "IHDR"),
        (b"\xff\xd8\xff\xd9\x00\x00", "frame header"),
    ],
)
def test_non_images_are_named_for_what_they_are(data, message):
    with pytest.raises(ImageHeaderError, match=message):
        sniff_image(data)


def test_truncated_headers_are_reported_as_such():
    with pytest.raises(NeedMoreBytes):
        sniff_image(encode("PNG")[:20])


def test_a_zero_sized_frame_is_rejected():
    data = bytearray(encode("GIF", mode="P"))
    data[6:8] = b"\0\0"
    with pytest.raises(ImageHeaderError, match="empty image"):
        sniff_image(bytes(data))
