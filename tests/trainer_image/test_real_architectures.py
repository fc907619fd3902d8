"""The families' real architectures, counted on the meta device (no memory) against the published sizes,
and their configs fitting each other (text encoder widths the denoisers read)."""

from __future__ import annotations

import pytest

from dreambooth_trainer import real_architectures as real


@pytest.mark.parametrize(("family", "part"), sorted(real.PUBLISHED_BILLIONS))
def test_parameters_match_the_published_sizes(family: str, part: str) -> None:
    billions, tolerance = real.PUBLISHED_BILLIONS[(family, part)]
    assert real.count_on_meta(family, part) / 1e9 == pytest.approx(billions, rel=tolerance)


def test_known_exact_counts() -> None:
    # diffusers' own count of SDXL base 1.0's UNet and FLUX.1-dev's transformer (from their configs)
    assert real.count_on_meta("sdxl", "denoiser") == 2_567_463_684
    assert real.count_on_meta("flux", "denoiser") == 11_901_408_320


def test_the_configs_fit_each_other() -> None:
    unet, flux, zimage = real.SDXL_UNET, real.FLUX_DEV_TRANSFORMER, real.ZIMAGE_TRANSFORMER
    # SDXL: both CLIPs' hidden states concatenated; pooled bigG projection + 6 time ids x 256
    assert unet["cross_attention_dim"] == real.CLIP_L_TEXT["hidden_size"] + real.CLIP_BIGG_TEXT["hidden_size"]
    assert unet["projection_class_embeddings_input_dim"] == real.CLIP_BIGG_TEXT["projection_dim"] + 6 * 256
    assert flux["joint_attention_dim"] == real.T5_XXL_ENCODER["d_model"]
    assert flux["pooled_projection_dim"] == real.CLIP_L_TEXT["hidden_size"]
    assert flux["in_channels"] == real.FLUX_VAE["latent_channels"] * 4  # 2x2 packed latents
    assert zimage["cap_feat_dim"] == real.QWEN3_4B["hidden_size"]
    assert zimage["in_channels"] == real.ZIMAGE_VAE["latent_channels"]


def test_an_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="no real architecture for family 'sd'"):
        real.denoiser("sd")
