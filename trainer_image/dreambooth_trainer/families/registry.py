"""The one table of model families: how each is recognised, its defaults, and the short base-model aliases.

Detection never needs the job to name a family: a diffusers folder says it in model_index.json's
`_class_name`, a single file by its weight names. The service reads defaults, minimum image side, default
instance type and alias resolution from here (`family_defaults`, `min_image_side`, `default_instance_type`,
`resolve_alias`, `family_of_base_model`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BaseModelError
from ..model_loading import BaseModelSource
from .base import FamilyDefaults, ModelFamily

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FamilyEntry:
    name: str
    pipeline_class_names: tuple[str, ...]
    single_file_markers: tuple[str, ...]  # a weight name starting with one of these means this family
    defaults: FamilyDefaults
    description: str


@dataclass(frozen=True)
class BaseModelAlias:
    alias: str
    hub_id: str
    family: str
    licence: str
    commercial_use: bool


# Markers are checked in table order: SDXL before SD (both have model.diffusion_model.* UNet keys).
FAMILIES: dict[str, FamilyEntry] = {
    entry.name: entry
    for entry in (
        FamilyEntry(
            "sdxl",
            ("StableDiffusionXLPipeline",),
            ("conditioner.embedders.1.",),
            FamilyDefaults(1024, 500, 1e-4, 16, 16, "ml.g4dn.xlarge", 512, "fp16"),
            "Stable Diffusion XL (UNet, two CLIP text encoders)",
        ),
        FamilyEntry(
            "sd",
            ("StableDiffusionPipeline",),
            ("cond_stage_model.", "model.diffusion_model.input_blocks."),
            FamilyDefaults(512, 400, 1e-4, 4, 4, "ml.g4dn.xlarge", 64, "fp16"),
            "Stable Diffusion 1.x / 2.x",
        ),
        FamilyEntry(
            "flux",
            ("FluxPipeline",),
            ("double_blocks.0.", "model.diffusion_model.double_blocks.0."),
            FamilyDefaults(512, 500, 1e-4, 16, 16, "ml.g6.xlarge", 512, "bf16"),
            "FLUX.1 (rectified-flow MMDiT, CLIP + T5)",
        ),
        FamilyEntry(
            "zimage",
            ("ZImagePipeline",),
            ("context_refiner.0.", "model.diffusion_model.context_refiner.0."),
            FamilyDefaults(1024, 500, 1e-4, 16, 16, "ml.g6.xlarge", 512, "bf16"),
            "Z-Image (single-stream DiT, Qwen3 text encoder)",
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


def resolve_alias(base_model: str) -> str:
    """A short alias (`sdxl`, `flux1-dev`, …) -> its Hub id; anything else unchanged."""
    alias = ALIASES.get(base_model.strip().lower())
    return alias.hub_id if alias else base_model


def family_entry(name: str) -> FamilyEntry:
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(FAMILIES)
        raise BaseModelError(f"unknown model family {name!r}; known families: {known}") from None


def family_defaults(name: str) -> FamilyDefaults:
    return family_entry(name).defaults


def min_image_side(name: str) -> int:
    return family_entry(name).defaults.min_image_side


def default_instance_type(name: str) -> str:
    return family_entry(name).defaults.instance_type


def family_from_model_index(model_index: dict) -> str:
    class_name = model_index.get("_class_name", "")
    for entry in FAMILIES.values():
        if class_name in entry.pipeline_class_names:
            return entry.name
    known = ", ".join(name for entry in FAMILIES.values() for name in entry.pipeline_class_names)
    raise BaseModelError(
        f"base model pipeline {class_name or '(no _class_name)'} is not a supported family ({known})"
    )


def family_from_weight_names(names: Iterable[str]) -> str:
    names = list(names)
    for entry in FAMILIES.values():
        if any(name.startswith(entry.single_file_markers) for name in names):
            return entry.name
    raise BaseModelError(
        "the single-file checkpoint's weights match no supported family (SD 1.x/2.x, SDXL, FLUX.1, Z-Image); "
        "use a diffusers folder or a checkpoint of one of these"
    )


def _single_file_weight_names(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def family_of_base_model(source: BaseModelSource) -> str:
    """The family of a resolved base model: folder (model_index.json), single file (its keys, or its
    config folder), Hub id (the alias table, else the Hub's model_index.json)."""
    if source.kind == "folder":
        return family_from_model_index(json.loads((Path(source.location) / "model_index.json").read_text()))
    if source.kind == "single_file":
        path = Path(source.location)
        if path.suffix.lower() == ".safetensors":
            return family_from_weight_names(_single_file_weight_names(path))
        if source.config and (Path(source.config) / "model_index.json").is_file():
            return family_from_model_index(json.loads((Path(source.config) / "model_index.json").read_text()))
        return "sd"  # .ckpt files are the SD 1.x/2.x era's format
    for alias in ALIASES.values():
        if alias.hub_id == source.location:
            return alias.family
    from diffusers import DiffusionPipeline

    try:
        return family_from_model_index(DiffusionPipeline.load_config(source.location))
    except BaseModelError:
        raise
    except Exception as exc:
        raise BaseModelError(
            f"cannot read model_index.json of {source.location}: {type(exc).__name__}: {exc}"
        ) from exc


def get_family(name: str, **options: object) -> ModelFamily:
    """The family's implementation (imported on demand: each pulls its own diffusers classes)."""
    family_entry(name)
    if name == "sd":
        from .sd import StableDiffusionFamily

        return StableDiffusionFamily()
    if name == "sdxl":
        from .sdxl import StableDiffusionXLFamily

        return StableDiffusionXLFamily()
    if name == "flux":
        from .flux import FluxFamily

        return FluxFamily(**options)  # type: ignore[arg-type]
    from .zimage import ZImageFamily

    return ZImageFamily(**options)  # type: ignore[arg-type]
