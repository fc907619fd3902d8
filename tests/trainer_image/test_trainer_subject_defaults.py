"""Defaults by training method and subject type; explicit values always win."""

from __future__ import annotations

import json
import logging

import pytest

from dreambooth_trainer.hyperparameters import HyperparameterError, parse_hyperparameters
from dreambooth_trainer.metrics import parse_metrics
from dreambooth_trainer.subject_defaults import apply_subject_defaults


def _resolved(raw: dict[str, str], images: int = 5):
    hp, lines = apply_subject_defaults(parse_hyperparameters({"instance_prompt": "sks", **raw}), images)
    return hp, lines


@pytest.mark.parametrize(("method", "rate"), [("full", 5e-6), ("lora", 1e-4)])
def test_learning_rate_default_follows_the_method(method: str, rate: float) -> None:
    hp, lines = _resolved({"training_method": method})
    assert hp.learning_rate == rate
    assert f"default: learning_rate = {rate!r} (training_method={method})" in lines
    assert hp.max_train_steps == 400  # no subject_type: the plain defaults stand


def test_an_explicit_learning_rate_wins_even_when_it_equals_the_full_default() -> None:
    hp, lines = _resolved({"training_method": "lora", "learning_rate": "5e-6"})
    assert hp.learning_rate == 5e-6 and not any("learning_rate" in line for line in lines)
    # ... and it survives the trip through CreateTrainingJob's string map.
    strings = parse_hyperparameters(
        {"instance_prompt": "sks", "training_method": "lora", "learning_rate": "5e-6"}
    )
    assert strings.to_sagemaker_strings()["learning_rate"] == "5e-06"
    again, _ = apply_subject_defaults(parse_hyperparameters(strings.to_sagemaker_strings()), 5)
    assert again.learning_rate == 5e-6


@pytest.mark.parametrize(
    ("subject", "method", "images", "expected"),
    [
        (
            "person",
            "full",
            8,
            dict(
                max_train_steps=800,
                learning_rate=2e-6,
                with_prior_preservation=True,
                class_prompt="a photo of a person",
                num_class_images=200,  # 40 x 8 = 320, capped
                train_text_encoder=True,
            ),
        ),
        (
            "person",
            "lora",
            4,
            dict(max_train_steps=400, learning_rate=1e-4, num_class_images=160, train_text_encoder=True),
        ),
        (
            "pet",
            "full",
            5,
            dict(
                max_train_steps=800,
                learning_rate=5e-6,
                with_prior_preservation=True,
                class_prompt="a photo of a pet",
                num_class_images=200,
                train_text_encoder=False,
            ),
        ),
        (
            "object",
            "full",
            5,
            dict(max_train_steps=400, learning_rate=2e-6, with_prior_preservation=False, class_prompt=None),
        ),
        ("object", "lora", 2, dict(max_train_steps=400, learning_rate=1e-4)),  # 160 steps, raised to 400
        ("style", "full", 30, dict(max_train_steps=2000, with_prior_preservation=False)),  # 3000, capped
    ],
)
def test_subject_type_picks_its_defaults(subject: str, method: str, images: int, expected: dict) -> None:
    hp, lines = _resolved({"subject_type": subject, "training_method": method}, images)
    assert {key: getattr(hp, key) for key in expected} == expected
    assert all(f"subject_type={subject}" in line for line in lines)


def test_explicit_values_win_over_the_subject_type() -> None:
    explicit = {
        "subject_type": "person",
        "max_train_steps": "300",
        "learning_rate": "3e-6",
        "train_text_encoder": "false",
        "class_prompt": "a photo of a man",
        "num_class_images": "50",
    }
    hp, lines = _resolved(explicit, images=10)
    assert (hp.max_train_steps, hp.learning_rate, hp.train_text_encoder) == (300, 3e-6, False)
    assert (hp.class_prompt, hp.num_class_images, hp.with_prior_preservation) == (
        "a photo of a man",
        50,
        True,
    )
    assert lines == ["default: with_prior_preservation = True (subject_type=person)"]

    no_prior, _ = _resolved({"subject_type": "pet", "with_prior_preservation": "false"})
    assert no_prior.with_prior_preservation is False and no_prior.class_prompt is None


def test_a_family_with_frozen_text_encoders_never_gets_text_encoder_training_from_a_subject() -> None:
    hp = parse_hyperparameters(
        {"subject_type": "person", "training_method": "lora", "instance_prompt": "a sks man"}
    )
    sd, _ = apply_subject_defaults(hp, 5)
    assert sd.train_text_encoder is True  # the person profile trains the text encoder where it can
    flux, lines = apply_subject_defaults(hp, 5, text_encoder_trainable=False)
    assert flux.train_text_encoder is False
    assert not any("train_text_encoder" in line for line in lines)
    assert flux.max_train_steps == sd.max_train_steps  # the rest of the profile still applies


def test_prior_preservation_without_a_class_prompt_needs_a_subject_with_a_template() -> None:
    hp, _ = _resolved({"subject_type": "person", "with_prior_preservation": "true"})
    assert hp.class_prompt == "a photo of a person"
    with pytest.raises(HyperparameterError, match="with_prior_preservation needs class_prompt"):
        parse_hyperparameters(
            {"instance_prompt": "sks", "subject_type": "object", "with_prior_preservation": "true"}
        )
    with pytest.raises(HyperparameterError, match="'subject_type' = 'car'"):
        parse_hyperparameters({"instance_prompt": "sks", "subject_type": "car"})


def test_the_job_trains_lora_at_the_lora_rate_when_none_is_given(new_job, capsys, caplog) -> None:
    from tests.trainer_image.conftest import BASE_HYPERPARAMETERS

    settings = {k: v for k, v in BASE_HYPERPARAMETERS.items() if k != "learning_rate"}
    job = new_job({**settings, "training_method": "lora", "num_samples": "0"}, defaults=False)
    with caplog.at_level(logging.INFO):
        assert job.run() == 0
    assert "default: learning_rate = 0.0001 (training_method=lora)" in caplog.text
    metrics = [
        parse_metrics(line) for line in capsys.readouterr().out.splitlines() if line.startswith("[metrics]")
    ]
    assert metrics and all(m["train:learning_rate"] == 1e-4 for m in metrics)
    record = json.loads((job.model_dir / "dreambooth.json").read_text())
    assert record["hyperparameters"]["learning_rate"] == "0.0001"
