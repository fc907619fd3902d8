"""Prior preservation's class images: generate exactly the missing ones with the base model already in memory.

They are written under /opt/ml/checkpoints/class_images, which SageMaker syncs to S3, so a restarted spot job
finds them instead of generating them again; each file is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .hyperparameters import TrainingHyperparameters

log = logging.getLogger(__name__)


def _next_index(folder: Path) -> int:
    indices = [
        int(p.stem.split("-")[-1]) for p in folder.glob("class-*.png") if p.stem.split("-")[-1].isdigit()
    ]
    return max(indices, default=-1) + 1


def generate_class_images(
    pipe: Any,
    hp: TrainingHyperparameters,
    count: int,
    folder: Path,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> list[Path]:
    """Generate `count` images of `class_prompt` in batches of sample_batch_size with the base model's own
    pipeline (the family's, over the modules in memory); returns the new files."""

    if count <= 0:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    start = _next_index(folder)
    written: list[Path] = []
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    log.info("generating %d class image(s) of %r, %d per batch", count, hp.class_prompt, hp.sample_batch_size)
    with torch.inference_mode(), autocast:
        while len(written) < count:
            batch = min(hp.sample_batch_size, count - len(written))
            index = start + len(written)
            generator = torch.Generator(device="cpu").manual_seed(hp.seed + index)
            images = pipe(
                [hp.class_prompt] * batch,
                num_inference_steps=hp.class_inference_steps,
                guidance_scale=hp.class_guidance_scale,
                height=hp.resolution,
                width=hp.resolution,
                generator=generator,
            ).images
            for offset, image in enumerate(images):
                path = folder / f"class-{index + offset:06d}.png"
                partial = path.with_suffix(".png.partial")
                image.save(partial, format="PNG")
                os.replace(partial, path)
                written.append(path)
    return written
