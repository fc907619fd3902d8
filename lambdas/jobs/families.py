"""Which model family a job trains, and what that decides before any GPU is paid for. Pure.

The family comes from the base model, never from the job: a short alias (`sdxl`) or its pinned Hub id names
it through the one table (``dreambooth_trainer.family_table``); a folder under ``base-models/`` says it in its
``model_index.json`` (the validation Lambda reads it); any other Hub id is guessed from its name (``flux``,
``z-image``, ``xl``), else Stable Diffusion 1.x/2.x. The Lambdas do not call the Hub: gated repositories
(FLUX.1-dev) need a token, and the trainer detects the family for real from the downloaded
``model_index.json`` and fills the family's own defaults for whatever the service did not send, so a wrong
guess costs at most a default (instance type, photo side, volume), never a wrong model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dreambooth_trainer.family_table import FAMILIES, FamilyEntry, alias_entry, family_of_pipeline_class

DEFAULT_FAMILY = "sd"
# SageMaker instance families whose GPU has no native bf16 (T4): bf16-only families are refused on them.
NO_BF16_INSTANCE_PREFIXES = ("ml.g4dn.",)
_NAME_HINTS = (
    (re.compile(r"flux"), "flux"),
    (re.compile(r"z-?image"), "zimage"),
    (re.compile(r"sdxl|stable-diffusion-xl|(^|[^a-z])xl|xl([^a-z]|$)"), "sdxl"),
)


@dataclass(frozen=True)
class FamilyChoice:
    name: str
    how: str  # "alias", "model_index.json", "name" or "default"

    @property
    def entry(self) -> FamilyEntry:
        return FAMILIES[self.name]


def detect_family(base_model: str, model_index: dict[str, Any] | None = None) -> FamilyChoice:
    """The family of a base model (alias, Hub id or s3:// folder), with how it was decided."""
    alias = alias_entry(base_model)
    if alias is not None:
        return FamilyChoice(alias.family, "alias")
    if model_index is not None:
        family = family_of_pipeline_class(str(model_index.get("_class_name", "")))
        if family is not None:
            return FamilyChoice(family, "model_index.json")
    name = base_model.strip().lower().rstrip("/").rsplit("/", 1)[-1]
    for pattern, family in _NAME_HINTS:
        if pattern.search(name):
            return FamilyChoice(family, "name")
    return FamilyChoice(DEFAULT_FAMILY, "default")


def family_label(name: str) -> str:
    """``sdxl (Stable Diffusion XL)``: the family and its description's first part; an unknown name as is."""
    entry = FAMILIES.get(name)
    return f"{name} ({entry.description.split(' (')[0]})" if entry else name


def min_image_side(family: str, deployment_min_side: int) -> int:
    """The smallest photo side a job of this family accepts: the family's, or the deployment's if larger."""
    return max(deployment_min_side, FAMILIES[family].defaults.min_image_side)


def image_side_rule(family: str) -> str:
    """Said after 'both sides need at least N px' when the family is why N is what it is."""
    entry = FAMILIES[family]
    return f" for {entry.name} base models, which train at {entry.defaults.resolution} px"


def default_training_method(family: str, deployment_method: str | None) -> str:
    """The deployment's method where the family trains it, else the family's first (LoRA-only: lora)."""
    methods = FAMILIES[family].training_methods
    return deployment_method if deployment_method in methods else methods[0]


def lacks_bf16(instance_type: str) -> bool:
    return instance_type.startswith(NO_BF16_INSTANCE_PREFIXES)


def needs_bf16(family: str) -> bool:
    return FAMILIES[family].defaults.mixed_precision == "bf16"


def family_problems(
    family: str,
    *,
    training_method: str,
    instance_type: str,
    train_text_encoder: bool,
    allowed_instance_types: tuple[str, ...],
) -> list[str]:
    """What a job asks for that its family cannot train, one line each, with what to write instead."""
    entry = FAMILIES[family]
    problems = []
    if training_method not in entry.training_methods:
        problems.append(
            f'training_method "{training_method}": {family_label(family)} base models train '
            f'{" or ".join(entry.training_methods)} only; set "training_method": '
            f'"{entry.training_methods[0]}" or leave it out'
        )
    if train_text_encoder and family != "sd":
        problems.append(
            f"hyperparameters: train_text_encoder true: {family} LoRA trains the denoiser only (its text "
            "embeddings are cached); remove it"
        )
    if needs_bf16(family) and lacks_bf16(instance_type):
        working = ", ".join([t for t in allowed_instance_types if not lacks_bf16(t)][:6]) or "ml.g6.xlarge"
        problems.append(
            f"instance_type {instance_type}: {family_label(family)} trains in bf16, which this instance's "
            f'T4 GPU lacks; set "instance_type" to one with native bf16, e.g. {working}'
            f" (the {family} default is {entry.defaults.instance_type})"
        )
    return problems
