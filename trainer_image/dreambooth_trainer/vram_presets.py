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
# Below this every byte counts (8-12 GB cards): keep nothing cached on the device.
TIGHT_VRAM_GB = 12.0


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
        "attention": ("xformers", f"{low}: memory-efficient attention (SDPA stays if xformers is missing)"),
    }
    if hp.mixed_precision == "no":
        wanted["mixed_precision"] = ("fp16", f"{low}: half-precision activations")
    if vram_gb < TIGHT_VRAM_GB:
        tight = f"{vram_gb:.1f} GB VRAM < {TIGHT_VRAM_GB:g} GB"
        wanted["not_cache_latents"] = (True, f"{tight}: do not hold cached latents on the device")
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
