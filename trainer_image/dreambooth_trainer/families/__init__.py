"""Model families behind one interface (base.ModelFamily), listed in one table (registry)."""

from .base import FamilyDefaults, FamilyModel, ModelFamily, NoisedBatch, PromptEmbeddings
from .registry import (
    ALIASES,
    FAMILIES,
    default_instance_type,
    family_defaults,
    family_of_base_model,
    get_family,
    min_image_side,
    resolve_alias,
)

__all__ = [
    "ALIASES",
    "FAMILIES",
    "FamilyDefaults",
    "FamilyModel",
    "ModelFamily",
    "NoisedBatch",
    "PromptEmbeddings",
    "default_instance_type",
    "family_defaults",
    "family_of_base_model",
    "get_family",
    "min_image_side",
    "resolve_alias",
]
