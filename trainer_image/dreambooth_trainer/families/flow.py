"""What the flow-matching LoRA families (FLUX.1, Z-Image) share: LoRA on the transformer only, aspect
buckets, the density options of the timestep sampling, loading, defaults, GPU checks and export. Each family
module adds what is its own: prompt encoding, latent packing, the prediction conventions, rendering. The VAE
latents, the timestep sampling and the flow-matching pair (target noise - latents) are shared here."""

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
    adapter_state,
    comfyui_lora_state,
    export_lora_record,
    flow_matching_loss,
    flow_matching_pair,
    load_pipeline,
    lora_alpha_of,
    render_image,
    sample_flow_timesteps,
    save_safetensors,
)
from .quantization import quantized_load_kwargs
from .rules import apply_family_defaults, check_gpu_precision
from .sd import vae_latent_stats, vae_model_input


class FlowMatchingLoraFamily:
    name: ClassVar[str]
    pipeline_class_names: ClassVar[tuple[str, ...]]
    transformer_class_name: ClassVar[str]  # diffusers' transformer class of the family
    lora_targets: ClassVar[tuple[str, ...]]
    training_methods: ClassVar[tuple[str, ...]] = ("lora",)
    text_encoder_lora_targets: ClassVar[tuple[str, ...]] = ()
    aspect_buckets: ClassVar[bool] = True
    # The ComfyUI/WebUI file: each key's prefix, and lora_down/lora_up names (else lora_A/lora_B).
    comfy_prefix: ClassVar[str]
    comfy_kohya_suffixes: ClassVar[bool]

    def __init__(
        self,
        *,
        max_sequence_length: int = 512,
        weighting_scheme: str = "none",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        mode_scale: float = 1.29,
    ) -> None:
        self.max_sequence_length = max_sequence_length
        self.weighting_scheme = weighting_scheme
        self.density = {"logit_mean": logit_mean, "logit_std": logit_std, "mode_scale": mode_scale}

    def load(self, source: BaseModelSource, quantization: str = "none") -> FamilyModel:
        """The pipeline; with nf4/int8 the transformer's base weights are loaded quantized by diffusers'
        bitsandbytes integration (frozen; the LoRA adapter trains on top)."""
        import diffusers
        import torch

        pipeline_class = getattr(diffusers, self.pipeline_class_names[0])
        transformer_class = getattr(diffusers, self.transformer_class_name)
        kwargs = quantized_load_kwargs(quantization, torch.cuda.is_available())
        pipe = load_pipeline(pipeline_class, source, transformer_class, kwargs)
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        return FamilyModel(self.name, pipe, source, scheduler)

    def apply_defaults(self, hp: TrainingHyperparameters) -> tuple[TrainingHyperparameters, list[str]]:
        return apply_family_defaults(hp, self.name)

    def check(self, model: FamilyModel, hp: TrainingHyperparameters) -> None:
        check_gpu_precision(self.name, hp)

    def export(
        self, model: FamilyModel, result: Any, hp: TrainingHyperparameters, out_dir: Path
    ) -> dict[str, Any]:
        return export_lora_record(self, model, hp, out_dir)

    def export_lora(self, model: FamilyModel, out_dir: Path, file_stem: str, dtype: torch.dtype) -> list[str]:
        """pytorch_lora_weights.safetensors (diffusers/PEFT, alpha in metadata) and <stem>-lora.safetensors
        (the same tensors under the family's prefix, with `.alpha` per module: the family says which
        layout its ComfyUI loader and diffusers' load_lora_weights read)."""
        import diffusers

        transformer = model.pipeline.transformer
        adapter, metadata = adapter_state(transformer, dtype)
        out_dir.mkdir(parents=True, exist_ok=True)
        getattr(diffusers, self.pipeline_class_names[0]).save_lora_weights(
            out_dir,
            transformer_lora_layers=adapter,
            transformer_lora_adapter_metadata=metadata,
            weight_name=LORA_WEIGHT_NAME,
            safe_serialization=True,
        )
        comfy_name = f"{file_stem}-lora.safetensors"
        state = comfyui_lora_state(
            adapter, lora_alpha_of(transformer), self.comfy_prefix, kohya_suffixes=self.comfy_kohya_suffixes
        )
        save_safetensors(state, out_dir / comfy_name)
        return [LORA_WEIGHT_NAME, comfy_name]

    def encode_images(self, model: FamilyModel, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return vae_latent_stats(model.pipeline.vae, pixels)

    def model_input(self, model: FamilyModel, latent_sample: torch.Tensor) -> torch.Tensor:
        return vae_model_input(model.pipeline.vae, latent_sample)

    def add_noise(
        self, model: FamilyModel, latents: torch.Tensor, noise: torch.Tensor, generator: torch.Generator
    ) -> NoisedBatch:
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        timesteps, sigmas = sample_flow_timesteps(
            model.training_scheduler,
            latents.shape[0],
            generator,
            weighting_scheme=self.weighting_scheme,
            **self.density,
        )
        timesteps, sigmas = timesteps.to(latents.device), sigmas.to(latents.device, latents.dtype)
        noisy, target = flow_matching_pair(latents, noise, sigmas)
        weighting = compute_loss_weighting_for_sd3(weighting_scheme=self.weighting_scheme, sigmas=sigmas)
        return NoisedBatch(
            noisy=noisy, timesteps=timesteps, target=target, sigmas=sigmas, weighting=weighting
        )

    def loss(
        self, prediction: torch.Tensor, batch: NoisedBatch, prior: bool, prior_loss_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return flow_matching_loss(prediction, batch, prior, prior_loss_weight)

    def render(
        self, model: FamilyModel, prompt: str, *, steps: int, guidance: float, size: int, seed: int
    ) -> Any:
        return render_image(
            model,
            prompt,
            steps=steps,
            guidance=guidance,
            size=size,
            seed=seed,
            max_sequence_length=self.max_sequence_length,
        )
