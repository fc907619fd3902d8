"""The family loop: on the SD family it trains exactly what the SD loop trains (so SD LoRA can move onto it),
and it refuses what the families do not train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft.utils import get_peft_model_state_dict

from dreambooth_trainer.checkpointing import latest_checkpoint
from dreambooth_trainer.data import load_images
from dreambooth_trainer.families import get_family
from dreambooth_trainer.families.training import (
    apply_family_defaults,
    check_family_job,
    check_precision,
    resolution_multiple,
    train_family,
)
from dreambooth_trainer.hyperparameters import (
    HyperparameterError,
    TrainingHyperparameters,
    parse_hyperparameters,
)
from dreambooth_trainer.loop import train
from dreambooth_trainer.model_loading import BaseModelSource, load_model_parts

SETTINGS = {
    "instance_prompt": "a photo of sks dog",
    "class_prompt": "a photo of a dog",
    "with_prior_preservation": True,
    "training_method": "lora",
    "resolution": 32,
    "max_train_steps": 3,
    "learning_rate": 1e-2,
    "lora_rank": 4,
    "lora_alpha": 8,
    "train_batch_size": 2,
    "logging_steps": 1,
}


def test_the_family_loop_on_sd_equals_the_sd_loop(tiny_model: Path, subject_images: Path, capsys) -> None:
    hp = TrainingHyperparameters(**SETTINGS)
    instance, _ = load_images([subject_images], 32, True, 0)
    class_images = instance[::-1]
    source = BaseModelSource("folder", str(tiny_model))

    sd_result = train(load_model_parts(source), instance, class_images, hp)
    sd_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[metrics]")]
    family = get_family("sd")
    family_result = train_family(family, family.load(source), instance, class_images, hp)
    family_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[metrics]")]

    def losses(lines: list[str]) -> list[str]:
        return [" ".join(part for part in line.split() if "loss" in part) for line in lines]

    assert len(sd_lines) == 3 and losses(family_lines) == losses(sd_lines)
    expected = get_peft_model_state_dict(sd_result.unet)
    trained = get_peft_model_state_dict(family_result.unet)
    assert expected.keys() == trained.keys()
    for key, value in expected.items():
        assert torch.equal(trained[key], value), key


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"training_method": "full"}, "LoRA adapters only"),
        ({"train_text_encoder": True}, "train_text_encoder"),
        ({"resolution": 62}, "needs a multiple of 4"),
    ],
)
def test_what_families_do_not_train_is_refused(tiny_family_model, change: dict, message: str) -> None:
    model = get_family("flux").load(BaseModelSource("folder", str(tiny_family_model("flux"))))
    assert resolution_multiple(model) == 4  # VAE factor 2 x 2x2 latent patches
    with pytest.raises(HyperparameterError, match=message):
        # model_copy: the hyperparameter model's own check (multiples of 8) would stop 62 before the family's
        check_family_job(
            model, TrainingHyperparameters(**{**SETTINGS, "resolution": 64}).model_copy(update=change)
        )


def test_family_defaults_fill_only_what_the_job_left_out() -> None:
    hp = parse_hyperparameters({"instance_prompt": "a photo of sks dog", "learning_rate": "3e-4"})
    updated, lines = apply_family_defaults(hp, "sdxl")
    assert (updated.resolution, updated.max_train_steps, updated.lora_rank) == (1024, 500, 16)
    assert updated.training_method == "lora" and updated.effective_lora_alpha == 16
    assert updated.learning_rate == 3e-4  # set by the job: kept
    assert "sdxl default: resolution = 1024" in lines
    flux, _ = apply_family_defaults(hp, "flux")
    assert (flux.resolution, flux.mixed_precision) == (512, "bf16")


@pytest.mark.parametrize(
    ("family", "precision", "cuda", "native_bf16", "message"),
    [
        ("flux", "bf16", True, False, "native bf16"),
        ("zimage", "fp16", True, True, "bf16 only"),
        ("flux", "bf16", True, True, None),
        ("flux", "bf16", False, False, None),  # CPU: fp32
        ("sdxl", "fp16", True, False, None),  # SDXL on a T4 in fp16 is the plan
    ],
)
def test_flux_class_families_refuse_gpus_without_bf16(
    family: str, precision: str, cuda: bool, native_bf16: bool, message: str | None
) -> None:
    if message is None:
        check_precision(family, precision, cuda, native_bf16)
    else:
        with pytest.raises(HyperparameterError, match=message):
            check_precision(family, precision, cuda, native_bf16)


def test_a_family_job_without_a_resolution_trains_at_the_family_default(new_job, tiny_family_model) -> None:
    # training_method and lora_rank are left out: the family's (lora, rank 16) apply. The resolution is set,
    # as the family's 1024 px would make this tiny run slow (its default is checked above).
    job = new_job({"resolution": "64", "max_train_steps": "1", "num_samples": "0"}, model=False)
    job.add_channel("model", tiny_family_model("zimage"))
    assert job.run() == 0, job.failure
    record = json.loads((job.model_dir / "dreambooth.json").read_text())
    assert record["kind"] == "lora" and record["hyperparameters"]["lora_rank"] == "16"


def test_a_resumed_family_run_ends_where_the_uninterrupted_one_does(
    tiny_family_model, subject_images: Path, tmp_path: Path
) -> None:
    hp = TrainingHyperparameters(
        **{**SETTINGS, "resolution": 64, "with_prior_preservation": False, "save_steps": 2}
    )
    instance, _ = load_images([subject_images], 64, True, 0)
    source = BaseModelSource("folder", str(tiny_family_model("flux")))
    family = get_family("flux", max_sequence_length=16)

    first = train_family(family, family.load(source), instance, [], hp, checkpoint_dir=tmp_path)
    assert first.resumed_from == 0 and latest_checkpoint(tmp_path) is not None  # saved at step 2
    resumed = train_family(family, family.load(source), instance, [], hp, checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 2 and resumed.global_step == 3
    expected = get_peft_model_state_dict(first.unet)
    for key, value in get_peft_model_state_dict(resumed.unet).items():
        assert torch.equal(value, expected[key]), key
