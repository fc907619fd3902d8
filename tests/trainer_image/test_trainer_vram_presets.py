"""Memory presets against simulated GPU sizes."""

from __future__ import annotations

import pytest

from dreambooth_trainer.hyperparameters import TrainingHyperparameters
from dreambooth_trainer.vram_presets import apply_vram_presets

GENEROUS = TrainingHyperparameters(
    instance_prompt="x",
    train_text_encoder=True,
    use_ema=True,
    mixed_precision="no",
    gradient_checkpointing=False,
    use_8bit_adam=False,
    attention="sdpa",
    not_cache_latents=False,
)


@pytest.mark.parametrize("vram_gb", [None, 16.0, 24.0, 80.0])
def test_enough_memory_or_cpu_changes_nothing(vram_gb: float | None) -> None:
    adjusted, lines = apply_vram_presets(GENEROUS, vram_gb)
    assert adjusted == GENEROUS and lines == []


def test_under_16_gb_drops_text_encoder_and_ema_and_saves_memory() -> None:
    adjusted, lines = apply_vram_presets(GENEROUS, 14.6)
    assert adjusted.train_text_encoder is False and adjusted.use_ema is False
    assert adjusted.use_8bit_adam and adjusted.gradient_checkpointing
    assert adjusted.mixed_precision == "fp16" and adjusted.attention == "xformers"
    assert adjusted.not_cache_latents is False  # 14.6 GB is low, not tight
    assert len(lines) == 6  # one line per change, each naming the key and why
    assert any("train_text_encoder True -> False" in line and "14.6 GB" in line for line in lines)


def test_tight_memory_also_stops_caching_latents() -> None:
    adjusted, lines = apply_vram_presets(GENEROUS, 8.0)
    assert adjusted.not_cache_latents is True
    assert len(lines) == 7


def test_settings_already_right_are_not_reported() -> None:
    frugal = GENEROUS.model_copy(
        update={
            "train_text_encoder": False,
            "use_ema": False,
            "mixed_precision": "bf16",
            "use_8bit_adam": True,
            "gradient_checkpointing": True,
            "attention": "xformers",
        }
    )
    adjusted, lines = apply_vram_presets(frugal, 15.0)
    assert adjusted == frugal and lines == []  # bf16 is already half precision: kept


def test_presets_can_be_turned_off() -> None:
    manual = GENEROUS.model_copy(update={"auto_vram_presets": False})
    assert apply_vram_presets(manual, 8.0) == (manual, [])
