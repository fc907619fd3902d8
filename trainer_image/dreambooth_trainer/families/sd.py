"""Stable Diffusion 1.x/2.x: today's trainer behaviour behind the family interface.

Loading, the DDPM noise/target (epsilon or v-prediction), the plain MSE loss and the LoRA export are the
trainer's own (model_loading, export): this module only routes to them, so SD outputs do not change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import BaseModelError
from ..model_loading import BaseModelSource, assemble_pipeline, load_model_parts
from .base import FamilyModel, NoisedBatch, PromptEmbeddings, mse_loss, render_image

UNET_LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")


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
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise BaseModelError(
            f"the base model's scheduler predicts {prediction_type!r}; training supports 'epsilon' and "
            "'v_prediction' (fix prediction_type in its scheduler config)"
        )
    return NoisedBatch(noisy=noisy, timesteps=timesteps, target=target)


def vae_latent_stats(vae: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dist = vae.encode(pixels.to(vae.dtype)).latent_dist
    return dist.mean, dist.std


def vae_model_input(vae: Any, sample: torch.Tensor) -> torch.Tensor:
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (sample.float() - shift) * vae.config.scaling_factor


class StableDiffusionFamily:
    name: ClassVar[str] = "sd"
    pipeline_class_names: ClassVar[tuple[str, ...]] = ("StableDiffusionPipeline",)
    lora_targets: ClassVar[tuple[str, ...]] = UNET_LORA_TARGETS

    def load(self, source: BaseModelSource) -> FamilyModel:
        parts = load_model_parts(source)
        return FamilyModel(self.name, assemble_pipeline(parts), source, parts.noise_scheduler)

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
        return mse_loss(prediction, batch.target, prior, prior_loss_weight)

    def render(
        self, model: FamilyModel, prompt: str, *, steps: int, guidance: float, size: int, seed: int
    ) -> Any:
        return render_image(model, prompt, steps=steps, guidance=guidance, size=size, seed=seed)

    def export_lora(self, model: FamilyModel, out_dir: Path, file_stem: str, dtype: torch.dtype) -> list[str]:
        from ..export import LORA_WEIGHT_NAME, export_lora
        from ..loop import LoopResult

        result = LoopResult(
            unet=model.pipeline.unet,
            text_encoder=model.pipeline.text_encoder,
            global_step=0,
            resumed_from=0,
            final_loss=float("nan"),
            train_seconds=0.0,
        )
        export_lora(result, out_dir, dtype, with_text_encoder=False)
        return [LORA_WEIGHT_NAME]
