"""What a family trains and with which defaults: the refusals (naming the setting) that run before any work,
and the registry's defaults for what a job leaves out."""

from __future__ import annotations

from typing import Any

from ..hyperparameters import HyperparameterError, TrainingHyperparameters
from .base import FamilyModel, ModelFamily
from .registry import family_defaults

BF16_ONLY_FAMILIES = ("flux", "zimage")  # trained in bf16 by their references; no fp16 path proven NaN-free
FAMILY_DEFAULT_FIELDS = ("resolution", "max_train_steps", "learning_rate", "lora_rank", "lora_alpha")


def resolution_multiple(model: FamilyModel) -> int:
    """Pixels per latent cell times the denoiser's own downsampling (UNet levels, or 2x2 latent patches)."""
    pipe = model.pipeline
    vae_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    if hasattr(pipe, "unet"):
        return vae_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    return vae_factor * 2


def check_family_job(family: ModelFamily, model: FamilyModel, hp: TrainingHyperparameters) -> None:
    """What this family trains; anything else is refused before any work, naming the setting."""
    if hp.training_method not in family.training_methods:
        raise HyperparameterError(
            f"hyperparameter 'training_method' = {hp.training_method}: {model.family} base models train LoRA "
            "adapters only; set training_method=lora"
        )
    if hp.train_text_encoder and not family.text_encoder_lora_targets:
        raise HyperparameterError(
            f"hyperparameter 'train_text_encoder' = true: {model.family} LoRA trains the denoiser only "
            "(its text embeddings are cached); set train_text_encoder=false"
        )
    multiple = resolution_multiple(model)
    if hp.resolution % multiple:
        example = family_defaults(model.family).resolution
        raise HyperparameterError(
            f"hyperparameter 'resolution' = {hp.resolution}: this {model.family} base model needs a multiple "
            f"of {multiple} (e.g. {example})"
        )
    family.check(model, hp)


def apply_family_defaults(
    hp: TrainingHyperparameters, family: str
) -> tuple[TrainingHyperparameters, list[str]]:
    """The family's defaults (registry) for every setting the job left out; what the job set always wins."""
    defaults = family_defaults(family)
    wanted: dict[str, Any] = {name: getattr(defaults, name) for name in FAMILY_DEFAULT_FIELDS}
    wanted["training_method"] = "lora"
    wanted["mixed_precision"] = defaults.mixed_precision
    changes = {
        name: value
        for name, value in wanted.items()
        if name not in hp.model_fields_set and getattr(hp, name) != value
    }
    lines = [f"{family} default: {name} = {value}" for name, value in changes.items()]
    return (hp.model_copy(update=changes) if changes else hp), lines


def check_precision(family: str, mixed_precision: str, cuda: bool, native_bf16: bool) -> None:
    """FLUX-class families train in bf16: a GPU without native bf16 (T4) or an fp16 request is refused."""
    if family not in BF16_ONLY_FAMILIES or not cuda or mixed_precision == "no":
        return
    if mixed_precision == "fp16":
        raise HyperparameterError(
            f"hyperparameter 'mixed_precision' = fp16: {family} LoRA trains in bf16 only (fp16 is not proven "
            "free of NaNs for it); set mixed_precision=bf16 or leave it out"
        )
    if not native_bf16:
        raise HyperparameterError(
            f"{family} LoRA needs a GPU with native bf16 (e.g. ml.g6.xlarge, L4 24 GB; ml.g5 A10G); this GPU "
            "has none (a T4 such as ml.g4dn emulates it): choose one of those instance types"
        )


def check_gpu_precision(family: str, hp: TrainingHyperparameters) -> None:
    """check_precision on this machine's GPU."""
    import torch

    cuda = torch.cuda.is_available()
    native_bf16 = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    check_precision(family, hp.mixed_precision, cuda, native_bf16)
