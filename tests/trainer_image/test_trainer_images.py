"""Whatever users upload becomes square RGB arrays, or a named skip, or a clear failure."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreambooth_trainer.data import load_images, require_images, to_rgb
from dreambooth_trainer.errors import TrainingDataError


def _landscape_with_red_left_half(width: int = 80, height: int = 40) -> Image.Image:
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = _landscape_with_red_left_half()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the camera stored it sideways
    image.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    [loaded], skipped = load_images([tmp_path], resolution=16, center_crop=True, seed=0)
    assert skipped == []
    pixels = loaded.pixels.astype(int)
    # After rotating 90° clockwise the red half is on top, the blue half at the bottom.
    assert pixels[1, 8, 0] > 200 and pixels[1, 8, 2] < 60
    assert pixels[14, 8, 2] > 200 and pixels[14, 8, 0] < 60


@pytest.mark.parametrize(
    ("mode", "make"),
    [
        ("RGBA", lambda: Image.new("RGBA", (20, 30), (10, 200, 30, 255))),
        ("P", lambda: Image.new("RGB", (20, 30), (10, 200, 30)).convert("P")),
        ("L", lambda: Image.new("L", (20, 30), 128)),
        ("CMYK", lambda: Image.new("CMYK", (20, 30), (0, 255, 255, 0))),
        ("I;16", lambda: Image.fromarray(np.full((30, 20), 65535, dtype=np.uint16))),
        ("1", lambda: Image.new("1", (20, 30), 1)),
    ],
)
def test_any_mode_becomes_rgb_at_the_resolution(tmp_path: Path, mode: str, make) -> None:
    image = make()
    assert image.mode == mode
    image.save(tmp_path / ("img.png" if mode != "CMYK" else "img.jpg"))
    [loaded], _ = load_images([tmp_path], resolution=16, center_crop=False, seed=1)
    assert loaded.pixels.shape == (16, 16, 3) and loaded.pixels.dtype == np.uint8


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    mid_grey = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert np.asarray(to_rgb(mid_grey))[0, 0].tolist() == [128, 128, 128]


def test_transparency_goes_onto_white() -> None:
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(to_rgb(clear))[0, 0].tolist() == [255, 255, 255]


def test_center_crop_keeps_the_middle_and_random_crop_varies_with_seed(tmp_path: Path) -> None:
    array = np.zeros((20, 60, 3), dtype=np.uint8)
    array[:, 20:40] = 255  # white middle third of a wide image
    Image.fromarray(array).save(tmp_path / "wide.png")
    [centre], _ = load_images([tmp_path], resolution=20, center_crop=True, seed=0)
    assert centre.pixels.min() == 255
    crops = {load_images([tmp_path], 20, False, seed)[0][0].pixels.tobytes() for seed in range(6)}
    assert len(crops) > 1


def test_broken_and_non_image_files_are_skipped_by_name(tmp_path: Path, caplog) -> None:
    Image.new("RGB", (24, 24), (1, 2, 3)).save(tmp_path / "good.png")
    (tmp_path / "notes.pdf").write_bytes(b"%PDF-1.4 not an image")
    good_jpeg = tmp_path / "truncated.jpg"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(good_jpeg, quality=90)
    good_jpeg.write_bytes(good_jpeg.read_bytes()[:200])
    (tmp_path / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / "good.txt").write_text("a photo of sks dog on a beach\n")
    with caplog.at_level(logging.WARNING, logger="dreambooth_trainer.data"):
        images, skipped = load_images([tmp_path], resolution=16, center_crop=True, seed=0)
    assert [image.path.name for image in images] == ["good.png"]
    assert images[0].caption == "a photo of sks dog on a beach"
    assert sorted(path.name for path, _ in skipped) == ["notes.pdf", "truncated.jpg"]
    assert "skipping" in caplog.text and "notes.pdf" in caplog.text and "truncated.jpg" in caplog.text


def test_too_few_images_fail_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="no instance images found"):
        require_images([], [], [tmp_path], 1, "instance")
    (tmp_path / "a.jpg").write_bytes(b"garbage")
    images, skipped = load_images([tmp_path], 16, True, 0)
    with pytest.raises(TrainingDataError, match=r"only 0 usable instance image\(s\).*a\.jpg: not an image"):
        require_images(images, skipped, [tmp_path], 1, "instance")
