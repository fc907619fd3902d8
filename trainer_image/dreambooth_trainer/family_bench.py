"""The GPU benchmark's family runs: SDXL, FLUX.1-dev and Z-Image LoRA at their real architectures with
random weights (real_architectures.py, no download), trained by the real job path (family.load, the one loop).

On a GPU each family's denoiser and VAE are built at full size (SDXL UNet 2.6 B with both real CLIP text
encoders; FLUX.1-dev transformer 11.9 B; Z-Image transformer 6.2 B), saved once as a diffusers folder and
loaded as a job loads it, quantized as on the family's default instance. FLUX's T5-XXL and Z-Image's
Qwen3-4B are built shallow (one layer, the real width so the embeddings fit the transformer): the loop
caches the prompt embeddings and moves the text encoders off the GPU before the first step, so the
denoiser's steps and memory are what is measured, and the table says so. Without CUDA the tiny family
models (family_fixtures) run the same path at 64 px: proof that it works, no figures about a GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAMILIES = ("sdxl", "flux", "zimage")
STANDARD_JOB_STEPS = 1000


@dataclass(frozen=True)
class FamilyRun:
    resolution: int  # the resolution for this family's target
    gpu_gib: float  # the family's default instance's GPU as torch reports it: picks quantization and presets
    instance: str


FAMILY_RUNS = {
    "sdxl": FamilyRun(1024, 14.6, "ml.g4dn.xlarge (T4 16 GB)"),
    "flux": FamilyRun(512, 22.0, "ml.g6.xlarge (L4 24 GB)"),
    "zimage": FamilyRun(1024, 22.0, "ml.g6.xlarge (L4 24 GB)"),
}
TEXT_ENCODER_NOTE = (
    "text encoders: SDXL's two CLIPs at full size; FLUX's T5-XXL and Z-Image's Qwen3-4B built with one layer "
    "(real width): the loop caches prompt embeddings and frees the encoders before step 1, so the denoiser "
    "is what is measured"
)


def job_cost_usd(
    steps_per_second: float, spot_price_per_hour: float, steps: int = STANDARD_JOB_STEPS
) -> float:
    """Dollars of GPU time for a job of `steps` steps: steps / steps_per_s / 3600 x the hourly price."""
    if steps_per_second <= 0 or spot_price_per_hour < 0:
        raise ValueError("steps_per_second must be > 0 and spot_price_per_hour >= 0")
    return steps / steps_per_second / 3600 * spot_price_per_hour


def bench_text_encoder(family: str, part: str, vocab_size: int) -> Any:
    from transformers import Qwen3Config, Qwen3Model, T5Config, T5EncoderModel

    from . import real_architectures as real

    if family == "flux" and part == "text_encoder_2":
        config = {**real.T5_XXL_ENCODER, "num_layers": 1, "vocab_size": vocab_size}
        return T5EncoderModel(T5Config(**config, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    if family == "zimage":
        return Qwen3Model(Qwen3Config(**{**real.QWEN3_4B, "num_hidden_layers": 1, "vocab_size": vocab_size}))
    return real.text_encoder(family, part)


def build_real_family_model(family: str, folder: Path, scratch: Path) -> Path:
    """folder: a diffusers folder of the family at its real architecture, random weights, saved in bf16.
    Tokenizers and scheduler come from the tiny model (their configs match the real ones' kind)."""
    import diffusers
    import torch

    from . import real_architectures as real
    from .family_fixtures import build_tiny_family_model

    tiny = build_tiny_family_model(family, scratch)
    pipeline_class = getattr(diffusers, json.loads((tiny / "model_index.json").read_text())["_class_name"])
    pipe = pipeline_class.from_pretrained(tiny, local_files_only=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # 11.9 B parameters: never materialised in fp32
    try:
        with torch.device(device), torch.no_grad():
            parts: dict[str, Any] = {"transformer" if family != "sdxl" else "unet": real.denoiser(family)}
            parts["vae"] = real.vae(family)
            for name in ("text_encoder", "text_encoder_2"):
                if name in pipe.components:
                    vocab = len(pipe.components[name.replace("text_encoder", "tokenizer")])
                    parts[name] = bench_text_encoder(family, name, vocab)
            if family == "zimage":  # created with torch.empty: defined values
                parts["transformer"].x_pad_token.fill_(1.0)
                parts["transformer"].cap_pad_token.fill_(1.0)
    finally:
        torch.set_default_dtype(previous)
    full = pipeline_class(**{**pipe.components, **parts})
    full.save_pretrained(folder, safe_serialization=True)
    del full, parts, pipe
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def family_settings(family: str, steps: int, resolution: int, cuda: bool, use_8bit_adam: bool) -> Any:
    """A LoRA DreamBooth job's settings as the trainer derives them for the family on its default instance:
    the family's defaults (rank, learning rate, precision), gradient checkpointing, 8-bit AdamW."""
    from .families import get_family
    from .hyperparameters import TrainingHyperparameters

    hp = TrainingHyperparameters(
        instance_prompt="a photo of sks dog",
        training_method="lora",
        resolution=resolution,
        max_train_steps=steps,
        save_steps=0,
        logging_steps=10**6,
        num_samples=0,
        seed=0,
    )
    hp, _ = get_family(family).apply_defaults(hp)
    return hp.model_copy(
        update={
            "resolution": resolution,
            "max_train_steps": steps,
            "gradient_checkpointing": cuda,
            "use_8bit_adam": cuda and use_8bit_adam,
        }
    )


def run_family_child(
    family: str, model_dir: Path, images_dir: Path, steps: int, resolution: int, bnb_problem: str | None
) -> tuple[dict[str, Any], Any]:
    """(the row's settings, a callable that trains and returns the loop's result) for bench.measure."""
    import torch

    from .data import load_images
    from .families import get_family
    from .families.quantization import choose_base_quantization
    from .loop import train
    from .model_loading import BaseModelSource

    cuda = torch.cuda.is_available()
    run = FAMILY_RUNS[family]
    quantization, why = choose_base_quantization("auto", family, run.gpu_gib if cuda else None)
    if quantization != "none" and bnb_problem:  # measured without it, and the row says why
        quantization, why = "none", f"{quantization} wanted, but {bnb_problem}"
    hp = family_settings(family, steps, resolution, cuda, use_8bit_adam=bnb_problem is None)
    implementation = get_family(family)
    model = implementation.load(BaseModelSource("folder", str(model_dir)), quantization=quantization)
    instance, _ = load_images([images_dir / "instance"], resolution, True, hp.seed)
    row = {
        "family": family,
        "preset": f"{family}-lora",
        "variant": "optimized",
        "instance_type": run.instance,
        "base_quantization": quantization,
        "quantization_reason": why,
        "settings": {
            key: getattr(hp, key)
            for key in ("mixed_precision", "gradient_checkpointing", "use_8bit_adam", "lora_rank")
        },
    }

    def train_it(checkpoint_dir: Path) -> Any:
        return train(model, instance, [], hp, family=implementation, checkpoint_dir=checkpoint_dir)

    return row, train_it


def add_costs(rows: list[dict[str, Any]], spot_price_per_hour: float | None) -> None:
    """Each measured row gets the dollars of a standard job (1,000 steps) at the given spot price."""
    if spot_price_per_hour is None:
        return
    for row in rows:
        if row.get("steps_per_second"):
            row["cost_1000_steps_usd"] = round(job_cost_usd(row["steps_per_second"], spot_price_per_hour), 4)
