"""One training job, start to finish: settings, data, base model, class images, the loop, samples, export,
upload.

Cheap checks come first (hyperparameters, images) so a bad job fails in seconds, before gigabytes are loaded.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .class_images import generate_class_images
from .data import TrainingImage, load_images, require_images
from .errors import BaseModelError, TrainingDataError
from .export import TRAINING_RECORD, export_model
from .hyperparameters import HyperparameterError, TrainingHyperparameters
from .loop import HALF, LoopResult, train
from .model_loading import ModelParts, load_model_parts, resolve_base_model
from .s3_upload import MANIFEST_NAME, upload_class_images, upload_model_folder
from .sagemaker_contract import SageMakerPaths, StopSignal, job_name
from .samples import render_samples
from .single_file import SingleFileExportError, check_supported
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


def check_resolution(hp: TrainingHyperparameters, parts: ModelParts) -> None:
    vae_factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
    unet_factor = 2 ** (len(parts.unet.config.block_out_channels) - 1)
    if hp.resolution % (vae_factor * unet_factor):
        raise HyperparameterError(
            f"hyperparameter 'resolution' = {hp.resolution}: this base model needs a multiple of "
            f"{vae_factor * unet_factor} (e.g. 512 or 768 for SD 1.x)"
        )


def check_single_file_export(hp: TrainingHyperparameters, parts: ModelParts) -> None:
    """Before training, not after: every weight name must have an original-layout name."""
    if hp.training_method != "full" or not hp.export_single_file:
        return
    try:
        check_supported(parts.unet, parts.vae, parts.text_encoder)
    except SingleFileExportError as exc:
        raise BaseModelError(
            f"this base model cannot be exported as a single-file checkpoint ({exc}); "
            "set export_single_file=false to train it without one"
        ) from None


def prepare_class_images(
    hp: TrainingHyperparameters, paths: SageMakerPaths, parts: ModelParts
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
        new_files = generate_class_images(parts, hp, missing, generated_dir, device, autocast_dtype)
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
    files = sorted((paths.checkpoints_dir / GENERATED_CLASS_DIR).glob("class-*.png"))
    return upload_class_images(files, hp.class_images_output_s3_uri, job_name())


def publish(out_dir: Path, hp: TrainingHyperparameters, record: dict[str, Any]) -> dict[str, Any] | None:
    """With model_output_s3_uri: upload, then keep only manifest.json and dreambooth.json in /opt/ml/model,
    so SageMaker's model.tar.gz stays tiny and still says where the model is."""
    if not hp.model_output_s3_uri:
        return None
    fields = {
        "job_name": job_name(),
        "kind": record["kind"],
        "model_name": record["model_name"],
        "prompt": record["prompt"],
        "base_model": record["base_model"],
        "lora_weight_name": record["lora_weight_name"],
        "kohya_lora_name": record["kohya_lora_name"],
        "single_file_name": record["single_file_name"],
        "samples": record["samples"],
    }
    manifest = upload_model_folder(out_dir, hp.model_output_s3_uri, fields)
    for path in out_dir.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        elif path.name != TRAINING_RECORD:
            path.unlink()
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return manifest


def run_job(
    hp: TrainingHyperparameters, paths: SageMakerPaths, *, stop: StopSignal | None = None
) -> JobResult:
    stop = stop or StopSignal()
    if hp.num_threads:
        torch.set_num_threads(hp.num_threads)
    quiet_libraries()
    hp, changes = apply_vram_presets(hp, detect_vram_gb())
    for line in changes:
        log.info(line)

    stop.phase = "reading the instance images"
    instance_dirs = (
        [paths.resolve(hp.instance_data_dir)] if hp.instance_data_dir else [paths.channel(INSTANCE_CHANNEL)]
    )
    instance, skipped = load_images(instance_dirs, hp.resolution, hp.center_crop, hp.seed)
    require_images(instance, skipped, instance_dirs, hp.min_instance_images, "instance")
    log.info("instance images: %d usable, %d skipped", len(instance), len(skipped))

    stop.phase = "loading the base model"
    parts = load_model_parts(resolve_base_model(hp, paths))
    check_resolution(hp, parts)
    check_single_file_export(hp, parts)
    class_images: list[TrainingImage] = []
    generated: list[Path] = []
    if hp.with_prior_preservation:
        stop.phase = "preparing class images"
        class_images, generated = prepare_class_images(hp, paths, parts)
        stop.phase = "sharing class images"
        share_class_images(hp, paths, generated)  # before training: a later failure still leaves them

    stop.phase = "training"
    result = train(parts, instance, class_images, hp, checkpoint_dir=paths.checkpoints_dir, stop=stop)

    out_dir = paths.resolve(hp.models_path) if hp.models_path else paths.model_dir
    extra = {"job_name": job_name(), "instance_images": len(instance), "class_images": len(class_images)}
    stop.phase = "rendering sample images"
    samples = render_samples(parts, result, hp, out_dir)  # before the export casts the modules
    stop.phase = "writing the model"
    record = export_model(parts, result, hp, out_dir, extra, samples)
    stop.phase = "uploading the model"
    manifest = publish(out_dir, hp, record)
    return JobResult(hp, out_dir, record, manifest, result, generated)
