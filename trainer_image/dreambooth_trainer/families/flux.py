"""FLUX.1 (dev/schnell-shaped): LoRA on the MMDiT transformer, trained by flow matching as diffusers'
train_dreambooth_lora_flux.py does it.

- Prompts: CLIP pooled embedding + T5 sequence, computed once (the text encoders can then leave the GPU).
- Latents: (sample - shift) * scale, packed into 2x2 patches with position ids; the prediction is unpacked.
- Timesteps: u from the weighting scheme's density (uniform by default, logit-normal / mode on request), then
  the scheduler's own sigma table (its static shift applies when the base model has one).
- Target: noise - latents; noisy = (1 - sigma) * latents + sigma * noise; loss weighted per sample.
- Guidance-distilled bases (FLUX.1-dev, `guidance_embeds`) get the guidance scale as an input at every step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import (
    FamilyModel,
    NoisedBatch,
    PromptEmbeddings,
)
from .flow import FlowMatchingLoraFamily

# The reference script's default: attention projections of both block kinds (the single blocks' to_out is
# the fused proj_out, left out there too).
FLUX_LORA_TARGETS = (
    "to_k",
    "to_q",
    "to_v",
    "to_out.0",
    "add_k_proj",
    "add_q_proj",
    "add_v_proj",
    "to_add_out",
)


class FluxFamily(FlowMatchingLoraFamily):
    name: ClassVar[str] = "flux"
    pipeline_class_names: ClassVar[tuple[str, ...]] = ("FluxPipeline",)
    transformer_class_name: ClassVar[str] = "FluxTransformer2DModel"
    lora_targets: ClassVar[tuple[str, ...]] = FLUX_LORA_TARGETS
    # `transformer.` keys with `.alpha`: ComfyUI's FLUX LoRA loader maps them (its diffusers-key table).
    comfy_prefix: ClassVar[str] = "transformer."
    comfy_kohya_suffixes: ClassVar[bool] = False

    def __init__(self, *, guidance_scale: float = 3.5, **density: Any) -> None:
        super().__init__(**density)
        self.guidance_scale = guidance_scale

    def encode_prompts(
        self, model: FamilyModel, prompts: list[str], device: torch.device
    ) -> PromptEmbeddings:
        embeds, pooled, text_ids = model.pipeline.encode_prompt(
            prompts, prompt_2=prompts, device=device, max_sequence_length=self.max_sequence_length
        )
        return PromptEmbeddings(
            {"prompt_embeds": embeds, "pooled_projections": pooled}, {"txt_ids": text_ids}
        )

    def predict(
        self, model: FamilyModel, denoiser: torch.nn.Module, batch: NoisedBatch, prompts: dict[str, Any]
    ) -> torch.Tensor:
        from diffusers import FluxPipeline

        noisy = batch.noisy
        n, channels, height, width = noisy.shape
        embeds = prompts["prompt_embeds"]
        packed = FluxPipeline._pack_latents(noisy, n, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(
            n, height // 2, width // 2, noisy.device, embeds.dtype
        )
        guidance = None
        if denoiser.config.guidance_embeds:
            guidance = torch.full((n,), self.guidance_scale, device=noisy.device, dtype=torch.float32)
        prediction = denoiser(
            hidden_states=packed.to(embeds.dtype),
            timestep=batch.timesteps / 1000,
            guidance=guidance,
            pooled_projections=prompts["pooled_projections"],
            encoder_hidden_states=embeds,
            txt_ids=prompts["txt_ids"],
            img_ids=image_ids,
            return_dict=False,
        )[0]
        scale = model.pipeline.vae_scale_factor
        return FluxPipeline._unpack_latents(prediction, height * scale, width * scale, scale)
