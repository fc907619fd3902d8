"""Z-Image (Tongyi-MAI, Apache-2.0): LoRA on the single-stream S3-DiT transformer, trained by flow matching
as diffusers' train_dreambooth_lora_z_image.py does it.

- Prompts: the Qwen3 encoder's second-to-last hidden states over the chat-templated prompt, one
  variable-length tensor per prompt (padding dropped), computed once.
- Latents: (sample - shift) * scale of a plain 16-channel AutoencoderKL; no packing, no guidance input.
- Timesteps/sigmas from the scheduler's shifted table (shift 3 in the base model's config), the same density
  options as FLUX; the transformer takes t' = (1000 - t) / 1000 and predicts the negated velocity.
- Target: noise - latents.

Why Z-Image over FLUX.2-klein with diffusers 0.42.1: Z-Image's pipeline uses the standard AutoencoderKL
(FLUX.2 needs AutoencoderKLFlux2 with patchified, batch-norm-normalised latents), has no guidance-distillation
input, its reference LoRA script needs nothing beyond the pipeline's own encode_prompt, and its LoRA loader
reads kohya/`diffusion_model.`-prefixed files (ComfyUI-style) besides diffusers ones.
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

ZIMAGE_LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")  # the reference script's default


class ZImageFamily(FlowMatchingLoraFamily):
    name: ClassVar[str] = "zimage"
    pipeline_class_names: ClassVar[tuple[str, ...]] = ("ZImagePipeline",)
    transformer_class_name: ClassVar[str] = "ZImageTransformer2DModel"
    lora_targets: ClassVar[tuple[str, ...]] = ZIMAGE_LORA_TARGETS
    # `diffusion_model.` keys, lora_down/lora_up and `.alpha`: the ComfyUI-style file diffusers' Z-Image
    # loader converts.
    comfy_prefix: ClassVar[str] = "diffusion_model."
    comfy_kohya_suffixes: ClassVar[bool] = True

    def encode_prompts(
        self, model: FamilyModel, prompts: list[str], device: torch.device
    ) -> PromptEmbeddings:
        embeds, _ = model.pipeline.encode_prompt(
            list(prompts),
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return PromptEmbeddings({"prompt_embeds": list(embeds)})

    def predict(
        self, model: FamilyModel, denoiser: torch.nn.Module, batch: NoisedBatch, prompts: dict[str, Any]
    ) -> torch.Tensor:
        embeds = prompts["prompt_embeds"]
        noisy = list(batch.noisy.to(embeds[0].dtype).unsqueeze(2).unbind(0))  # (C, 1, H, W) per image
        predictions = denoiser(noisy, (1000 - batch.timesteps) / 1000, embeds, return_dict=False)[0]
        return -torch.stack(predictions, dim=0).squeeze(2)
