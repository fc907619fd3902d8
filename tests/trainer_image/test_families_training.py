"""The one loop: on SD it trains exactly what the SD loop trained before the families joined it (losses and
weights recorded from that loop), it refuses what a family does not train, and a resumed FLUX run ends
bit-identical to the uninterrupted one."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from peft.utils import get_peft_model_state_dict

from dreambooth_trainer.data import load_images
from dreambooth_trainer.errors import TrainingStopped
from dreambooth_trainer.families import get_family
from dreambooth_trainer.families.rules import (
    apply_family_defaults,
    check_family_job,
    check_precision,
    resolution_multiple,
)
from dreambooth_trainer.hyperparameters import (
    HyperparameterError,
    TrainingHyperparameters,
    parse_hyperparameters,
)
from dreambooth_trainer.loop import train
from dreambooth_trainer.model_loading import BaseModelSource, load_model_parts
from dreambooth_trainer.sagemaker_contract import StopSignal

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


# What the SD loop printed and trained on main before the family loop was merged into it (commit 9f69460:
# loop.train on load_model_parts, same tiny model, photos and settings), recorded by hand.
BEFORE_THE_MERGE = {
    "lora": (
        {},
        [
            "loss=2.121645 instance_loss=1.064936 prior_loss=1.056708",
            "loss=2.214056 instance_loss=1.096299 prior_loss=1.117756",
            "loss=2.201975 instance_loss=1.128561 prior_loss=1.073413",
        ],
        2364.8708487031254,  # sum of |LoRA weights| of the UNet after 3 steps
    ),
    "full_text_encoder_ema": (
        {
            "with_prior_preservation": False,
            "training_method": "full",
            "train_text_encoder": True,
            "use_ema": True,
            "learning_rate": 1e-3,
            "gradient_accumulation_steps": 2,
        },
        [
            "loss=1.091424 instance_loss=1.091424 prior_loss=0.000000",
            "loss=0.922985 instance_loss=0.922985 prior_loss=0.000000",
            "loss=0.745594 instance_loss=0.745594 prior_loss=0.000000",
        ],
        55099.95455036995,  # sum of |UNet weights| (the EMA copy) after 3 steps
    ),
}
TEXT_ENCODER_BEFORE_THE_MERGE = {
    "full_text_encoder_ema": 2914.3364851283127,  # sum of |text encoder weights| after 3 steps
}


@pytest.mark.parametrize("case", sorted(BEFORE_THE_MERGE))
def test_the_one_loop_on_sd_trains_what_the_sd_loop_trained(
    tiny_model: Path, subject_images: Path, capsys, case: str
) -> None:
    change, expected_losses, expected_sum = BEFORE_THE_MERGE[case]
    hp = TrainingHyperparameters(**{**SETTINGS, **change})
    instance, _ = load_images([subject_images], 32, True, 0)
    class_images = instance[::-1] if hp.with_prior_preservation else []
    source = BaseModelSource("folder", str(tiny_model))
    family = get_family("sd")

    result = train(family.load(source), instance, class_images, hp, family=family)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[metrics]")]
    losses = [" ".join(part for part in line.split() if "loss" in part) for line in lines]
    assert losses == expected_losses
    weights = trained_weights(result.unet, hp)
    assert abs_sum(weights) == pytest.approx(expected_sum, rel=1e-9)
    if case in TEXT_ENCODER_BEFORE_THE_MERGE:
        text_encoder = result.text_encoder.state_dict()
        assert abs_sum(text_encoder) == pytest.approx(TEXT_ENCODER_BEFORE_THE_MERGE[case], rel=1e-9)
    # Loaded SD parts (the benchmarks' way in) are taken as the SD family's model: the same run.
    again = trained_weights(train(load_model_parts(source), instance, class_images, hp).unet, hp)
    assert again.keys() == weights.keys()
    for key, value in again.items():
        assert torch.equal(value, weights[key]), key


def trained_weights(unet: torch.nn.Module, hp: TrainingHyperparameters) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(unet) if hp.training_method == "lora" else unet.state_dict()


def abs_sum(weights: dict[str, torch.Tensor]) -> float:
    return float(sum(v.double().abs().sum() for v in weights.values()))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"training_method": "full"}, "LoRA adapters only"),
        ({"train_text_encoder": True}, "train_text_encoder"),
        ({"resolution": 62}, "needs a multiple of 4"),
    ],
)
def test_what_families_do_not_train_is_refused(tiny_family_model, change: dict, message: str) -> None:
    family = get_family("flux")
    model = family.load(BaseModelSource("folder", str(tiny_family_model("flux"))))
    assert resolution_multiple(model) == 4  # VAE factor 2 x 2x2 latent patches
    with pytest.raises(HyperparameterError, match=message):
        # model_copy: the hyperparameter model's own check (multiples of 8) would stop 62 before the family's
        check_family_job(
            family, model, TrainingHyperparameters(**{**SETTINGS, "resolution": 64}).model_copy(update=change)
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


def test_a_resumed_flux_run_ends_bit_identical_to_the_uninterrupted_one(
    tiny_family_model, subject_images: Path, tmp_path: Path
) -> None:
    hp = TrainingHyperparameters(
        **{**SETTINGS, "resolution": 64, "with_prior_preservation": False, "save_steps": 2}
    )
    instance, _ = load_images([subject_images], 64, True, 0)
    source = BaseModelSource("folder", str(tiny_family_model("flux")))
    family = get_family("flux", max_sequence_length=16)

    uninterrupted = tmp_path / "uninterrupted"
    first = train(family.load(source), instance, [], hp, family=family, checkpoint_dir=uninterrupted)
    assert first.resumed_from == 0
    # The periodic checkpoint and the one after the last step, both kept.
    assert sorted(p.name for p in uninterrupted.iterdir()) == ["step-00000002", "step-00000003"]
    restarted = tmp_path / "restarted"  # what SageMaker restores after a reclaim between steps 2 and 3
    shutil.copytree(uninterrupted / "step-00000002", restarted / "step-00000002")
    resumed = train(family.load(source), instance, [], hp, family=family, checkpoint_dir=restarted)
    assert resumed.resumed_from == 2 and resumed.global_step == 3
    expected = get_peft_model_state_dict(first.unet)
    trained = get_peft_model_state_dict(resumed.unet)
    assert expected.keys() == trained.keys() and expected
    for key, value in trained.items():
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize(
    ("min_steps", "outcome"),
    [(1, "a restarted job resumes from the checkpoint at step 1"), (10, "no checkpoint yet")],
)
def test_a_stopped_flux_run_follows_the_sigterm_policy(
    tiny_family_model, subject_images: Path, tmp_path: Path, min_steps: int, outcome: str
) -> None:
    hp = TrainingHyperparameters(
        **{**SETTINGS, "resolution": 64, "with_prior_preservation": False, "save_steps": 0},
        sigterm_save_min_steps=min_steps,
    )
    instance, _ = load_images([subject_images], 64, True, 0)
    family = get_family("flux", max_sequence_length=16)
    model = family.load(BaseModelSource("folder", str(tiny_family_model("flux"))))
    stop = StopSignal()
    stop.requested, stop.signal_name = True, "SIGTERM"  # arrived during step 1, just now
    stop.requested_at = time.monotonic()
    with pytest.raises(TrainingStopped, match=f"stopped by SIGTERM at step 1 of 3; {outcome}"):
        train(model, instance, [], hp, family=family, checkpoint_dir=tmp_path, stop=stop)
    saved = sorted(p.name for p in tmp_path.iterdir()) if tmp_path.exists() else []
    assert saved == (["step-00000001"] if min_steps == 1 else [])
