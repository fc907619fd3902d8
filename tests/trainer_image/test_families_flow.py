"""FLUX.1 and Z-Image training steps on the tiny models, against the flow-matching formulas by
hand: sigma from the scheduler's (shifted) table, noisy = (1 - sigma) * latents + sigma * noise,
target = noise - latents."""

from __future__ import annotations

import pytest
import torch

from dreambooth_trainer.families import get_family
from dreambooth_trainer.model_loading import BaseModelSource


def load(tiny_family_model, name: str, **options):
    family = get_family(name, max_sequence_length=16, **options)
    return family, family.load(BaseModelSource("folder", str(tiny_family_model(name))))


def hand_sigmas(seed: int, n: int, shift: float) -> torch.Tensor:
    u = torch.rand((n,), generator=torch.Generator().manual_seed(seed))
    index = (u * 1000).long()
    s = (1000 - index).double() / 1000  # the unshifted table: 1.0, 0.999, ..., 0.001
    return (shift * s / (1 + (shift - 1) * s)).float()


@pytest.mark.parametrize(("name", "shift", "channels"), [("flux", 1.0, 4), ("zimage", 3.0, 16)])
def test_one_step_noisy_input_and_target_by_hand(
    tiny_family_model, name: str, shift: float, channels: int
) -> None:
    # FLUX.1's scheduler shifts at inference only (dynamic shifting), so training sigmas are unshifted, as in
    # diffusers' script; Z-Image's config has a static shift of 3 that applies to training too.
    family, model = load(tiny_family_model, name)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((3, channels, 8, 8), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    batch = family.add_noise(model, latents, noise, torch.Generator().manual_seed(5))
    sigma = hand_sigmas(5, 3, shift)
    torch.testing.assert_close(batch.sigmas, sigma)
    torch.testing.assert_close(batch.timesteps, sigma * 1000)
    s = sigma.view(3, 1, 1, 1)
    torch.testing.assert_close(batch.noisy, (1 - s) * latents + s * noise)
    assert torch.equal(batch.target, noise - latents)
    assert torch.equal(batch.weighting, torch.ones(3))

    prediction = torch.zeros_like(latents)
    total, instance, _ = family.loss(prediction, batch, prior=False, prior_loss_weight=1.0)
    torch.testing.assert_close(total, ((noise - latents) ** 2).mean())


def test_flux_feeds_the_guidance_scale_to_a_guidance_distilled_transformer(tiny_family_model) -> None:
    outputs = []
    for guidance in (1.0, 3.5):
        family, model = load(tiny_family_model, "flux", guidance_scale=guidance)
        assert model.denoiser.config.guidance_embeds
        generator = torch.Generator().manual_seed(0)
        latents = torch.randn((1, 4, 8, 8), generator=generator)
        batch = family.add_noise(model, latents, torch.randn(latents.shape, generator=generator), generator)
        with torch.no_grad():
            prompts = family.encode_prompts(model, ["a photo of sks dog"], torch.device("cpu")).rows([0])
            outputs.append(family.predict(model, model.denoiser, batch, prompts))
    assert outputs[0].shape == (1, 4, 8, 8)  # packed 2x2 for the transformer, unpacked back
    assert (outputs[0] - outputs[1]).abs().max() > 1e-4


def test_zimage_negates_the_transformer_output_at_reversed_time(tiny_family_model) -> None:
    family, model = load(tiny_family_model, "zimage")
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((2, 16, 8, 8), generator=generator)
    batch = family.add_noise(model, latents, torch.randn(latents.shape, generator=generator), generator)
    with torch.no_grad():
        prompts = family.encode_prompts(model, ["a dog", "a photo of sks dog"], torch.device("cpu")).rows(
            [0, 1]
        )
        prediction = family.predict(model, model.denoiser, batch, prompts)
        raw = model.denoiser(
            [x.unsqueeze(1) for x in batch.noisy],
            1 - batch.timesteps / 1000,
            prompts["prompt_embeds"],
            return_dict=False,
        )[0]
    torch.testing.assert_close(prediction, -torch.stack([x[:, 0] for x in raw]))
