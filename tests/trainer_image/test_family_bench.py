"""The family benchmark's pure parts: the cost of a standard job by hand, which rows get it, the settings
and quantization each family is measured with, and the shallow text encoders fitting the real denoisers."""

from __future__ import annotations

import pytest
import torch

from dreambooth_trainer import real_architectures as real
from dreambooth_trainer.families.quantization import choose_base_quantization
from dreambooth_trainer.family_bench import (
    FAMILY_RUNS,
    add_costs,
    bench_text_encoder,
    family_settings,
    job_cost_usd,
)


def test_a_standard_job_costs_steps_over_speed_times_the_hourly_price() -> None:
    # 1000 steps at 0.5 steps/s = 2000 s = 0.5556 h; at $0.30/h: $0.16667
    assert job_cost_usd(0.5, 0.30) == pytest.approx(1000 / 0.5 / 3600 * 0.30)
    assert job_cost_usd(0.5, 0.30) == pytest.approx(0.166667, abs=1e-6)
    assert job_cost_usd(2.0, 0.90, steps=500) == pytest.approx(0.0625)  # 250 s at $0.90/h
    with pytest.raises(ValueError, match="steps_per_second"):
        job_cost_usd(0.0, 0.30)


def test_only_measured_rows_get_a_cost() -> None:
    rows = [{"steps_per_second": 0.25}, {"error": "out of memory", "steps_per_second": None}]
    add_costs(rows, 0.36)
    assert rows[0]["cost_1000_steps_usd"] == 0.4  # 4000 s at $0.36/h
    assert "cost_1000_steps_usd" not in rows[1]
    untouched = [{"steps_per_second": 1.0}]
    add_costs(untouched, None)
    assert untouched == [{"steps_per_second": 1.0}]


@pytest.mark.parametrize(
    ("family", "resolution", "quantization", "precision"),
    [("sdxl", 1024, "none", "fp16"), ("flux", 512, "nf4", "bf16"), ("zimage", 1024, "nf4", "bf16")],
)
def test_each_family_is_measured_as_on_its_default_instance(
    family: str, resolution: int, quantization: str, precision: str
) -> None:
    run = FAMILY_RUNS[family]
    assert run.resolution == resolution  # the targets: SDXL 1024, FLUX 512 with NF4, Z-Image 1024
    assert choose_base_quantization("auto", family, run.gpu_gib)[0] == quantization
    hp = family_settings(family, 20, resolution, cuda=True, use_8bit_adam=True)
    assert (hp.training_method, hp.mixed_precision, hp.resolution, hp.max_train_steps) == (
        "lora",
        precision,
        resolution,
        20,
    )
    assert hp.gradient_checkpointing and hp.use_8bit_adam and not hp.with_prior_preservation


@pytest.mark.parametrize(
    ("family", "part", "width"),
    [
        ("flux", "text_encoder_2", real.FLUX_DEV_TRANSFORMER["joint_attention_dim"]),
        ("zimage", "text_encoder", real.ZIMAGE_TRANSFORMER["cap_feat_dim"]),
    ],
)
def test_shallowbench_text_encoders_keep_the_width_the_denoiser_reads(
    family: str, part: str, width: int
) -> None:
    with torch.device("meta"):
        encoder = bench_text_encoder(family, part, vocab_size=1000)
    assert encoder.config.hidden_size == width
    layers = getattr(encoder.config, "num_layers", None) or encoder.config.num_hidden_layers
    assert layers == 1


def test_the_real_model_folder_is_assembled_as_a_job_loads_it(monkeypatch, tmp_path) -> None:
    """The GPU build's assembly on CPU: the real denoiser and VAE swapped for small ones (a 6 B transformer
    is a GPU's job), the shallow Qwen3 at its real width, the tiny model's tokenizer and scheduler."""
    from diffusers import AutoencoderKL, ZImageTransformer2DModel

    from dreambooth_trainer.families import get_family
    from dreambooth_trainer.family_bench import build_real_family_model
    from dreambooth_trainer.model_loading import BaseModelSource

    small = {**real.ZIMAGE_TRANSFORMER, "dim": 32, "n_layers": 1, "n_refiner_layers": 1, "n_heads": 2}
    small |= {"n_kv_heads": 2, "axes_dims": [8, 4, 4], "axes_lens": [256, 32, 32]}
    monkeypatch.setattr(real, "denoiser", lambda family: ZImageTransformer2DModel(**small))
    monkeypatch.setattr(
        real,
        "vae",
        lambda family: AutoencoderKL(latent_channels=16, block_out_channels=[8], norm_num_groups=8),
    )
    folder = build_real_family_model("zimage", tmp_path / "model", tmp_path / "scratch")
    model = get_family("zimage").load(BaseModelSource("folder", str(folder)))
    encoder = model.pipeline.text_encoder
    assert (encoder.config.hidden_size, encoder.config.num_hidden_layers) == (2560, 1)
    assert encoder.config.intermediate_size == real.QWEN3_4B["intermediate_size"]
    assert encoder.get_input_embeddings().num_embeddings == len(model.pipeline.tokenizer)
    transformer = model.denoiser
    assert torch.equal(transformer.x_pad_token, torch.ones_like(transformer.x_pad_token))
    assert torch.get_default_dtype() == torch.float32  # the bf16 default was only for the build
