"""Aspect-ratio buckets: sizes, choice of bucket, fitting, batches of one bucket, and a job on wide photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from dreambooth_trainer.families.buckets import bucket_sizes, bucket_step, fit_to_bucket, nearest_bucket
from dreambooth_trainer.loop import batch_indices, bucket_batch_indices


def test_sdxl_buckets_at_1024() -> None:
    assert bucket_step(1024, 32) == 64 and bucket_step(64, 4) == 4
    sizes = bucket_sizes(1024, 64)
    for size in [(1024, 1024), (1152, 896), (896, 1152), (1216, 832), (1344, 768), (768, 1344)]:
        assert size in sizes
    assert all(w * h <= 1024 * 1024 and w % 64 == 0 and h % 64 == 0 for w, h in sizes)
    assert all(0.5 <= w / h <= 2 for w, h in sizes)


def test_a_photo_goes_to_the_bucket_nearest_its_aspect_ratio() -> None:
    sizes = bucket_sizes(1024, 64)
    assert nearest_bucket(4000, 3000, sizes) == (1152, 896)  # 4:3 = 1.33; 1152/896 = 1.29, 1216/832 = 1.46
    assert nearest_bucket(3000, 4000, sizes) == (896, 1152)
    assert nearest_bucket(500, 500, sizes) == (1024, 1024)


def test_fitting_covers_the_bucket_and_crops_only_the_overflow() -> None:
    image = Image.new("RGB", (400, 300), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 300))  # a blue strip on the left edge
    pixels = fit_to_bucket(image, (1152, 896))
    assert pixels.shape == (896, 1152, 3)
    # scale 3.0 (to cover 1152 wide: 1200 x 900), crop 24 px each side horizontally, 2 px vertically
    assert tuple(pixels[448, 3]) == (0, 0, 255) and tuple(pixels[448, 10]) == (255, 0, 0)


def test_batches_hold_one_bucket_and_one_bucket_batches_as_the_loop_does() -> None:
    square = [(8, 8, 3)] * 5
    for step in range(7):
        assert bucket_batch_indices(square, 2, step, 3, 0) == batch_indices(5, 2, step, 3, 0)
    mixed = [(8, 8, 3), (8, 12, 3), (8, 8, 3), (8, 12, 3), (8, 12, 3)]
    seen = set()
    for step in range(10):
        rows = bucket_batch_indices(mixed, 2, step, 3, 0)
        assert len({mixed[i] for i in rows}) == 1
        assert rows == bucket_batch_indices(mixed, 2, step, 3, 0)  # a function of (seed, step)
        seen.update(rows)
    assert seen == set(range(5))


@pytest.fixture
def wide_photos(tmp_path: Path, subject_images: Path) -> Path:
    folder = tmp_path / "wide"
    folder.mkdir()
    for index, path in enumerate(sorted(subject_images.iterdir())):
        with Image.open(path) as image:
            size = (96, 48) if index % 2 else (48, 48)
            image.convert("RGB").resize(size).save(folder / f"photo-{index}.png")
    return folder


def test_a_job_on_wide_photos_trains_in_buckets_with_square_class_images(
    new_job, tiny_family_model, wide_photos: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hp = {
        "training_method": "lora",
        "resolution": "64",
        "max_train_steps": "4",
        "train_batch_size": "2",
        "with_prior_preservation": "true",
        "class_prompt": "a photo of a dog",
        "num_class_images": "2",
        "class_inference_steps": "1",
        "num_samples": "0",
    }
    job = new_job(hp, images=False, model=False)
    job.add_channel("images", wide_photos)
    job.add_channel("model", tiny_family_model("flux"))
    assert job.run() == 0, job.failure
    record = json.loads((job.model_dir / "dreambooth.json").read_text())
    assert record["steps"] == 4 and record["instance_images"] == 4
    # 2:1 photos in the 88 x 44 bucket (area <= 64², sides multiples of 4), square ones at 64 x 64; the
    # square class images then go through the model in their own pass
    assert "aspect-ratio buckets (width x height: images): 64x64: 2, 88x44: 2" in caplog.text
