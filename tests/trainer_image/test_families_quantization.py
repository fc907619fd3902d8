"""Quantized base weights: which quantization a job gets, the FLUX transformer loaded NF4 by diffusers'
bitsandbytes integration, a LoRA trained on top with the one loop, and its export loading into the
unquantized pipeline.

diffusers 0.42.1 refuses bitsandbytes loading without a GPU (its quantizer's validate_environment: "No GPU
found"), though bitsandbytes 0.50 runs NF4 on the CPU. The CPU tests lift only that guard (cpu_bnb);
the rest is diffusers' real loading path, with device_map="cpu".
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from peft.utils import get_peft_model_state_dict

from dreambooth_trainer.data import load_images
from dreambooth_trainer.errors import BaseModelError
from dreambooth_trainer.families import get_family
from dreambooth_trainer.families.quantization import choose_base_quantization, is_quantized
from dreambooth_trainer.hyperparameters import (
    HyperparameterError,
    TrainingHyperparameters,
    parse_hyperparameters,
)
from dreambooth_trainer.loop import train
from dreambooth_trainer.model_loading import BaseModelSource

PROMPT = "a photo of sks dog"


@pytest.mark.parametrize(
    ("requested", "family", "gpu_gib", "expected"),
    [
        ("auto", "flux", 22.0, "nf4"),  # L4 24 GB
        ("auto", "zimage", 40.0, "nf4"),  # A100 40 GB: still the small-card choice
        ("auto", "flux", 79.1, "int8"),  # H100 80 GB
        ("auto", "flux", None, "none"),  # CPU: full weights unless asked
        ("nf4", "flux", None, "nf4"),
        ("off", "flux", 22.0, "none"),
        ("int8", "zimage", 22.0, "int8"),
        ("auto", "sdxl", 14.6, "none"),
        ("off", "sd", None, "none"),
    ],
)
def test_the_choice_follows_family_gpu_and_request(
    requested: str, family: str, gpu_gib: float | None, expected: str
) -> None:
    choice, why = choose_base_quantization(requested, family, gpu_gib)
    assert choice == expected and why


@pytest.mark.parametrize(("family", "requested"), [("sd", "nf4"), ("sdxl", "int8")])
def test_sd_families_refuse_a_quantized_base_naming_the_setting(family: str, requested: str) -> None:
    with pytest.raises(HyperparameterError, match=f"'base_quantization' = {requested}: {family} base models"):
        choose_base_quantization(requested, family, 14.6)


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [(None, "auto"), ("NF4", "nf4"), ("4bit", "nf4"), ('"int8"', "int8"), ("off", "off"), ("no", "off")],
)
def test_the_hyperparameter_accepts_strings(raw: str | None, parsed: str) -> None:
    values = {"instance_prompt": PROMPT} | ({} if raw is None else {"base_quantization": raw})
    assert parse_hyperparameters(values).base_quantization == parsed


def test_none_is_sagemakers_unset_so_auto_and_off_round_trips() -> None:
    assert (
        parse_hyperparameters({"instance_prompt": PROMPT, "base_quantization": "none"}).base_quantization
        == "auto"
    )
    hp = TrainingHyperparameters(instance_prompt=PROMPT, base_quantization="off")
    assert parse_hyperparameters(hp.to_sagemaker_strings()).base_quantization == "off"


def test_a_bad_quantization_names_the_key() -> None:
    with pytest.raises(HyperparameterError, match="base_quantization"):
        parse_hyperparameters({"instance_prompt": PROMPT, "base_quantization": "fp8"})


def linear_kinds(module: torch.nn.Module) -> set[str]:
    return {type(m).__name__ for m in module.modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("name", ["flux", "zimage"])
def test_nf4_loads_the_transformer_linears_as_bnb_4bit(cpu_bnb, tiny_family_model, name: str) -> None:
    import bitsandbytes as bnb

    family = get_family(name)
    model = family.load(BaseModelSource("folder", str(tiny_family_model(name))), quantization="nf4")
    transformer = model.denoiser
    assert is_quantized(transformer)
    targets = [
        (module_name, module)
        for module_name, module in transformer.named_modules()
        if module_name.rsplit(".", 1)[-1] in family.lora_targets or module_name.endswith("to_out.0")
    ]
    assert targets  # every layer the LoRA targets is 4-bit NF4
    for module_name, layer in targets:
        assert isinstance(layer, bnb.nn.Linear4bit), module_name
        assert layer.weight.quant_state.quant_type == "nf4" and layer.weight.dtype == torch.uint8
    assert not is_quantized(model.pipeline.vae)  # only the denoiser


def test_none_keeps_full_weights(tiny_family_model) -> None:
    family = get_family("flux", max_sequence_length=16)
    model = family.load(BaseModelSource("folder", str(tiny_family_model("flux"))), quantization="none")
    assert not is_quantized(model.denoiser)
    assert linear_kinds(model.denoiser) == {"Linear"}
    assert {p.dtype for p in model.denoiser.parameters()} == {torch.float32}


def test_without_a_gpu_diffusers_refuses_quantized_loading_clearly(tiny_family_model) -> None:
    family = get_family("flux", max_sequence_length=16)
    with pytest.raises(BaseModelError, match="cannot load base model .*GPU"):
        family.load(BaseModelSource("folder", str(tiny_family_model("flux"))), quantization="nf4")


def test_a_lora_on_the_nf4_base_trains_and_loads_into_the_full_precision_pipeline(
    cpu_bnb, tiny_family_model, subject_images: Path, tmp_path: Path, capsys
) -> None:
    hp = TrainingHyperparameters(
        instance_prompt=PROMPT,
        training_method="lora",
        resolution=64,
        max_train_steps=3,
        learning_rate=1e-2,
        lora_rank=4,
        lora_alpha=8,
        train_batch_size=2,
        logging_steps=1,
        base_quantization="nf4",
    )
    instance, _ = load_images([subject_images], 64, True, 0)
    source = BaseModelSource("folder", str(tiny_family_model("flux")))
    family = get_family("flux", max_sequence_length=16)
    model = family.load(source, quantization="nf4")

    result = train(model, instance, [], hp, family=family)
    losses = [float(m) for m in re.findall(r"\[metrics\].*? loss=([-\d.e+naif]+)", capsys.readouterr().out)]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    adapter = get_peft_model_state_dict(result.unet)
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(torch.isfinite(v).all() for v in adapter.values())
    assert any(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero: training moved it
    assert all(v.dtype == torch.float32 for v in adapter.values())  # the adapter trains in fp32
    assert is_quantized(result.unet)  # the base stayed quantized and frozen
    assert not any(p.requires_grad for n, p in result.unet.named_parameters() if "lora_" not in n)

    files = family.export_lora(model, tmp_path, "job", torch.float32)
    fresh = family.load(source)  # full precision
    fresh.pipeline.load_lora_weights(str(tmp_path), weight_name=files[0], adapter_name="job")
    loaded = get_peft_model_state_dict(fresh.denoiser, adapter_name="job")
    assert loaded.keys() == adapter.keys()
    for key, value in adapter.items():
        torch.testing.assert_close(loaded[key], value.cpu())
    image = family.render(fresh, PROMPT, steps=2, guidance=2.0, size=64, seed=0)
    pixels = np.asarray(image)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 0


def test_an_sd_job_asking_for_nf4_fails_before_training_naming_the_setting(new_job) -> None:
    job = new_job({"base_quantization": "nf4", "max_train_steps": "1"})
    assert job.run() != 0
    assert "'base_quantization' = nf4: sd base models train on full-precision weights" in job.failure
    assert "Traceback" not in job.failure


def test_a_flux_job_logs_the_choice(new_job, tiny_family_model, caplog) -> None:
    job = new_job(
        {"resolution": "64", "max_train_steps": "1", "num_samples": "0", "base_quantization": "off"},
        model=False,
    )
    job.add_channel("model", tiny_family_model("flux"))
    with caplog.at_level("INFO", logger="dreambooth_trainer.job"):
        assert job.run() == 0, job.failure
    assert (
        "base weights: none (base_quantization=off as the job asked: full-precision base weights)"
        in caplog.text
    )
