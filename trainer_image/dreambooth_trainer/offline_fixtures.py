"""A tiny Stable Diffusion with random weights, synthetic subject photos, and a single-file export.

Nothing here downloads: tests and the project's local demo build a ~2 M-parameter SD 1.x-shaped (sd2=True:
SD 2.x-shaped) model in a second; the GPU benchmark builds SD 1.5's full architecture (sd15_configs).
Usage: `python -m dreambooth_trainer.offline_fixtures OUT_DIR` writes OUT_DIR/tiny-sd and OUT_DIR/images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable-character table (the byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_byte_level_clip_tokenizer(folder: Path, model_max_length: int = 77) -> int:
    """vocab.json + merges.txt: 256 byte symbols, their </w> forms, CLIP's two specials. Returns the size."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + list(SPECIAL_TOKENS)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": SPECIAL_TOKENS[0],
        "eos_token": SPECIAL_TOKENS[1],
        "unk_token": SPECIAL_TOKENS[1],
        "pad_token": SPECIAL_TOKENS[1],
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(tokens)


def tiny_configs(*, sd2: bool = False) -> dict[str, dict]:
    """UNet/VAE/CLIP-text configs of the ~2 M-parameter test model (sd2: SD 2.x-shaped)."""
    return {
        "unet": {
            "block_out_channels": (32, 64),
            "layers_per_block": 2,
            "sample_size": 32,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "cross_attention_dim": 32,
            "attention_head_dim": (2, 4) if sd2 else 8,
            "use_linear_projection": sd2,
        },
        "vae": {
            "block_out_channels": (32, 64),
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
            "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
            "latent_channels": 4,
            "sample_size": 64,
        },
        "text_encoder": {
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 5,
            "hidden_act": "gelu" if sd2 else "quick_gelu",
            "max_position_embeddings": 77,
            "projection_dim": 32,
        },
    }


def sd15_configs() -> dict[str, dict]:
    """Stable Diffusion 1.5's architecture (the unet/, vae/ and text_encoder/ configs of
    stable-diffusion-v1-5, whose text encoder is CLIP ViT-L/14's): UNet 859.5 M, VAE 83.7 M, CLIP text
    123.1 M parameters. Random weights of this shape measure speed and memory like the real model."""
    return {
        "unet": {
            "act_fn": "silu",
            "attention_head_dim": 8,
            "block_out_channels": (320, 640, 1280, 1280),
            "center_input_sample": False,
            "cross_attention_dim": 768,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "downsample_padding": 1,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
            "in_channels": 4,
            "layers_per_block": 2,
            "mid_block_scale_factor": 1,
            "norm_eps": 1e-05,
            "norm_num_groups": 32,
            "out_channels": 4,
            "sample_size": 64,
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        },
        "vae": {
            "act_fn": "silu",
            "block_out_channels": (128, 256, 512, 512),
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "in_channels": 3,
            "latent_channels": 4,
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "out_channels": 3,
            "sample_size": 512,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
        },
        "text_encoder": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "hidden_act": "quick_gelu",
            "max_position_embeddings": 77,
            "projection_dim": 768,
            "layer_norm_eps": 1e-05,
            "vocab_size": 49408,  # CLIP's BPE vocabulary; the byte-level test tokenizer uses its first ids
        },
    }


ARCHITECTURES = {"tiny": tiny_configs, "sd15": sd15_configs}


def build_modules(configs: dict[str, dict], vocab_size: int) -> tuple:
    """(unet, vae, text_encoder) with random weights from configs, on the current default device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(**configs["unet"])
    vae = AutoencoderKL(**configs["vae"])
    text = {"vocab_size": vocab_size, **configs["text_encoder"]}
    # the test tokenizer's specials are its last two ids (CLIP's real ones are past its vocabulary)
    specials = {
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1,
    }
    text_encoder = CLIPTextModel(CLIPTextConfig(**text, **specials))
    return unet, vae, text_encoder


def build_tiny_base_model(
    path: str | Path, *, prediction_type: str = "epsilon", seed: int = 0, sd2: bool = False
) -> Path:
    """A diffusers folder shaped like SD 1.x (UNet/VAE/CLIP/PNDM, no safety checker) with random weights.

    sd2: shaped like SD 2.x instead: an OpenCLIP-style text encoder (gelu) and linear attention projections.
    """
    return build_base_model(path, tiny_configs(sd2=sd2), prediction_type=prediction_type, seed=seed)


def build_base_model(
    path: str | Path, configs: dict[str, dict], *, prediction_type: str = "epsilon", seed: int = 0
) -> Path:
    """A diffusers SD folder with random weights of the given architecture (tiny_configs, sd15_configs)."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    path = Path(path)
    tokenizer_dir = path / "tokenizer"
    vocab_size = write_byte_level_clip_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    unet, vae, text_encoder = build_modules(configs, vocab_size)
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    # save_pretrained rewrote the tokenizer as tokenizer.json; keep the plain vocab.json + merges.txt form.
    for stale in tokenizer_dir.iterdir():
        stale.unlink()
    write_byte_level_clip_tokenizer(tokenizer_dir)
    return path


def write_sample_subject_images(
    folder: str | Path, n: int = 4, size: int = 64, seed: int = 0, formats: tuple[str, ...] = ("JPEG", "PNG")
) -> list[Path]:
    """Distinct photos of one 'subject' (an orange disc with a blue bar) on varied backgrounds."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for index in range(n):
        top, bottom = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
        ramp = np.linspace(0.0, 1.0, size)[:, None, None]
        background = (top * (1 - ramp) + bottom * ramp).repeat(size, axis=1)
        background += rng.normal(0, 8, size=background.shape)
        image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), mode="RGB")
        draw = ImageDraw.Draw(image)
        radius = int(size * rng.uniform(0.18, 0.3))
        cx, cy = (int(v) for v in rng.integers(radius, size - radius, size=2))
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(240, 140, 30))
        draw.rectangle((cx - radius // 2, cy - 2, cx + radius // 2, cy + 2), fill=(30, 60, 200))
        image_format = formats[index % len(formats)]
        suffix = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}.get(image_format, ".img")
        path = folder / f"subject-{index:02d}{suffix}"
        image.save(path, format=image_format)
        written.append(path)
    return written


def write_single_file_checkpoint(model_dir: str | Path, path: str | Path) -> Path:
    """Pack a diffusers SD 1.x/2.x folder into one .safetensors in the original (CompVis) layout.

    That is the layout of the single files users download; the mapping is the production exporter's
    (`single_file`), so `StableDiffusionPipeline.from_single_file(path, config=model_dir)` reads it back.
    """
    from .single_file import write_single_file_from_folder

    return write_single_file_from_folder(model_dir, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--images", type=int, default=5, help="synthetic subject photos to write")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--single-file", action="store_true", help="also write tiny-sd.safetensors")
    args = parser.parse_args(argv)
    model = build_tiny_base_model(args.out_dir / "tiny-sd")
    write_sample_subject_images(args.out_dir / "images", args.images, args.size)
    print(f"tiny base model: {model}")
    print(f"subject images: {args.out_dir / 'images'}")
    if args.single_file:
        print(f"single file: {write_single_file_checkpoint(model, args.out_dir / 'tiny-sd.safetensors')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
