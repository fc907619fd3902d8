"""One training job, start to finish, for every model family: settings, data, base model (its family found
in it), class images, the loop, samples, export, record, upload. The family does the model-specific parts
(families/base.ModelFamily): defaults, what it refuses, loading, rendering, the exported files.

Cheap checks come first (hyperparameters, images) so a bad job fails in seconds, before gigabytes are loaded.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .class_images import generate_class_images
from .data import TrainingImage, load_images, require_images
from .errors import BaseModelError, TrainingDataError
from .export import TRAINING_RECORD
from .families.base import FamilyModel
from .families.buckets import bucket_sizes, bucket_step, fit_to_bucket, nearest_bucket
from .families.quantization import choose_base_quantization
from .families.registry import family_of_base_model, get_family, resolve_alias
from .families.rules import check_family_job, resolution_multiple
from .hyperparameters import TrainingHyperparameters
from .loop import HALF, LoopResult, train
from .model_loading import resolve_base_model
from .s3_upload import (
    MANIFEST_NAME,
    list_model_files,
    model_manifest,
    upload_class_images,
    upload_model_folder,
)
from .sagemaker_contract import SageMakerPaths, StopSignal, job_name
from .samples import render_samples
from .single_file import SingleFileExportError, check_supported
from .startup import CollectorPause
from .subject_defaults import apply_subject_defaults
from .vram_presets import apply_vram_presets

log = logging.getLogger(__name__)

INSTANCE_CHANNEL = "images"
CLASS_CHANNEL = "class_images"
GENERATED_CLASS_DIR = "class_images"  # under the checkpoints folder, so spot restarts keep them


@dataclass
class JobResult:
    hyperparameters: TrainingHyperparameters
    output_dir: Path
    record: dict[str, Any]
    manifest: dict[str, Any] | None
    loop: LoopResult
    generated_class_images: list[Path]


def detect_vram_gb() -> float | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


def quiet_libraries() -> None:
    """Progress bars are noise in CloudWatch; the metrics line says how training goes."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def check_single_file_export(hp: TrainingHyperparameters, parts: Any) -> None:
    """Before training, not after: every weight name must have an original-layout name (parts: loaded SD
    parts or pipeline; only SD trains full models)."""
    if hp.training_method != "full" or not hp.export_single_file:
        return
    try:
        check_supported(parts.unet, parts.vae, parts.text_encoder)
    except SingleFileExportError as exc:
        raise BaseModelError(
            f"this base model cannot be exported as a single-file checkpoint ({exc}); "
            "set export_single_file=false to train it without one"
        ) from None


def instance_folders(hp: TrainingHyperparameters, paths: SageMakerPaths) -> list[Path]:
    return (
        [paths.resolve(hp.instance_data_dir)] if hp.instance_data_dir else [paths.channel(INSTANCE_CHANNEL)]
    )


def load_bucketed(
    model: FamilyModel, hp: TrainingHyperparameters, paths: SageMakerPaths
) -> list[TrainingImage]:
    """The instance photos again (the job read them square, before it knew the family), each fitted to its
    aspect-ratio bucket."""
    buckets = bucket_sizes(hp.resolution, bucket_step(hp.resolution, resolution_multiple(model)))

    def fit(image: Image.Image) -> np.ndarray:
        return fit_to_bucket(image, nearest_bucket(image.width, image.height, buckets))

    images, _ = load_images(instance_folders(hp, paths), hp.resolution, hp.center_crop, hp.seed, fit=fit)
    sizes = Counter(f"{image.pixels.shape[1]}x{image.pixels.shape[0]}" for image in images)
    log.info(
        "aspect-ratio buckets (width x height: images): %s",
        ", ".join(f"{k}: {v}" for k, v in sorted(sizes.items())),
    )
    return images


def prepare_class_images(
    hp: TrainingHyperparameters, paths: SageMakerPaths, model: FamilyModel
) -> tuple[list[TrainingImage], list[Path]]:
    """Existing class images (channel + earlier generations), topped up to num_class_images by generation."""
    channel = paths.resolve(hp.class_data_dir) if hp.class_data_dir else paths.channel(CLASS_CHANNEL)
    generated_dir = paths.checkpoints_dir / GENERATED_CLASS_DIR
    folders = [channel, generated_dir]
    existing, _ = load_images(folders, hp.resolution, hp.center_crop, hp.seed + 1)
    missing = hp.num_class_images - len(existing)
    log.info(
        "class images: %d usable found, %d wanted, %d to generate",
        len(existing),
        hp.num_class_images,
        max(0, missing),
    )
    new_files: list[Path] = []
    if missing > 0:
        cuda = torch.cuda.is_available()
        device = torch.device("cuda" if cuda else "cpu")
        autocast_dtype = HALF.get(hp.mixed_precision) if cuda else None  # the loop logs the CPU fallback
        new_files = generate_class_images(model.pipeline, hp, missing, generated_dir, device, autocast_dtype)
        existing, _ = load_images(folders, hp.resolution, hp.center_crop, hp.seed + 1)
    class_images = existing[: hp.num_class_images] if hp.num_class_images else existing
    if not class_images:
        raise TrainingDataError(
            "with_prior_preservation needs class images: upload some to the 'class_images' channel "
            "or set num_class_images > 0 to generate them"
        )
    return class_images, new_files


def share_class_images(
    hp: TrainingHyperparameters, paths: SageMakerPaths, generated: list[Path]
) -> list[str]:
    """With class_images_output_s3_uri and new generations: upload this job's generated class images, so the
    next job with the same class prompt, base model and resolution gets them as its channel.

    The whole generated folder goes up, not only this attempt's files: a spot restart that interrupted
    generation would otherwise never share the first attempt's images. It holds only images this run made
    (never the channel's), and their keys are stable, so a repeat upload overwrites identical bytes.
    """
    if not generated or not hp.class_images_output_s3_uri:
        return []
    if hp.model_hand_over == "sagemaker":
        log.info("class images not shared: the job has no network (model_hand_over=sagemaker)")
        return []
    files = sorted((paths.checkpoints_dir / GENERATED_CLASS_DIR).glob("class-*.png"))
    return upload_class_images(files, hp.class_images_output_s3_uri, job_name())


def write_record(
    out_dir: Path,
    hp: TrainingHyperparameters,
    model: FamilyModel,
    result: LoopResult,
    files: dict[str, Any],
    extra: dict[str, Any],
    samples: list[str],
) -> dict[str, Any]:
    """The training record (dreambooth.json), the same fields for every family; files: what the family's
    export wrote (kind, lora_weight_name, lora_files, single_file_name)."""
    record = {
        **files,
        "family": model.family,
        "model_name": hp.model_name,
        "prompt": hp.instance_prompt,
        "class_prompt": hp.class_prompt if hp.with_prior_preservation else None,
        "base_model": model.source.location,
        "resolution": hp.resolution,
        "steps": result.global_step,
        "output_dtype": hp.output_dtype,
        "samples": list(samples),
        "hyperparameters": hp.to_sagemaker_strings(),
        **extra,
    }
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
    log.info("model written to %s (%s %s, %s)", out_dir, model.family, record["kind"], hp.output_dtype)
    return record


def publish(out_dir: Path, hp: TrainingHyperparameters, record: dict[str, Any]) -> dict[str, Any] | None:
    """With model_output_s3_uri: upload, then keep only manifest.json and dreambooth.json in /opt/ml/model,
    so SageMaker's model.tar.gz stays tiny and still says where the model is. With model_hand_over=sagemaker
    (no network): write manifest.json next to the model instead; the pipeline unpacks model.tar.gz there."""
    if not hp.model_output_s3_uri:
        return None
    fields = {
        "job_name": job_name(),
        "kind": record["kind"],
        "family": record["family"],
        "model_name": record["model_name"],
        "prompt": record["prompt"],
        "base_model": record["base_model"],
        "lora_weight_name": record["lora_weight_name"],
        "lora_files": record["lora_files"],
        "kohya_lora_name": record.get("kohya_lora_name"),
        "single_file_name": record["single_file_name"],
        "samples": record["samples"],
    }
    if hp.model_hand_over == "sagemaker":
        manifest = model_manifest(list_model_files(out_dir), hp.model_output_s3_uri, fields)
        (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        log.info("model left in %s with its manifest: SageMaker's model.tar.gz hands it over", out_dir)
        return manifest
    manifest = upload_model_folder(out_dir, hp.model_output_s3_uri, fields)
    for path in out_dir.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        elif path.name != TRAINING_RECORD:
            path.unlink()
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return manifest


def run_job(
    hp: TrainingHyperparameters,
    paths: SageMakerPaths,
    *,
    stop: StopSignal | None = None,
    start: CollectorPause | None = None,
) -> JobResult:
    """start: the entrypoint's paused collector, resumed here once the base model is loaded."""
    stop = stop or StopSignal()
    if hp.num_threads:
        torch.set_num_threads(hp.num_threads)
    quiet_libraries()

    stop.phase = "reading the instance images"
    instance_dirs = instance_folders(hp, paths)
    instance, skipped = load_images(instance_dirs, hp.resolution, hp.center_crop, hp.seed)
    require_images(instance, skipped, instance_dirs, hp.min_instance_images, "instance")
    log.info("instance images: %d usable, %d skipped", len(instance), len(skipped))
    stop.phase = "loading the base model"
    hp = hp.model_copy(
        update={"pretrained_model_name_or_path": resolve_alias(hp.pretrained_model_name_or_path)}
    )
    source = resolve_base_model(hp, paths)
    family = get_family(family_of_base_model(source))
    log.info("base model family: %s", family.name)
    # Defaults that depend on the method, the subject and the photo count; then what the GPU can hold.
    hp, defaults = apply_subject_defaults(
        hp, len(instance), text_encoder_trainable=bool(family.text_encoder_lora_targets)
    )
    hp, changes = apply_vram_presets(hp, detect_vram_gb())
    for line in defaults + changes:
        log.info(line)
    hp, family_changes = family.apply_defaults(hp)
    for line in family_changes:
        log.info(line)
    quantization, why = choose_base_quantization(hp.base_quantization, family.name, detect_vram_gb())
    log.info("base weights: %s (%s)", quantization, why)
    model = family.load(source, quantization=quantization)
    check_family_job(family, model, hp)
    check_single_file_export(hp, model.pipeline)
    if start is not None:
        start.model_loaded()
    if family.aspect_buckets:
        instance = load_bucketed(model, hp, paths)
    class_images: list[TrainingImage] = []
    generated: list[Path] = []
    if hp.with_prior_preservation:
        stop.phase = "preparing class images"
        class_images, generated = prepare_class_images(hp, paths, model)
        stop.phase = "sharing class images"
        share_class_images(hp, paths, generated)  # before training: a later failure still leaves them

    stop.phase = "training"
    result = train(
        model, instance, class_images, hp, family=family, checkpoint_dir=paths.checkpoints_dir, stop=stop
    )

    out_dir = paths.resolve(hp.models_path) if hp.models_path else paths.model_dir
    extra = {"job_name": job_name(), "instance_images": len(instance), "class_images": len(class_images)}
    stop.phase = "rendering sample images"
    samples = render_samples(family, model, hp, out_dir)  # before the export casts the modules
    stop.phase = "writing the model"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = family.export(model, result, hp, out_dir)
    record = write_record(out_dir, hp, model, result, files, extra, samples)
    stop.phase = "uploading the model"
    manifest = publish(out_dir, hp, record)
    return JobResult(hp, out_dir, record, manifest, result, generated)
