"""The family loop: on the SD family it trains exactly what the SD loop trains (so SD LoRA can move onto it),
and it refuses what the families do not train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft.utils import get_peft_model_state_dict

from dreambooth_trainer.data import load_images
from dreambooth_trainer.families import get_family
from dreambooth_trainer.families.training import check_family_job, resolution_multiple, train_family
from dreambooth_trainer.hyperparameters import HyperparameterError, TrainingHyperparameters
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
