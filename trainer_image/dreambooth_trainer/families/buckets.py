"""Aspect-ratio buckets: photos keep their shape instead of being cropped square.

Each photo is resized to cover the bucket nearest its aspect ratio (about resolution² pixels, sides a multiple
of `step`) and centre-cropped by the small overflow. The loop's batches hold images of one bucket only
(loop.bucket_batch_indices); which batch a step gets still depends only on (seed, step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image


def bucket_step(resolution: int, multiple: int) -> int:
    """Side granularity: 1/16 of the resolution (64 px at 1024), rounded to what the model needs."""
    return multiple * max(1, resolution // 16 // multiple)


def bucket_sizes(resolution: int, step: int, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """(width, height) pairs with sides multiples of step, at most resolution² pixels, aspect within
    1/max_ratio..max_ratio; for each width the tallest height that fits."""
    area = resolution * resolution
    sizes = []
    for width in range(step, int(resolution * max_ratio) + 1, step):
        height = (area // width) // step * step
        if height >= step and 1 / max_ratio <= width / height <= max_ratio:
            sizes.append((width, height))
    return sizes


def nearest_bucket(width: int, height: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket closest in log aspect ratio; among equals, the larger one."""
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1]))


def fit_to_bucket(image: Image.Image, bucket: tuple[int, int]) -> np.ndarray:
    """Resize to cover the bucket, centre-crop the overflow: (height, width, 3) uint8."""
    width, height = bucket
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8).copy()
