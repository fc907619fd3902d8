"""SDXL: two CLIP text encoders (penultimate hidden states side by side, the second's pooled projection),
size/crop time ids, DDPM epsilon or v-prediction on the UNet, LoRA on the UNet's attention projections.

fp16: SDXL's stock VAE overflows in fp16 (its config says `force_upcast`). Latents are encoded once with the
VAE upcast to fp32 (cached, so the cost is paid once per image); sample rendering uses the pipeline's own
upcast. The fixed fp16 VAE is not needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from ..hyperparameters import TrainingHyperparameters
from ..model_loading import BaseModelSource
from .base import (
    LORA_WEIGHT_NAME,
    FamilyModel,
    NoisedBatch,
    PromptEmbeddings,
    adapter_state,
    dreambooth_loss,
    export_lora_record,
    load_pipeline,
    lora_alpha_of,
    render_image,
    save_safetensors,
)
from .rules import apply_family_defaults
from .sd import UNET_LORA_TARGETS, check_prediction_type, ddpm_noised, vae_model_input


def sdxl_time_ids(
    original_size: tuple[int, int], crop_top_left: tuple[int, int], target_size: tuple[int, int]
) -> torch.Tensor:
    """SDXL's micro-conditioning: (orig h, orig w, crop top, crop left, target h, target w)."""
    return torch.tensor([[*original_size, *crop_top_left, *target_size]], dtype=torch.float32)


def kohya_lora_state(adapter: dict[str, torch.Tensor], alpha: float, prefix: str) -> dict[str, torch.Tensor]:
    """diffusers' own converter to kohya names (`lora_unet_…`, lora_down/lora_up, `.alpha`), with the
    adapter's real alpha: the converter writes alpha = rank, which would reload at the wrong strength."""
    from diffusers.utils import convert_state_dict_to_kohya

    kohya = convert_state_dict_to_kohya({f"{prefix}.{key}": value for key, value in adapter.items()})
    return {
        key: (torch.tensor(alpha, dtype=value.dtype) if key.endswith(".alpha") else value)
        for key, value in kohya.items()
    }


class StableDiffusionXLFamily:
    name: ClassVar[str] = "sdxl"
    pipeline_class_names: ClassVar[tuple[str, ...]] = ("StableDiffusionXLPipeline",)
    lora_targets: ClassVar[tuple[str, ...]] = UNET_LORA_TARGETS
    training_methods: ClassVar[tuple[str, ...]] = ("lora",)
    text_encoder_lora_targets: ClassVar[tuple[str, ...]] = ()
    aspect_buckets: ClassVar[bool] = True

    def load(self, source: BaseModelSource, quantization: str = "none") -> FamilyModel:
        if quantization != "none":  # refused earlier by choose_base_quantization, with the setting's name
            raise ValueError(f"{self.name} loads full-precision base weights only, not {quantization}")
        from diffusers import DDPMScheduler, StableDiffusionXLPipeline

        pipe = load_pipeline(StableDiffusionXLPipeline, source)
        return FamilyModel(self.name, pipe, source, DDPMScheduler.from_config(pipe.scheduler.config))

    def apply_defaults(self, hp: TrainingHyperparameters) -> tuple[TrainingHyperparameters, list[str]]:
        return apply_family_defaults(hp, self.name)

    def check(self, model: FamilyModel, hp: TrainingHyperparameters) -> None:
        check_prediction_type(model.training_scheduler.config.prediction_type)

    def export(
        self, model: FamilyModel, result: Any, hp: TrainingHyperparameters, out_dir: Path
    ) -> dict[str, Any]:
        return export_lora_record(self, model, hp, out_dir)

    def encode_prompts(
        self, model: FamilyModel, prompts: list[str], device: torch.device
    ) -> PromptEmbeddings:
        embeds, _, pooled, _ = model.pipeline.encode_prompt(
            prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return PromptEmbeddings({"prompt_embeds": embeds, "text_embeds": pooled})

    def encode_images(self, model: FamilyModel, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vae = model.pipeline.vae
        if vae.config.force_upcast and vae.dtype != torch.float32:
            vae.to(torch.float32)
        dist = vae.encode(pixels.to(vae.dtype)).latent_dist
        return dist.mean, dist.std

    def model_input(self, model: FamilyModel, latent_sample: torch.Tensor) -> torch.Tensor:
        return vae_model_input(model.pipeline.vae, latent_sample)

    def add_noise(
        self, model: FamilyModel, latents: torch.Tensor, noise: torch.Tensor, generator: torch.Generator
    ) -> NoisedBatch:
        return ddpm_noised(model.training_scheduler, latents, noise, generator)

    def predict(
        self, model: FamilyModel, denoiser: torch.nn.Module, batch: NoisedBatch, prompts: dict[str, Any]
    ) -> torch.Tensor:
        scale = model.pipeline.vae_scale_factor
        size = (batch.noisy.shape[2] * scale, batch.noisy.shape[3] * scale)
        # Whole photos resized to the training size: original = target, no crop (what inference asks for).
        time_ids = sdxl_time_ids(size, (0, 0), size).to(batch.noisy.device).repeat(batch.noisy.shape[0], 1)
        conditions = {"text_embeds": prompts["text_embeds"], "time_ids": time_ids}
        return denoiser(
            batch.noisy,
            batch.timesteps,
            prompts["prompt_embeds"],
            added_cond_kwargs=conditions,
            return_dict=False,
        )[0]

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

    def export_lora(self, model: FamilyModel, out_dir: Path, file_stem: str, dtype: torch.dtype) -> list[str]:
        from diffusers import StableDiffusionXLPipeline

        unet = model.pipeline.unet
        adapter, metadata = adapter_state(unet, dtype)
        out_dir.mkdir(parents=True, exist_ok=True)
        StableDiffusionXLPipeline.save_lora_weights(
            out_dir,
            unet_lora_layers=adapter,
            unet_lora_adapter_metadata=metadata,
            weight_name=LORA_WEIGHT_NAME,
            safe_serialization=True,
        )
        kohya_name = f"{file_stem}-lora.safetensors"
        save_safetensors(kohya_lora_state(adapter, lora_alpha_of(unet), "unet"), out_dir / kohya_name)
        return [LORA_WEIGHT_NAME, kohya_name]
