"""A training job on a non-SD family (SDXL, FLUX.1, Z-Image): the same steps and outputs as the SD job
(class images, training, samples, export, record, upload), with the family doing the model-specific work."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data import TrainingImage, load_images
from ..export import OUTPUT_DTYPES, TRAINING_RECORD
from ..hyperparameters import TrainingHyperparameters
from ..loop import LoopResult
from ..model_loading import BaseModelSource
from ..sagemaker_contract import SageMakerPaths, StopSignal, job_name
from ..samples import SAMPLES_DIR, sample_file
from .base import FamilyModel, ModelFamily
from .buckets import bucket_sizes, bucket_step, fit_to_bucket, nearest_bucket
from .registry import get_family
from .training import apply_family_defaults, check_family_job, resolution_multiple, train_family

log = logging.getLogger(__name__)


def render_family_samples(
    family: ModelFamily, model: FamilyModel, hp: TrainingHyperparameters, out_dir: Path
) -> list[str]:
    """hp.num_samples images of the instance prompt from the trained adapter on the base model."""
    from ..errors import SampleRenderingError

    if hp.num_samples == 0:
        return []
    (out_dir / SAMPLES_DIR).mkdir(parents=True, exist_ok=True)
    model.pipeline.to("cuda" if torch.cuda.is_available() else "cpu")
    written: list[str] = []
    try:
        for index in range(hp.num_samples):
            image = family.render(
                model,
                hp.instance_prompt,
                steps=hp.sample_inference_steps,
                guidance=hp.sample_guidance_scale,
                size=hp.resolution,
                seed=hp.seed + index,
            )
            image.save(out_dir / sample_file(index), format="PNG")
            written.append(sample_file(index))
    except Exception as exc:
        raise SampleRenderingError(
            f"rendering sample image {len(written) + 1} of {hp.num_samples} after training failed: "
            f"{type(exc).__name__}: {exc} (no model was written; num_samples=0 skips the samples)"
        ) from exc
    return written


def export_family_model(
    family: ModelFamily,
    model: FamilyModel,
    result: LoopResult,
    hp: TrainingHyperparameters,
    out_dir: Path,
    extra: dict[str, Any],
    samples: list[str],
) -> dict[str, Any]:
    """The LoRA files and the training record (same fields as the SD record, plus family and lora_files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = family.export_lora(model, out_dir, hp.model_name, OUTPUT_DTYPES[hp.output_dtype])
    record = {
        "kind": "lora",
        "family": model.family,
        "model_name": hp.model_name,
        "prompt": hp.instance_prompt,
        "class_prompt": hp.class_prompt if hp.with_prior_preservation else None,
        "base_model": model.source.location,
        "resolution": hp.resolution,
        "steps": result.global_step,
        "output_dtype": hp.output_dtype,
        "lora_weight_name": files[0],
        "lora_files": files,
        "single_file_name": None,
        "samples": list(samples),
        "hyperparameters": hp.to_sagemaker_strings(),
        **extra,
    }
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
    log.info("%s LoRA written to %s: %s", model.family, out_dir, ", ".join(files))
    return record


def load_bucketed(
    model: FamilyModel, hp: TrainingHyperparameters, paths: SageMakerPaths
) -> list[TrainingImage]:
    """The instance photos again (the job read them square, before it knew the family), each fitted to its
    aspect-ratio bucket."""
    from ..job import INSTANCE_CHANNEL

    buckets = bucket_sizes(hp.resolution, bucket_step(hp.resolution, resolution_multiple(model)))

    def fit(image: Image.Image) -> np.ndarray:
        return fit_to_bucket(image, nearest_bucket(image.width, image.height, buckets))

    folders = (
        [paths.resolve(hp.instance_data_dir)] if hp.instance_data_dir else [paths.channel(INSTANCE_CHANNEL)]
    )
    images, _ = load_images(folders, hp.resolution, hp.center_crop, hp.seed, fit=fit)
    sizes = Counter(f"{image.pixels.shape[1]}x{image.pixels.shape[0]}" for image in images)
    log.info(
        "aspect-ratio buckets (width x height: images): %s",
        ", ".join(f"{k}: {v}" for k, v in sorted(sizes.items())),
    )
    return images


def run_family_job(
    family_name: str,
    source: BaseModelSource,
    hp: TrainingHyperparameters,
    paths: SageMakerPaths,
    stop: StopSignal,
) -> Any:
    """After the job read and checked the photos and found a non-SD family in the base model."""
    from ..job import JobResult, prepare_class_images, publish, share_class_images

    family = get_family(family_name)
    log.info("base model family: %s", family_name)
    hp, lines = apply_family_defaults(hp, family_name)
    for line in lines:
        log.info(line)
    model = family.load(source)
    check_family_job(model, hp)
    instance = load_bucketed(model, hp, paths)
    class_images: list[TrainingImage] = []
    generated: list[Path] = []
    if hp.with_prior_preservation:
        stop.phase = "preparing class images"
        class_images, generated = prepare_class_images(hp, paths, model)
        stop.phase = "sharing class images"
        share_class_images(hp, paths, generated)

    stop.phase = "training"
    result = train_family(
        family, model, instance, class_images, hp, checkpoint_dir=paths.checkpoints_dir, stop=stop
    )
    out_dir = paths.resolve(hp.models_path) if hp.models_path else paths.model_dir
    extra = {"job_name": job_name(), "instance_images": len(instance), "class_images": len(class_images)}
    stop.phase = "rendering sample images"
    samples = render_family_samples(family, model, hp, out_dir)
    stop.phase = "writing the model"
    record = export_family_model(family, model, result, hp, out_dir, extra, samples)
    stop.phase = "uploading the model"
    manifest = publish(out_dir, hp, record)
    return JobResult(hp, out_dir, record, manifest, result, generated)
