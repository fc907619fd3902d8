"""The one table of model families and base-model aliases, as data. Pure (stdlib only).

The trainer's ``families/registry.py`` reads it to detect and load a family; the Lambdas (which cannot import
torch or diffusers) read it to resolve aliases, pick a job's instance type, training method, minimum photo
side and volume size before any GPU is paid for. Adding a family is one more row here plus its module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyDefaults:
    """What a job gets when it does not say otherwise."""

    resolution: int
    max_train_steps: int
    learning_rate: float
    lora_rank: int
    lora_alpha: int
    instance_type: str
    min_image_side: int
    mixed_precision: str


@dataclass(frozen=True)
class FamilyEntry:
    name: str
    pipeline_class_names: tuple[str, ...]
    single_file_markers: tuple[str, ...]  # a weight name starting with one of these means this family
    defaults: FamilyDefaults
    description: str
    # What the trainer trains for this family (families/training.py refuses anything else).
    training_methods: tuple[str, ...] = ("lora",)
    # SageMaker volume: the base model's download (weights the trainer loads) plus the Hub cache, class
    # images, checkpoints and the export, with room to spare.
    volume_size_gb: int = 50


@dataclass(frozen=True)
class BaseModelAlias:
    alias: str
    hub_id: str
    family: str
    licence: str
    commercial_use: bool


# Markers are checked in table order: SDXL before SD (both have model.diffusion_model.* UNet keys).
# Volume sizes from the bases' published weights: SD 1.5 ~5 GB (fp32 UNet 3.4 GB), SDXL ~14 GB fp32 / ~7 GB
# fp16, FLUX.1-dev ~34 GB (transformer 23.8 GB + T5-XXL 9.5 GB, bf16), Z-Image ~20 GB (6B transformer +
# Qwen3-4B encoder, bf16).
FAMILIES: dict[str, FamilyEntry] = {
    entry.name: entry
    for entry in (
        FamilyEntry(
            "sdxl",
            ("StableDiffusionXLPipeline",),
            ("conditioner.embedders.1.",),
            FamilyDefaults(1024, 500, 1e-4, 16, 16, "ml.g4dn.xlarge", 512, "fp16"),
            "Stable Diffusion XL (UNet, two CLIP text encoders)",
            volume_size_gb=50,
        ),
        FamilyEntry(
            "sd",
            ("StableDiffusionPipeline",),
            ("cond_stage_model.", "model.diffusion_model.input_blocks."),
            FamilyDefaults(512, 400, 1e-4, 4, 4, "ml.g4dn.xlarge", 64, "fp16"),
            "Stable Diffusion 1.x / 2.x",
            training_methods=("full", "lora"),
            volume_size_gb=50,
        ),
        FamilyEntry(
            "flux",
            ("FluxPipeline",),
            ("double_blocks.0.", "model.diffusion_model.double_blocks.0."),
            FamilyDefaults(512, 500, 1e-4, 16, 16, "ml.g6.xlarge", 512, "bf16"),
            "FLUX.1 (rectified-flow MMDiT, CLIP + T5)",
            volume_size_gb=100,
        ),
        FamilyEntry(
            "zimage",
            ("ZImagePipeline",),
            ("context_refiner.0.", "model.diffusion_model.context_refiner.0."),
            FamilyDefaults(1024, 500, 1e-4, 16, 16, "ml.g6.xlarge", 512, "bf16"),
            "Z-Image (single-stream DiT, Qwen3 text encoder)",
            volume_size_gb=100,
        ),
    )
}

# Hub ids without a revision: no network here to read the commit each points to; pin one when deploying.
ALIASES: dict[str, BaseModelAlias] = {
    alias.alias: alias
    for alias in (
        BaseModelAlias(
            "sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd", "CreativeML OpenRAIL-M", True
        ),
        BaseModelAlias(
            "sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "sdxl", "CreativeML OpenRAIL++-M", True
        ),
        BaseModelAlias(
            "flux1-dev",
            "black-forest-labs/FLUX.1-dev",
            "flux",
            "FLUX.1 [dev] Non-Commercial License (no commercial use of the model or its outputs' service)",
            False,
        ),
        BaseModelAlias("z-image", "Tongyi-MAI/Z-Image", "zimage", "Apache-2.0", True),
    )
}


def alias_entry(base_model: str) -> BaseModelAlias | None:
    """The alias a base model names: by its short name (`sdxl`) or by its pinned Hub id."""
    text = base_model.strip()
    alias = ALIASES.get(text.lower())
    if alias is not None:
        return alias
    return next((a for a in ALIASES.values() if a.hub_id.lower() == text.lower()), None)


def resolve_alias(base_model: str) -> str:
    """A short alias (`sdxl`, `flux1-dev`, …) -> its Hub id; anything else unchanged."""
    alias = ALIASES.get(base_model.strip().lower())
    return alias.hub_id if alias else base_model


def family_of_pipeline_class(class_name: str) -> str | None:
    """model_index.json's ``_class_name`` -> the family, or None for a pipeline no family handles."""
    return next((e.name for e in FAMILIES.values() if class_name in e.pipeline_class_names), None)


def family_of_weight_names(names: list[str]) -> str | None:
    """A single file's weight names -> the family, or None."""
    for entry in FAMILIES.values():
        if any(name.startswith(entry.single_file_markers) for name in names):
            return entry.name
    return None


def pipeline_class_names() -> list[str]:
    return [name for entry in FAMILIES.values() for name in entry.pipeline_class_names]
