"""Stable Diffusion 1.x/2.x: the DDPM family, and the one that trains everything (full UNet or LoRA, text
encoder included on request, EMA through the loop).

Loading and the export are the trainer's own (model_loading, export): this module routes to them, so SD
outputs are what they were before the families existed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import BaseModelError
from ..hyperparameters import TrainingHyperparameters
from ..model_loading import BaseModelSource, ModelParts, assemble_pipeline, load_model_parts
from .base import (
    RECORD_FILE_FIELDS,
    FamilyModel,
    NoisedBatch,
    PromptEmbeddings,
    dreambooth_loss,
    render_image,
)

UNET_LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
TEXT_ENCODER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
PREDICTION_TYPES = ("epsilon", "v_prediction")


def check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise BaseModelError(
            f"the base model's scheduler has prediction_type '{prediction_type}', which this trainer "
            f"does not train ({' or '.join(PREDICTION_TYPES)}); use a base model whose scheduler "
            "predicts one of them"
        )


def training_target(
    noise_scheduler: Any,
    prediction_type: str,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon) or the velocity (v-prediction, SD 2.x 768)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    check_prediction_type(prediction_type)  # raises
    raise AssertionError("unreachable")


def ddpm_noised(
    scheduler: Any, latents: torch.Tensor, noise: torch.Tensor, generator: torch.Generator
) -> NoisedBatch:
    """DDPM forward process at uniform integer timesteps; the target follows the prediction type."""
    timesteps = torch.randint(
        0,
        scheduler.config.num_train_timesteps,
        (latents.shape[0],),
        generator=generator,
        device=latents.device,
    )
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = training_target(scheduler, scheduler.config.prediction_type, latents, noise, timesteps)
    return NoisedBatch(noisy=noisy, timesteps=timesteps, target=target)


def vae_latent_stats(vae: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dist = vae.encode(pixels.to(vae.dtype)).latent_dist
    return dist.mean, dist.std


def vae_model_input(vae: Any, sample: torch.Tensor) -> torch.Tensor:
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (sample.float() - shift) * vae.config.scaling_factor


def sd_model(parts: ModelParts) -> FamilyModel:
    """Loaded SD parts as the family's model: a pipeline over the same modules."""
    return FamilyModel(
        StableDiffusionFamily.name, assemble_pipeline(parts), parts.source, parts.noise_scheduler
    )


def sd_parts(model: FamilyModel) -> ModelParts:
    """The family's model as the parts the SD export writes."""
    pipe = model.pipeline
    return ModelParts(
        pipe.tokenizer,
        pipe.text_encoder,
        pipe.vae,
        pipe.unet,
        model.training_scheduler,
        pipe.scheduler,
        model.source,
    )


class StableDiffusionFamily:
    name: ClassVar[str] = "sd"
    pipeline_class_names: ClassVar[tuple[str, ...]] = ("StableDiffusionPipeline",)
    lora_targets: ClassVar[tuple[str, ...]] = UNET_LORA_TARGETS
    training_methods: ClassVar[tuple[str, ...]] = ("full", "lora")
    text_encoder_lora_targets: ClassVar[tuple[str, ...]] = TEXT_ENCODER_LORA_TARGETS
    aspect_buckets: ClassVar[bool] = False  # square crops (center_crop), as SD jobs always had

    def load(self, source: BaseModelSource, quantization: str = "none") -> FamilyModel:
        if quantization != "none":  # refused earlier by choose_base_quantization, with the setting's name
            raise ValueError(f"{self.name} loads full-precision base weights only, not {quantization}")
        return sd_model(load_model_parts(source))

    def apply_defaults(self, hp: TrainingHyperparameters) -> tuple[TrainingHyperparameters, list[str]]:
        return hp, []  # SD's defaults follow the subject and the training method (subject_defaults)

    def check(self, model: FamilyModel, hp: TrainingHyperparameters) -> None:
        check_prediction_type(model.training_scheduler.config.prediction_type)

    def encode_prompts(
        self, model: FamilyModel, prompts: list[str], device: torch.device
    ) -> PromptEmbeddings:
        tokenizer, text_encoder = model.pipeline.tokenizer, model.pipeline.text_encoder
        tokens = tokenizer(
            prompts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        return PromptEmbeddings({"encoder_hidden_states": text_encoder(tokens, return_dict=False)[0]})

    def encode_images(self, model: FamilyModel, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return vae_latent_stats(model.pipeline.vae, pixels)

    def model_input(self, model: FamilyModel, latent_sample: torch.Tensor) -> torch.Tensor:
        return vae_model_input(model.pipeline.vae, latent_sample)

    def add_noise(
        self, model: FamilyModel, latents: torch.Tensor, noise: torch.Tensor, generator: torch.Generator
    ) -> NoisedBatch:
        return ddpm_noised(model.training_scheduler, latents, noise, generator)

    def predict(
        self, model: FamilyModel, denoiser: torch.nn.Module, batch: NoisedBatch, prompts: dict[str, Any]
    ) -> torch.Tensor:
        return denoiser(batch.noisy, batch.timesteps, prompts["encoder_hidden_states"], return_dict=False)[0]

    def loss(
        self, prediction: torch.Tensor, batch: NoisedBatch, prior: bool, prior_loss_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return dreambooth_loss(
            prediction, batch.target, with_prior=prior, prior_loss_weight=prior_loss_weight
        )

    def render(
        self, model: FamilyModel, prompt: str, *, steps: int, guidance: float, size: int, seed: int
    ) -> Any:
        return render_image(model, prompt, steps=steps, guidance=guidance, size=size, seed=seed)

    def export(
        self, model: FamilyModel, result: Any, hp: TrainingHyperparameters, out_dir: Path
    ) -> dict[str, Any]:
        """The trainer's SD export (diffusers folder + single file, or the LoRA files). export_model also
        writes a record, which the job replaces with the full one."""
        from ..export import export_model

        written = export_model(sd_parts(model), result, hp, out_dir, {}, [])
        fields = {key: written[key] for key in RECORD_FILE_FIELDS}
        if "kohya_lora_name" in written:  # the WebUI/ComfyUI file, once export writes one for SD
            fields["kohya_lora_name"] = written["kohya_lora_name"]
        lora_files = [written["lora_weight_name"], written.get("kohya_lora_name")]
        fields["lora_files"] = [name for name in lora_files if name]
        return fields
