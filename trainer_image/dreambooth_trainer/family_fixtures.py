"""Tiny random-weight SDXL, FLUX.1 and Z-Image pipelines with locally generated tokenizers (no Hub).

Each is a diffusers folder shaped like the real family (same classes, component layout, model_index.json),
small enough to train a few LoRA steps at 64 px on one CPU thread. Usage:
`python -m dreambooth_trainer.family_fixtures OUT_DIR [sdxl flux zimage]` writes OUT_DIR/tiny-<family>.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .offline_fixtures import _bytes_to_unicode, write_byte_level_clip_tokenizer

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_t5_tokenizer(folder: Path, model_max_length: int = 512) -> Any:
    """A character-level Unigram tokenizer with T5's specials (<pad>=0, </s>=1, <unk>=2): T5TokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = [chr(c) for c in range(32, 127)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    pieces += [(c, -2.0) for c in chars] + [("▁" + c, -1.5) for c in chars]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = T5TokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=model_max_length,
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_qwen_tokenizer(folder: Path, model_max_length: int = 512) -> Any:
    """A byte-level BPE tokenizer (256 byte symbols, no merges), Qwen's chat specials and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    vocab = {symbol: index for index, symbol in enumerate(_bytes_to_unicode().values())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=model_max_length,
    )
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def _clip_tokenizer(folder: Path) -> tuple[Any, int]:
    from transformers import CLIPTokenizer

    size = write_byte_level_clip_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(folder), size


def _clip_config(vocab_size: int) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        hidden_act="gelu",
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def _vae(latent_channels: int, **kwargs: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels,
        layers_per_block=1,
        sample_size=64,
        **kwargs,
    )


def build_tiny_sdxl(path: str | Path, seed: int = 0) -> Path:
    """SDXL's layout: two CLIP text encoders (the second with projection), text_time UNet, Euler scheduler."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    path = Path(path)
    tokenizer, vocab_size = _clip_tokenizer(path / "tokenizer")
    tokenizer_2, _ = _clip_tokenizer(path / "tokenizer_2")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids + the pooled text embedding
        cross_attention_dim=64,  # both encoders' hidden states side by side
    )
    text_encoder = CLIPTextModel(_clip_config(vocab_size))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(vocab_size))
    # SDXL's stock VAE overflows in fp16; its config says so (force_upcast), and the family honours it.
    vae = _vae(4, scaling_factor=0.13025, force_upcast=True)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_flux(path: str | Path, seed: int = 0) -> Path:
    """FLUX.1-dev's layout: CLIP + T5 encoders, a guidance-embedding transformer, 2x2-packed latents."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    path = Path(path)
    tokenizer, vocab_size = _clip_tokenizer(path / "tokenizer")
    tokenizer_2 = build_t5_tokenizer(path / "tokenizer_2")
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,  # FLUX.1-dev is guidance-distilled
        axes_dims_rope=[4, 4, 8],
    )
    text_encoder = CLIPTextModel(_clip_config(vocab_size))
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    vae = _vae(4, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_zimage(path: str | Path, seed: int = 0) -> Path:
    """Z-Image's layout: a Qwen3 text encoder with a chat template, the S3-DiT transformer, 16-channel VAE."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    path = Path(path)
    tokenizer = build_qwen_tokenizer(path / "tokenizer")
    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=16,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # created with torch.empty: give them values so every run is defined
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    text_encoder = Qwen3Model(
        Qwen3Config(
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=len(tokenizer),
            max_position_embeddings=1024,
        )
    )
    vae = _vae(16, scaling_factor=0.3611, shift_factor=0.1159)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False)
    pipe = ZImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


BUILDERS: dict[str, Callable[..., Path]] = {
    "sdxl": build_tiny_sdxl,
    "flux": build_tiny_flux,
    "zimage": build_tiny_zimage,
}


def build_tiny_family_model(family: str, cache_dir: str | Path) -> Path:
    """cache_dir/tiny-<family>, built once into a scratch folder and renamed: an existing one is complete."""
    import shutil
    import tempfile

    folder = Path(cache_dir) / f"tiny-{family}"
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".tiny-{family}-", dir=folder.parent))
    try:
        BUILDERS[family](scratch / "model")
        (scratch / "model").rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("families", nargs="*", help=f"some of {sorted(BUILDERS)} (default: all)")
    args = parser.parse_args(argv)
    for family in args.families or sorted(BUILDERS):
        print(f"tiny {family}: {build_tiny_family_model(family, args.out_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
