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
from pathlib import Path

from ..errors import BaseModelError
from ..family_table import (  # the data lives in family_table (pure: the Lambdas read it too)
    ALIASES,
    FAMILIES,
    BaseModelAlias,
    FamilyDefaults,
    FamilyEntry,
    family_of_pipeline_class,
    family_of_weight_names,
    pipeline_class_names,
    resolve_alias,
)
from ..model_loading import BaseModelSource
from .base import ModelFamily

log = logging.getLogger(__name__)

__all__ = [
    "ALIASES",
    "FAMILIES",
    "BaseModelAlias",
    "FamilyDefaults",
    "FamilyEntry",
    "default_instance_type",
    "family_defaults",
    "family_entry",
    "family_from_model_index",
    "family_from_weight_names",
    "family_of_base_model",
    "get_family",
    "min_image_side",
    "resolve_alias",
]


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
    family = family_of_pipeline_class(class_name)
    if family is not None:
        return family
    known = ", ".join(pipeline_class_names())
    raise BaseModelError(
        f"base model pipeline {class_name or '(no _class_name)'} is not a supported family ({known})"
    )


def family_from_weight_names(names: Iterable[str]) -> str:
    family = family_of_weight_names(list(names))
    if family is not None:
        return family
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
