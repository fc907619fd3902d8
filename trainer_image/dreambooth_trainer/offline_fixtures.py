"""A tiny Stable Diffusion with random weights, synthetic subject photos, and a single-file export.

Nothing here downloads: tests and the project's local demo build a ~2 M-parameter SD 1.x-shaped (sd2=True:
SD 2.x-shaped) model in a second. Usage: `python -m dreambooth_trainer.offline_fixtures OUT_DIR` writes
OUT_DIR/tiny-sd and OUT_DIR/images.
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


def build_tiny_base_model(
    path: str | Path, *, prediction_type: str = "epsilon", seed: int = 0, sd2: bool = False
) -> Path:
    """A diffusers folder shaped like SD 1.x (UNet/VAE/CLIP/PNDM, no safety checker) with random weights.

    sd2: shaped like SD 2.x instead: an OpenCLIP-style text encoder (gelu) and linear attention projections.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(path)
    tokenizer_dir = path / "tokenizer"
    vocab_size = write_byte_level_clip_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4) if sd2 else 8,
        use_linear_projection=sd2,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=5,
            hidden_act="gelu" if sd2 else "quick_gelu",
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )
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
