"""lambdas/jobs/image_checks.py: every photo is decoded in full, with the trainer's own rule."""

import io

from PIL import Image

from dreambooth_trainer.data import load_images
from lambdas.jobs.image_checks import judge_image
from lambdas.jobs.image_headers import ImageHeader


def encoded(fmt: str, size=(120, 90), **options) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 40)).save(buffer, fmt, **options)
    return buffer.getvalue()


def test_a_whole_photo_passes_with_its_format_and_size():
    assert judge_image(encoded("JPEG"), min_side=64) == ImageHeader("jpeg", 120, 90)
    assert judge_image(encoded("PNG"), min_side=64) == ImageHeader("png", 120, 90)


def test_a_truncated_photo_whose_header_is_fine_is_skipped_as_the_trainer_would(tmp_path):
    data = encoded("JPEG", size=(400, 300), quality=95)
    cut = data[: len(data) // 2]
    verdict = judge_image(cut, min_side=64)
    assert isinstance(verdict, str)
    assert "cannot decode (OSError: image file is truncated" in verdict
    # The trainer's loader skips the same file for the same reason.
    (tmp_path / "cut.jpg").write_bytes(cut)
    images, skipped = load_images([tmp_path], resolution=64, center_crop=True, seed=0)
    assert images == [] and skipped[0][1] in verdict


def test_text_named_png_and_heic_get_their_own_advice():
    assert "looks like text" in judge_image(b"hello, I am not a photo\n" * 10, min_side=64)
    assert "HEIC" in judge_image(b"\x00\x00\x00\x18ftypheic" + b"\0" * 64, min_side=64)


def test_small_photos_are_measured_upright_after_decoding():
    verdict = judge_image(encoded("PNG", size=(200, 40)), min_side=64)
    assert verdict == "200x40 px is too small: both sides need at least 64 px"


def test_a_photo_too_small_for_the_family_says_the_side_and_the_family():
    verdict = judge_image(
        encoded("JPEG", size=(400, 300)),
        min_side=512,
        side_rule=" for sdxl base models, which train at 1024 px",
    )
    assert verdict == (
        "400x300 px is too small: both sides need at least 512 px"
        " for sdxl base models, which train at 1024 px"
    )
