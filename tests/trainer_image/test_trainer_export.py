"""LoRA export: both files (diffusers and kohya naming) reload at the strength the adapter was trained with.

A rank-4 / alpha-16 adapter scales its update by alpha/rank = 4. A file that loses alpha reloads at scale 1
(a quarter of the trained update), which the comparisons below catch: the tolerance is 2 % of the adapter's
own effect, the error without alpha would be 75 % of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors import safe_open

from dreambooth_trainer.data import load_images
from dreambooth_trainer.export import LORA_WEIGHT_NAME, export_model, kohya_lora_name
from dreambooth_trainer.hyperparameters import TrainingHyperparameters
from dreambooth_trainer.loop import train
from dreambooth_trainer.model_loading import BaseModelSource, load_model_parts

RANK, ALPHA = 4, 16.0


def _outputs(unet: torch.nn.Module, text_encoder: torch.nn.Module, ids, latents) -> tuple:
    with torch.no_grad():
        text = text_encoder(ids, return_dict=False)[0].float()
        noise = unet(latents, torch.tensor([500]), text).sample.float()
    return text, noise


@pytest.fixture(scope="module")
def trained_lora(tiny_model: Path, subject_images: Path, tmp_path_factory: pytest.TempPathFactory):
    """A LoRA (UNet + text encoder, rank 4, alpha 16) trained by the real loop, its in-memory outputs, and
    the folder export_model wrote (fp16, the default output dtype)."""
    hp = TrainingHyperparameters(
        instance_prompt="a photo of sks dog",
        model_name="sks dog/v1",
        training_method="lora",
        train_text_encoder=True,
        lora_rank=RANK,
        lora_alpha=ALPHA,
        resolution=32,
        max_train_steps=4,
        learning_rate=1e-2,
        logging_steps=10,
        num_threads=1,
        center_crop=True,
    )
    parts = load_model_parts(BaseModelSource("folder", str(tiny_model)))
    images, _ = load_images([subject_images], hp.resolution, hp.center_crop, hp.seed)
    result = train(parts, images, [], hp)
    ids = parts.tokenizer(
        hp.instance_prompt, padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    trained = _outputs(result.unet, result.text_encoder, ids, latents)
    out_dir = tmp_path_factory.mktemp("lora-export")
    record = export_model(parts, result, hp, out_dir, extra={})
    return {"dir": out_dir, "record": record, "ids": ids, "latents": latents, "trained": trained}


def _reloaded(tiny_model: Path, folder: Path, weight_name: str, ids, latents) -> tuple:
    """The base pipeline's outputs before and after load_lora_weights(folder/weight_name)."""
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    base = _outputs(pipe.unet, pipe.text_encoder, ids, latents)
    pipe.load_lora_weights(str(folder), weight_name=weight_name)
    return base, _outputs(pipe.unet, pipe.text_encoder, ids, latents)


@pytest.mark.parametrize("file", ["diffusers", "kohya"])
def test_both_lora_files_reload_at_the_trained_strength(trained_lora, tiny_model: Path, file: str) -> None:
    name = LORA_WEIGHT_NAME if file == "diffusers" else kohya_lora_name("sks dog/v1")
    (base_text, base_noise), (text, noise) = _reloaded(
        tiny_model, trained_lora["dir"], name, trained_lora["ids"], trained_lora["latents"]
    )
    trained_text, trained_noise = trained_lora["trained"]
    for what, got, want, before in (
        ("text encoder", text, trained_text, base_text),
        ("UNet", noise, trained_noise, base_noise),
    ):
        effect = (want - before).abs().max().item()
        error = (got - want).abs().max().item()
        assert effect > 1e-2, (
            f"{what}: the adapter barely changed the output ({effect}); the test proves nothing"
        )
        # fp16 weights: relative error ~1e-3 of the effect; a lost alpha would leave 75 % of it.
        assert error <= 0.02 * effect, f"{what}: reloaded output off by {error} (adapter effect {effect})"


def test_kohya_file_uses_the_webui_names_and_carries_alpha(trained_lora) -> None:
    name = kohya_lora_name("sks dog/v1")
    assert name == "sks-dog-v1-lora.safetensors"
    assert trained_lora["record"]["kohya_lora_name"] == name
    assert trained_lora["record"]["lora_weight_name"] == LORA_WEIGHT_NAME
    assert sorted(p.name for p in trained_lora["dir"].glob("*.safetensors")) == [
        LORA_WEIGHT_NAME,
        name,
    ]
    with safe_open(trained_lora["dir"] / name, framework="pt") as f:
        keys = set(f.keys())
        alphas = {k: f.get_tensor(k) for k in keys if k.endswith(".alpha")}
        metadata = f.metadata()
    modules = {k.split(".")[0] for k in keys}
    assert all(k.startswith(("lora_unet_", "lora_te_text_model_encoder_layers_")) for k in modules), modules
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q" in modules
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in modules
    # one alpha, one down and one up per adapted module, and every alpha is the trained one
    assert len(alphas) == len(modules) and len(keys) == 3 * len(modules)
    assert all(value.item() == ALPHA for value in alphas.values())
    assert metadata["ss_network_dim"] == str(RANK) and metadata["ss_network_alpha"] == "16"


def test_diffusers_file_records_the_adapter_config(trained_lora) -> None:
    with safe_open(trained_lora["dir"] / LORA_WEIGHT_NAME, framework="pt") as f:
        metadata = json.loads(f.metadata()["lora_adapter_metadata"])
        keys = list(f.keys())
    for component in ("unet", "text_encoder"):
        assert metadata[f"{component}.r"] == RANK and metadata[f"{component}.lora_alpha"] == ALPHA
        assert metadata[f"{component}.base_model_name_or_path"] is None  # no container paths leak
    assert any(k.startswith("text_encoder.text_model.encoder.layers.") for k in keys)
