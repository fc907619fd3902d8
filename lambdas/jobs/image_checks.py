"""Is one uploaded file a photo the trainer can use? Decided from its bytes, in full. Pure (Pillow).

The header check names the formats the service accepts and gives advice for the common wrong ones
(HEIC, AVIF, text); then the whole image is decoded with the trainer's own rule
(``dreambooth_trainer.image_files``), so a truncated file is skipped here, before any GPU is paid for,
not discovered by the trainer.
"""

from __future__ import annotations

import io

from dreambooth_trainer.image_files import DECODE_ERRORS, decode_failure, decode_image
from lambdas.jobs.image_headers import ImageHeader, ImageHeaderError, NeedMoreBytes, sniff_image


def judge_image(data: bytes, *, min_side: int, side_rule: str = "") -> ImageHeader | str:
    """The image's format and upright size, or the reason it cannot be trained on. ``side_rule`` says why
    ``min_side`` is what it is (e.g. " for sdxl base models, which train at 1024 px")."""
    try:
        header = sniff_image(data)
    except NeedMoreBytes as err:
        return f"cannot read the image header: {err}; the file is truncated or damaged"
    except ImageHeaderError as err:
        return str(err)
    try:
        image = decode_image(io.BytesIO(data))
    except DECODE_ERRORS as exc:
        return f"{decode_failure(exc)}; the file is truncated or damaged: export or upload it again"
    width, height = image.size
    if min(width, height) < min_side:
        return f"{width}x{height} px is too small: both sides need at least {min_side} px{side_rule}"
    return ImageHeader(header.format, width, height)
