"""SDXL specifics on the tiny model: size/crop time ids, both prompt embeddings, the fp32 VAE for encoding."""

from __future__ import annotations

import torch

from dreambooth_trainer.families import get_family
from dreambooth_trainer.families.sdxl import sdxl_time_ids
from dreambooth_trainer.model_loading import BaseModelSource


def load(tiny_family_model):
    family = get_family("sdxl")
    return family, family.load(BaseModelSource("folder", str(tiny_family_model("sdxl"))))


def test_time_ids_are_original_size_crop_and_target_size() -> None:
    ids = sdxl_time_ids((1024, 768), (16, 0), (1024, 1024))
    assert ids.tolist() == [[1024.0, 768.0, 16.0, 0.0, 1024.0, 1024.0]]


def test_prompts_give_both_encoders_hidden_states_and_the_pooled_embedding(tiny_family_model) -> None:
    family, model = load(tiny_family_model)
    with torch.no_grad():
        embeddings = family.encode_prompts(model, ["a", "a photo of sks dog"], torch.device("cpu"))
    rows = embeddings.rows([1])
    assert rows["prompt_embeds"].shape == (1, 77, 64)  # 32 + 32 channels side by side
    assert rows["text_embeds"].shape == (1, 32)


def test_the_unet_gets_the_training_size_as_time_ids(tiny_family_model) -> None:
    family, model = load(tiny_family_model)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((2, 4, 16, 16), generator=generator)  # 32 px with the tiny VAE's factor 2
    batch = family.add_noise(model, latents, torch.randn(latents.shape, generator=generator), generator)
    with torch.no_grad():
        prompts = family.encode_prompts(model, ["a photo of sks dog"], torch.device("cpu")).rows([0, 0])
        prediction = family.predict(model, model.denoiser, batch, prompts)

        def unet_with(time_ids: list[float]) -> torch.Tensor:
            conditions = {"text_embeds": prompts["text_embeds"], "time_ids": torch.tensor([time_ids] * 2)}
            return model.denoiser(
                batch.noisy, batch.timesteps, prompts["prompt_embeds"], added_cond_kwargs=conditions
            ).sample

        expected = unet_with([32.0, 32.0, 0.0, 0.0, 32.0, 32.0])
        other = unet_with([64.0, 64.0, 0.0, 0.0, 64.0, 64.0])
    torch.testing.assert_close(prediction, expected)
    assert (prediction - other).abs().max() > 1e-5  # the time ids matter, so the check above can fail


def test_latents_are_encoded_with_the_vae_upcast_to_fp32(tiny_family_model) -> None:
    family, model = load(tiny_family_model)
    vae = model.pipeline.vae
    assert vae.config.force_upcast
    pixels = torch.rand((1, 3, 32, 32)) * 2 - 1
    with torch.no_grad():
        reference_mean = vae.encode(pixels).latent_dist.mean
        vae.to(torch.bfloat16)  # as the loop leaves frozen modules under mixed precision
        mean, std = family.encode_images(model, pixels)
    assert vae.dtype == torch.float32 and mean.dtype == torch.float32
    # fp32 weights restored from bf16 differ in the low bits only: the encoding did not run in bf16 ranges
    torch.testing.assert_close(mean, reference_mean, atol=0.05, rtol=0.05)
    assert std.shape == mean.shape
