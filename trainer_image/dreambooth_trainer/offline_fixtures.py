"""A tiny Stable Diffusion with random weights, synthetic subject photos, and a single-file export.

Nothing here downloads: tests and the project's local demo build a ~2 M-parameter SD 1.x-shaped model in a
second. Usage: `python -m dreambooth_trainer.offline_fixtures OUT_DIR` writes OUT_DIR/tiny-sd and
OUT_DIR/images.
"""

from __future__ import annotations

import argparse
import json
import re
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


def build_tiny_base_model(path: str | Path, *, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """A diffusers folder shaped like SD 1.x (UNet/VAE/CLIP/PNDM, no safety checker) with random weights."""
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


# --- Single-file export in the original (CompVis/LDM) key layout --------------------------------------------

_RESNET_LDM = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
_VAE_ATTENTION_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet_rest(rest: str) -> str:
    for diffusers_name, ldm_name in _RESNET_LDM:
        if rest.startswith(diffusers_name + "."):
            return ldm_name + rest[len(diffusers_name) :]
    return rest


def _unet_key(key: str, config: dict) -> str:
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    if key in top:
        return top[key]
    per_level = config["layers_per_block"] + 1
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = per_level * i + j + 1
        return (
            f"input_blocks.{index}.0.{_resnet_rest(rest)}"
            if kind == "resnets"
            else f"input_blocks.{index}.1.{rest}"
        )
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{per_level * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = per_level * i + j
        return (
            f"output_blocks.{index}.0.{_resnet_rest(rest)}"
            if kind == "resnets"
            else f"output_blocks.{index}.1.{rest}"
        )
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        i = int(m[1])
        slot = 2 if config["up_block_types"][i].startswith("CrossAttn") else 1
        return f"output_blocks.{per_level * i + per_level - 1}.{slot}.conv.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet_rest(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    raise ValueError(f"no original-layout name for UNet weight {key}")


def _vae_key(key: str, config: dict) -> str:
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    if key in top:
        return top[key]
    levels = len(config["up_block_types"])
    shortcut = lambda rest: rest.replace("conv_shortcut", "nin_shortcut")  # noqa: E731
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{shortcut(m[3])}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{shortcut(m[3])}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{shortcut(m[3])}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTENTION_LDM[m[2]]}.{m[3]}"
    raise ValueError(f"no original-layout name for VAE weight {key}")


def write_single_file_checkpoint(model_dir: str | Path, path: str | Path) -> Path:
    """Pack a diffusers SD 1.x folder into one .safetensors in the original (CompVis) layout.

    That is the layout of the single files users download; diffusers ships no exporter in this direction.
    `StableDiffusionPipeline.from_single_file(path, config=model_dir)` reads the result back (tested).
    """
    import torch
    from safetensors.torch import load_file, save_file

    model_dir, path = Path(model_dir), Path(path)
    unet_config = json.loads((model_dir / "unet" / "config.json").read_text())
    vae_config = json.loads((model_dir / "vae" / "config.json").read_text())
    state: dict[str, torch.Tensor] = {}
    for key, tensor in load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors").items():
        state["model.diffusion_model." + _unet_key(key, unet_config)] = tensor
    for key, tensor in load_file(model_dir / "vae" / "diffusion_pytorch_model.safetensors").items():
        new_key = _vae_key(key, vae_config)
        if re.search(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$", new_key):
            tensor = tensor.reshape(*tensor.shape, 1, 1)  # linear -> 1x1 conv, as in the original VAE
        state["first_stage_model." + new_key] = tensor
    for key, tensor in load_file(model_dir / "text_encoder" / "model.safetensors").items():
        # transformers 5 dropped the `text_model.` prefix; the original layout keeps it.
        key = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + key] = tensor
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


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
