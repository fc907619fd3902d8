"""The one typed schema of the training job's hyperparameters.

Pure (stdlib + pydantic): the Lambdas import it to build CreateTrainingJob requests, the container imports it
to read `/opt/ml/input/config/hyperparameters.json`. SageMaker hands every value over as a string, and callers
that go through the sagemaker-training toolkit JSON-encode them ("\\"fp16\\"", "true"); both spellings parse
the same.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The Quick Kit's misspelt key keeps working; new callers use the clear name.
ALIASES: dict[str, str] = {"manul_upload_model_path": "model_output_s3_uri"}
# SageMaker and its SDK add their own keys (sagemaker_program, sagemaker_region, ...): never ours to judge.
SAGEMAKER_RESERVED_PREFIX = "sagemaker_"
MAX_SAGEMAKER_HYPERPARAMETERS = 100

_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$")


class HyperparameterError(ValueError):
    """A hyperparameter that cannot be used; the message names the key and what would be valid."""


class TrainingHyperparameters(BaseModel):
    """Everything a training job can be told. Field names are the hyperparameter keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)

    # --- What to learn (Stable Diffusion Quick Kit keys) ---
    instance_prompt: str = Field(
        min_length=1, description="Prompt with the subject's token, e.g. 'photo of sks dog'"
    )
    class_prompt: str | None = Field(
        None, description="Prompt of the subject's class, for prior preservation"
    )
    with_prior_preservation: bool = Field(
        False, description="Also train on class images to keep the class prior"
    )
    prior_loss_weight: float = Field(1.0, ge=0, description="Weight of the class-image loss")
    num_class_images: int = Field(100, ge=0, description="Class images wanted; missing ones are generated")
    sample_batch_size: int = Field(4, ge=1, description="Batch size when generating class images")
    model_name: str = Field("dreambooth-model", min_length=1, description="Name recorded with the output")

    # --- Where things are (Quick Kit keys; /opt/ml/... paths follow SAGEMAKER_BASE_DIR) ---
    pretrained_model_name_or_path: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        description="Base model: Hub id, diffusers folder or .safetensors/.ckpt file (a local path wins,"
        " then the 'model' channel)",
    )
    base_model_config: str | None = Field(
        None, description="Diffusers folder (or Hub id) whose configs a single-file base model is read with"
    )
    instance_data_dir: str | None = Field(None, description="Instance images; default: the 'images' channel")
    class_data_dir: str | None = Field(None, description="Class images; default: the 'class_images' channel")
    models_path: str | None = Field(None, description="Where the model is written; default /opt/ml/model")
    model_output_s3_uri: str | None = Field(
        None, description="s3://bucket/prefix/ to upload the model to (alias: manul_upload_model_path)"
    )
    class_images_output_s3_uri: str | None = Field(
        None,
        description="s3://bucket/prefix/ to share newly generated class images to, before training starts"
        " (later jobs read them as their 'class_images' channel)",
    )
    model_hand_over: Literal["upload", "sagemaker"] = Field(
        "upload",
        description="upload: the trainer uploads the model to model_output_s3_uri itself; sagemaker (a job"
        " with network isolation: no network, no credentials): the model and its manifest.json stay in"
        " /opt/ml/model, SageMaker's model.tar.gz carries them and the pipeline unpacks it to"
        " model_output_s3_uri; nothing else is uploaded either",
    )

    # --- How to learn ---
    subject_type: Literal["person", "pet", "object", "style"] | None = Field(
        None,
        description="What the photos show; picks defaults for steps per image, learning rates, prior"
        " preservation, class prompt and images, text-encoder training (table in the trainer README);"
        " explicit values win",
    )
    training_method: Literal["full", "lora"] = Field(
        "full", description="Full UNet fine-tune or LoRA adapters"
    )
    train_text_encoder: bool = Field(False, description="Also train the text encoder (full or LoRA)")
    lora_rank: int = Field(4, ge=1, description="LoRA rank")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha; default: the rank")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    resolution: int = Field(512, ge=8, description="Square training resolution in pixels")
    center_crop: bool = Field(False, description="Center-crop images (random crop otherwise)")
    train_batch_size: int = Field(
        1, ge=1, description="Instance images per step (as many class images again)"
    )
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step")
    max_train_steps: int = Field(
        400, ge=1, description="Optimizer steps; with subject_type: steps per image x images, within 400-2000"
    )
    learning_rate: float = Field(
        5e-6,
        gt=0,
        description="UNet learning rate; default 5e-6 for full, 1e-4 for LoRA (diffusers' reference"
        " scripts), or subject_type's",
    )
    text_encoder_learning_rate: float | None = Field(None, gt=0, description="Default: learning_rate")
    lr_scheduler: Literal[
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
    ] = Field("constant", description="diffusers learning-rate schedule")
    lr_warmup_steps: int = Field(0, ge=0, description="Warm-up steps of the schedule")
    lr_num_cycles: int = Field(1, ge=1, description="Cycles of cosine_with_restarts")
    lr_power: float = Field(1.0, gt=0, description="Power of the polynomial schedule")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_weight_decay: float = Field(1e-2, ge=0)
    adam_epsilon: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm")
    use_ema: bool = Field(False, description="Keep an EMA of the UNet weights and export it (full method)")
    seed: int = Field(
        42, ge=0, description="Seed of every random choice; resumed runs replay the same stream"
    )

    # --- Speed and memory ---
    mixed_precision: Literal["no", "fp16", "bf16"] = Field("fp16", description="Autocast precision on GPU")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory")
    use_8bit_adam: bool = Field(False, description="bitsandbytes 8-bit AdamW")
    attention: Literal["sdpa", "xformers"] = Field(
        "sdpa",
        description="sdpa (PyTorch, default) or xformers (only when asked for, installed and on CUDA;"
        " falls back to sdpa if it fails to switch on)",
    )
    base_quantization: Literal["auto", "off", "nf4", "int8"] = Field(
        "auto",
        description="Base weights of the denoiser loaded quantized by bitsandbytes (LoRA trains on top):"
        " nf4 (4-bit), int8, or off (full precision); auto: nf4 for FLUX-class families on a GPU of at"
        " most 40 GB, int8 on a larger one, off for SD/SDXL and on CPU; SD/SDXL refuse nf4/int8. ('none'"
        " is SageMaker's unset value, i.e. auto: say off)",
    )
    not_cache_latents: bool = Field(False, description="Encode images every step instead of once")
    auto_vram_presets: bool = Field(True, description="Adjust memory settings to the detected GPU")
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch")

    # --- Checkpoints, logs, output ---
    save_steps: int | None = Field(
        None,
        ge=0,
        description="Checkpoint interval for spot resume (also saved after the last step); default: a quarter"
        " of max_train_steps; 0: no checkpoints except on SIGTERM",
    )
    sigterm_save_min_steps: int = Field(
        10,
        ge=1,
        description="On SIGTERM, save only if the newest checkpoint is at least this many steps old (and the"
        " save fits SageMaker's 120 s window); otherwise exit and resume from the newest checkpoint",
    )
    save_use_epochs: bool = Field(False, description="Count save_steps in epochs instead of steps")
    logging_steps: int = Field(10, ge=1, description="Steps per metrics log line")
    output_dtype: Literal["fp16", "bf16", "fp32"] = Field("fp16", description="Precision of exported weights")
    export_single_file: bool = Field(
        True,
        description="Full method: also write <model_name>.safetensors in the original Stable Diffusion layout"
        " (AUTOMATIC1111, ComfyUI); LoRA jobs write only their LoRA file",
    )
    num_samples: int = Field(
        4,
        ge=0,
        description="Images of instance_prompt rendered with the trained model into samples/; 0: none",
    )
    sample_inference_steps: int = Field(25, ge=1, description="Denoising steps per sample image")
    sample_guidance_scale: float = Field(7.5, ge=0, description="Guidance scale of the sample images")
    class_inference_steps: int = Field(30, ge=1, description="Denoising steps per generated class image")
    class_guidance_scale: float = Field(7.5, ge=0, description="Guidance scale for generated class images")
    min_instance_images: int = Field(
        1, ge=1, description="Fewer usable instance images than this fails the job"
    )

    @field_validator(
        "mixed_precision", "attention", "training_method", "lr_scheduler", "subject_type", mode="before"
    )
    @classmethod
    def _normalise_choice(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.strip().lower()
        synonyms = {
            "fp32": "no",
            "none": "no",
            "default": "sdpa",
            "flash_attention": "sdpa",
            "full_finetune": "full",
        }
        return synonyms.get(value, value)

    @field_validator("output_dtype", mode="before")
    @classmethod
    def _normalise_dtype(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.strip().lower()
        return {"float16": "fp16", "half": "fp16", "bfloat16": "bf16", "float32": "fp32", "no": "fp32"}.get(
            value, value
        )

    @field_validator("base_quantization", mode="before")
    @classmethod
    def _normalise_quantization(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.strip().lower()
        synonyms = {
            "no": "off",
            "false": "off",
            "full": "off",
            "4bit": "nf4",
            "8bit": "int8",
            "llm_int8": "int8",
        }
        return synonyms.get(value, value)

    @field_validator("model_output_s3_uri", "class_images_output_s3_uri")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value is not None and not _S3_URI.match(value):
            raise ValueError("must look like s3://bucket/prefix/")
        return value

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError("must be a multiple of 8 (the VAE downsamples by 8)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainingHyperparameters:
        if self.with_prior_preservation and not self.class_prompt:
            from .subject_defaults import PROFILES

            profile = PROFILES.get(self.subject_type or "")
            if not (profile and profile.class_prompt):
                raise ValueError("with_prior_preservation needs class_prompt")
        return self

    @property
    def effective_lora_alpha(self) -> float:
        return float(self.lora_alpha if self.lora_alpha is not None else self.lora_rank)

    @property
    def effective_text_encoder_learning_rate(self) -> float:
        return self.text_encoder_learning_rate or self.learning_rate

    def to_sagemaker_strings(self, include_defaults: bool = False) -> dict[str, str]:
        """HyperParameters for CreateTrainingJob: string values that `parse_hyperparameters` reads back.

        A value set explicitly is kept even when it equals the field default: some defaults depend on other
        settings (learning_rate on training_method), so an explicit 5e-6 for LoRA must reach the trainer.
        """
        out: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None:
                continue
            default = not field.is_required() and value == field.default
            if not include_defaults and default and name not in self.model_fields_set:
                continue
            out[name] = _to_string(value)
        return out


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        # A string that would JSON-decode to another string ('"x"') is sent JSON-encoded so it survives.
        return json.dumps(value) if isinstance(_json_or_none(value), str) else value
    return str(value)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def _decode(value: Any) -> Any:
    """Undo the toolkit's JSON encoding of strings; leave numbers and booleans to pydantic's lax parsing."""
    if not isinstance(value, str):
        return value
    decoded = _json_or_none(value)
    if isinstance(decoded, str):
        value = decoded
    if value.strip().lower() in ("", "null", "none"):
        return None
    return value


def valid_keys() -> list[str]:
    """Every accepted key, aliases included, sorted."""
    return sorted([*TrainingHyperparameters.model_fields, *ALIASES])


def describe_hyperparameters() -> dict[str, dict[str, Any]]:
    """Key -> {default, required, description}, for docs and the `keys` command."""
    return {
        name: {
            "required": field.is_required(),
            "default": None if field.is_required() else field.default,
            "description": field.description or "",
        }
        for name, field in TrainingHyperparameters.model_fields.items()
    }


def parse_hyperparameters(raw: Mapping[str, Any]) -> TrainingHyperparameters:
    """Read SageMaker's string map; unknown keys and bad values fail with the key and the valid choices."""
    fields = TrainingHyperparameters.model_fields
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key.startswith(SAGEMAKER_RESERVED_PREFIX):
            continue
        name = ALIASES.get(key, key)
        if name not in fields:
            close = difflib.get_close_matches(key, valid_keys(), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise HyperparameterError(
                f"unknown hyperparameter '{key}'{hint}; valid keys: {', '.join(valid_keys())}"
            )
        decoded = _decode(value)
        if name in values and values[name] != decoded:
            raise HyperparameterError(
                f"hyperparameter '{name}' given twice with different values (alias '{key}')"
            )
        if decoded is not None:
            values[name] = decoded
    try:
        return TrainingHyperparameters.model_validate(values)
    except ValidationError as exc:
        raise HyperparameterError(_explain(exc, values)) from None


def _explain(exc: ValidationError, values: Mapping[str, Any]) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            problems.append(f"hyperparameter '{key}' is required")
        elif not key:
            problems.append(message)
        else:
            problems.append(f"hyperparameter '{key}' = {values.get(key)!r}: {message}")
    return "; ".join(problems)
