"""Memory presets: fit the requested settings to the GPU that the job actually got.

Pure (stdlib + the schema): callers pass the detected VRAM, so the rules are unit-tested with simulated sizes
and the Lambdas can preview what a given instance type will do. Every change comes back as one log line saying
why.
"""

from __future__ import annotations

from typing import Any

from .hyperparameters import TrainingHyperparameters

# Below this a full SD 1.5 fine-tune with a trained text encoder or an EMA copy does not fit.
LOW_VRAM_GB = 16.0

# What the presets deliberately leave alone, at any size:
# - latent caching: cached latents are a few MB, and caching lets the VAE leave the GPU before the loop;
#   not caching keeps the VAE there and encodes every step, which costs memory and time;
# - attention: PyTorch SDPA (the default) is memory-efficient already; xformers saves nothing over it and adds
#   a crash path, so it runs only when a job asks for it (and falls back to SDPA if it fails to switch on).


def _wanted(hp: TrainingHyperparameters, vram_gb: float) -> dict[str, tuple[Any, str]]:
    """Setting -> (value, reason) that this much VRAM calls for."""
    if vram_gb >= LOW_VRAM_GB:
        return {}
    low = f"{vram_gb:.1f} GB VRAM < {LOW_VRAM_GB:g} GB"
    wanted: dict[str, tuple[Any, str]] = {
        "train_text_encoder": (False, f"{low}: no room to train the text encoder"),
        "use_ema": (False, f"{low}: no room for an EMA copy of the UNet"),
        "use_8bit_adam": (True, f"{low}: 8-bit Adam quarters the optimizer state"),
        "gradient_checkpointing": (True, f"{low}: recompute activations instead of storing them"),
    }
    if hp.mixed_precision == "no":
        wanted["mixed_precision"] = ("fp16", f"{low}: half-precision activations")
    return wanted


def apply_vram_presets(
    hp: TrainingHyperparameters, vram_gb: float | None
) -> tuple[TrainingHyperparameters, list[str]]:
    """The adjusted settings and one line per change; CPU (None) or presets turned off change nothing."""
    if vram_gb is None or not hp.auto_vram_presets:
        return hp, []
    changes: dict[str, Any] = {}
    lines: list[str] = []
    for key, (value, reason) in _wanted(hp, vram_gb).items():
        if getattr(hp, key) != value:
            changes[key] = value
            lines.append(f"vram preset: {key} {getattr(hp, key)!r} -> {value!r} ({reason})")
    return (hp.model_copy(update=changes) if changes else hp), lines
