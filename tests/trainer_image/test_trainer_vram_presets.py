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
    assert adjusted.mixed_precision == "fp16"
    assert len(lines) == 5  # one line per change, each naming the key and why
    assert any("train_text_encoder True -> False" in line and "14.6 GB" in line for line in lines)


@pytest.mark.parametrize("vram_gb", [6.0, 8.0, 11.9, 14.6])
def test_small_gpus_keep_latent_caching_and_sdpa(vram_gb: float) -> None:
    """Cached latents are a few MB and let the VAE leave the GPU; xformers saves nothing over SDPA."""
    adjusted, lines = apply_vram_presets(GENEROUS, vram_gb)
    assert adjusted.not_cache_latents is False
    assert adjusted.attention == "sdpa"
    assert not any("not_cache_latents" in line or "attention" in line for line in lines)


def test_xformers_and_live_latents_asked_for_are_kept() -> None:
    asked = GENEROUS.model_copy(update={"attention": "xformers", "not_cache_latents": True})
    adjusted, _ = apply_vram_presets(asked, 8.0)
    assert adjusted.attention == "xformers" and adjusted.not_cache_latents is True


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
