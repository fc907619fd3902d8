"""Whether a file is an image the trainer can use: one rule, shared by the trainer and the service's
validation (which ships this module to its Lambda). Pillow only: no numpy, no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

# Everything Pillow raises for a file it cannot decode in full (a truncated file raises OSError).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode_image(source: str | Path | BinaryIO) -> Image.Image:
    """Decode every pixel now (a truncated file fails here, not mid-training), upright per its EXIF."""
    with Image.open(source) as image:
        image.load()
        return ImageOps.exif_transpose(image)


def decode_failure(exc: BaseException) -> str:
    """The reason a file was skipped, as the trainer logs it and the notification names it."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image PIL can read"
    return f"cannot decode ({type(exc).__name__}: {exc})"
