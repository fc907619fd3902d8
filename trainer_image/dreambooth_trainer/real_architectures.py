"""The families' real architectures, from the published configs, for the GPU benchmark (random weights, no
download) and for counting their parameters on the meta device (no memory).

Sources of the configs (each model repository's config.json on the Hugging Face Hub) and of the published
sizes:
- SDXL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0: unet/, vae/, text_encoder/, text_encoder_2/):
  "a 3x larger UNet backbone ... 2.6B parameters" (Podell et al., SDXL paper, arXiv:2307.01952, Table 1);
  text encoders CLIP ViT-L/14 (123 M text tower) and OpenCLIP ViT-bigG-14 (694.7 M text tower, OpenCLIP's
  model_profile table).
- FLUX.1-dev (black-forest-labs/FLUX.1-dev: transformer/config.json): "a 12 billion parameter rectified flow
  transformer" (its model card); text encoders CLIP-L and T5 v1.1 XXL (google/t5-v1_1-xxl, 11 B with its
  decoder; the encoder alone is the 4.7 B usually quoted for FLUX, no model card states it separately).
- Z-Image (Tongyi-MAI/Z-Image-Turbo: transformer/config.json): "6B parameter" single-stream DiT (its model
  card and arXiv:2511.22699); text encoder Qwen3-4B (Qwen/Qwen3-4B model card: "Number of Parameters: 4.0B").
"""

from __future__ import annotations

from typing import Any

SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
SDXL_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
}
CLIP_L_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
CLIP_BIGG_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
FLUX_DEV_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}
FLUX_VAE: dict[str, Any] = {
    **SDXL_VAE,
    "latent_channels": 16,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
T5_XXL_ENCODER: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
}
ZIMAGE_TRANSFORMER: dict[str, Any] = {
    "all_patch_size": (2,),
    "all_f_patch_size": (1,),
    "in_channels": 16,
    "dim": 3840,
    "n_layers": 30,
    "n_refiner_layers": 2,
    "n_heads": 30,
    "n_kv_heads": 30,
    "norm_eps": 1e-5,
    "qk_norm": True,
    "cap_feat_dim": 2560,
    "rope_theta": 256.0,
    "t_scale": 1000.0,
    "axes_dims": [32, 48, 48],
    "axes_lens": [1024, 512, 512],
}
ZIMAGE_VAE: dict[str, Any] = {**FLUX_VAE, "use_quant_conv": True, "use_post_quant_conv": True}
QWEN3_4B: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "tie_word_embeddings": True,
}

# Published parameter counts (billions) of each part, and the relative tolerance a count from these configs
# must meet (the publications round: "2.6B", "12 billion", "6B", "4.0B").
PUBLISHED_BILLIONS: dict[tuple[str, str], tuple[float, float]] = {
    ("sdxl", "denoiser"): (2.6, 0.02),
    ("sdxl", "text_encoder"): (0.123, 0.02),
    ("sdxl", "text_encoder_2"): (0.694, 0.02),
    ("flux", "denoiser"): (12.0, 0.01),
    ("flux", "text_encoder_2"): (4.7, 0.02),
    ("zimage", "denoiser"): (6.0, 0.03),
    ("zimage", "text_encoder"): (4.0, 0.03),
}


def denoiser(family: str) -> Any:
    """The family's denoiser at its real size, created on the current default device."""
    import diffusers

    if family == "sdxl":
        return diffusers.UNet2DConditionModel(**SDXL_UNET)
    if family == "flux":
        return diffusers.FluxTransformer2DModel(**FLUX_DEV_TRANSFORMER)
    if family == "zimage":
        return diffusers.ZImageTransformer2DModel(**ZIMAGE_TRANSFORMER)
    raise ValueError(f"no real architecture for family {family!r}; one of sdxl, flux, zimage")


def vae(family: str) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**{"sdxl": SDXL_VAE, "flux": FLUX_VAE, "zimage": ZIMAGE_VAE}[family])


def text_encoder(family: str, part: str) -> Any:
    """A text encoder at its real size (the bench builds the big ones shallow: see bench_text_encoder)."""
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        Qwen3Config,
        Qwen3Model,
        T5Config,
        T5EncoderModel,
    )

    if family == "zimage":
        return Qwen3Model(Qwen3Config(**QWEN3_4B))
    if part == "text_encoder_2" and family == "flux":
        return T5EncoderModel(T5Config(**T5_XXL_ENCODER))
    if part == "text_encoder_2":
        return CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG_TEXT))
    return CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT))


def build_part(family: str, part: str) -> Any:
    return denoiser(family) if part == "denoiser" else text_encoder(family, part)


def count_on_meta(family: str, part: str) -> int:
    """Parameters of a part built on the meta device: the real architecture, no memory."""
    import torch

    with torch.device("meta"):
        module = build_part(family, part)
    return sum(p.numel() for p in module.parameters())
