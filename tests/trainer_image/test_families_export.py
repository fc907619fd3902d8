"""Per family: train a LoRA for a few steps on the tiny model, export it, and load each written file into a
fresh copy of the family's diffusers pipeline with load_lora_weights: the denoiser's output must equal the
trained adapter's in memory (rank 4 with alpha 8, so a lost alpha shows), and the pipeline renders with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from dreambooth_trainer.families import get_family
from dreambooth_trainer.families.base import LORA_WEIGHT_NAME, add_lora
from dreambooth_trainer.model_loading import BaseModelSource

PROMPT = "a photo of sks dog"
RANK, ALPHA = 4, 8
OPTIONS = {"sdxl": {}, "flux": {"max_sequence_length": 16}, "zimage": {"max_sequence_length": 32}}
LATENT_CHANNELS = {"sdxl": 4, "flux": 4, "zimage": 16}
COMFY_PREFIX = {"sdxl": "lora_unet_", "flux": "transformer.", "zimage": "diffusion_model."}


def fixed_inputs(family, model, channels: int):
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn((1, channels, 16, 16), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    batch = family.add_noise(model, latents, noise, generator)
    with torch.no_grad():
        prompts = family.encode_prompts(model, [PROMPT], torch.device("cpu")).rows([0])
    return batch, prompts


def denoise(family, model, batch, prompts) -> torch.Tensor:
    model.denoiser.eval()
    with torch.no_grad():
        return family.predict(model, model.denoiser, batch, prompts)


@pytest.fixture(scope="module", params=["sdxl", "flux", "zimage"])
def exported(request, tiny_family_model, tmp_path_factory):
    name = request.param
    family = get_family(name, **OPTIONS[name])
    source = BaseModelSource("folder", str(tiny_family_model(name)))
    model = family.load(source)
    batch, prompts = fixed_inputs(family, model, LATENT_CHANNELS[name])
    base_output = denoise(family, model, batch, prompts)

    torch.manual_seed(0)
    add_lora(model.denoiser, family.lora_targets, rank=RANK, alpha=ALPHA)
    model.denoiser.train()
    optimizer = torch.optim.AdamW([p for p in model.denoiser.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(3):
        loss = family.loss(family.predict(model, model.denoiser, batch, prompts), batch, False, 1.0)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    trained_output = denoise(family, model, batch, prompts)
    out_dir = tmp_path_factory.mktemp(f"lora-{name}")
    files = family.export_lora(model, out_dir, "job", torch.float32)
    return name, family, source, out_dir, files, batch, prompts, base_output, trained_output


def test_two_files_are_written(exported) -> None:
    name, _, _, out_dir, files, *_ = exported
    assert files == [LORA_WEIGHT_NAME, "job-lora.safetensors"]
    with safe_open(str(out_dir / files[1]), framework="pt") as handle:
        keys = list(handle.keys())
        alphas = [handle.get_tensor(key).item() for key in keys if key.endswith(".alpha")]
    assert keys and all(key.startswith(COMFY_PREFIX[name]) for key in keys)
    modules = {key.rsplit(".lora_", 1)[0] for key in keys if ".lora_" in key}
    assert len(alphas) == len(modules) and set(alphas) == {ALPHA}


@pytest.mark.parametrize("file_index", [0, 1], ids=["diffusers", "comfyui"])
def test_each_file_reloads_the_trained_adapter(exported, file_index: int) -> None:
    _, family, source, out_dir, files, batch, prompts, base_output, trained_output = exported
    assert (trained_output - base_output).abs().max() > 1e-2  # training moved the output: the test can fail
    fresh = family.load(source)
    fresh.pipeline.load_lora_weights(str(out_dir), weight_name=files[file_index])
    reloaded = denoise(family, fresh, batch, prompts)
    torch.testing.assert_close(reloaded, trained_output, atol=1e-4, rtol=1e-4)

    image = family.render(fresh, PROMPT, steps=2, guidance=2.0, size=64, seed=0)
    pixels = np.asarray(image)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 0
