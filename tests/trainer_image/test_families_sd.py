"""The SD family: today's DDPM noise and targets, checked by hand, and the loaded parts being today's."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from dreambooth_trainer.errors import BaseModelError
from dreambooth_trainer.families import get_family
from dreambooth_trainer.families.sd import ddpm_noised
from dreambooth_trainer.model_loading import BaseModelSource


def scheduler(prediction_type: str) -> DDPMScheduler:
    return DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type=prediction_type
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddpm_noise_and_target_by_hand(prediction_type: str) -> None:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((2, 4, 4, 4), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    sched = scheduler(prediction_type)
    batch = ddpm_noised(sched, latents, noise, torch.Generator().manual_seed(3))
    timesteps = torch.randint(0, 1000, (2,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(batch.timesteps, timesteps)
    a = sched.alphas_cumprod[timesteps].view(2, 1, 1, 1)
    torch.testing.assert_close(batch.noisy, a.sqrt() * latents + (1 - a).sqrt() * noise)
    expected = noise if prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * latents
    torch.testing.assert_close(batch.target, expected)


def test_an_unknown_prediction_type_is_an_error() -> None:
    latents = torch.zeros((1, 4, 2, 2))
    with pytest.raises(BaseModelError, match="prediction_type 'sample'.*epsilon or v_prediction"):
        ddpm_noised(scheduler("sample"), latents, latents, torch.Generator().manual_seed(0))


def test_the_sd_family_loads_todays_parts_and_predicts_like_the_loop(tiny_model) -> None:
    family = get_family("sd")
    model = family.load(BaseModelSource("folder", str(tiny_model)))
    assert type(model.pipeline).__name__ == "StableDiffusionPipeline"
    assert type(model.training_scheduler).__name__ == "DDPMScheduler"
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((1, 4, 8, 8), generator=generator)
    batch = family.add_noise(model, latents, torch.randn(latents.shape, generator=generator), generator)
    with torch.no_grad():
        prompts = family.encode_prompts(model, ["a photo of sks dog"], torch.device("cpu"))
        prediction = family.predict(model, model.denoiser, batch, prompts.rows([0]))
        tokens = model.pipeline.tokenizer(
            ["a photo of sks dog"], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        hidden = model.pipeline.text_encoder(tokens, return_dict=False)[0]
        expected = model.pipeline.unet(batch.noisy, batch.timesteps, hidden, return_dict=False)[0]
    torch.testing.assert_close(prediction, expected)
