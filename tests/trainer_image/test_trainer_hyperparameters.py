"""The hyperparameter schema as SageMaker and the Lambdas use it: strings in, typed settings out, and back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dreambooth_trainer.hyperparameters import (
    ALIASES,
    MAX_SAGEMAKER_HYPERPARAMETERS,
    HyperparameterError,
    TrainingHyperparameters,
    describe_hyperparameters,
    parse_hyperparameters,
    valid_keys,
)

# The Stable Diffusion Quick Kit's job, verbatim (its own spelling and string values).
QUICK_KIT = {
    "attention": "xformers",
    "class_data_dir": "/opt/ml/input/data/class_images/",
    "class_prompt": "photo of a man",
    "gradient_accumulation_steps": "1",
    "gradient_checkpointing": "True",
    "instance_data_dir": "/opt/ml/input/data/images/",
    "instance_prompt": "photo of a zwx  man",
    "learning_rate": "2e-06",
    "lr_scheduler": "constant",
    "lr_warmup_steps": "0",
    "max_train_steps": "500",
    "mixed_precision": "fp16",
    "model_name": "aws-trained-dreambooth-model",
    "models_path": "/opt/ml/model/",
    "manul_upload_model_path": "s3://my-bucket/models/zwx/",
    "not_cache_latents": "True",
    "num_class_images": "50",
    "pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "prior_loss_weight": "0.5",
    "resolution": "512",
    "sample_batch_size": "1",
    "save_steps": "500",
    "save_use_epochs": "False",
    "train_batch_size": "1",
    "train_text_encoder": "False",
    "use_8bit_adam": "True",
    "use_ema": "True",
    "with_prior_preservation": "True",
    "seed": "1234",
    "center_crop": "false",
}


def test_quick_kit_hyperparameters_are_accepted_verbatim() -> None:
    hp = parse_hyperparameters(QUICK_KIT)
    assert hp.attention == "xformers"
    assert hp.gradient_checkpointing is True and hp.train_text_encoder is False
    assert hp.learning_rate == pytest.approx(2e-6)
    assert hp.model_output_s3_uri == "s3://my-bucket/models/zwx/"  # the alias lands on the clear name
    assert hp.prior_loss_weight == 0.5 and hp.num_class_images == 50 and hp.seed == 1234
    assert hp.with_prior_preservation and hp.use_ema and hp.use_8bit_adam and hp.not_cache_latents


def test_json_encoded_values_parse_like_plain_strings() -> None:
    plain = parse_hyperparameters(
        {"instance_prompt": "a sks dog", "mixed_precision": "bf16", "use_ema": "true"}
    )
    encoded = parse_hyperparameters(
        {"instance_prompt": '"a sks dog"', "mixed_precision": '"bf16"', "use_ema": "true"}
    )
    assert plain == encoded
    assert encoded.mixed_precision == "bf16"


@pytest.mark.parametrize("false", ["False", "false", "0", "FALSE", '"false"', "no", "off"])
def test_false_spellings_are_false(false: str) -> None:
    hp = parse_hyperparameters({"instance_prompt": "x", "train_text_encoder": false, "center_crop": false})
    assert hp.train_text_encoder is False and hp.center_crop is False


@pytest.mark.parametrize("true", ["True", "true", "1", '"true"', "yes"])
def test_true_spellings_are_true(true: str) -> None:
    assert parse_hyperparameters({"instance_prompt": "x", "use_ema": true}).use_ema is True


def test_sagemaker_keys_are_ignored() -> None:
    hp = parse_hyperparameters(
        {"instance_prompt": "x", "sagemaker_program": "train.py", "sagemaker_region": '"us-east-1"'}
    )
    assert hp.instance_prompt == "x"


def test_unknown_key_fails_with_the_key_a_suggestion_and_the_valid_keys() -> None:
    with pytest.raises(HyperparameterError) as raised:
        parse_hyperparameters({"instance_prompt": "x", "lerning_rate": "1e-4"})
    message = str(raised.value)
    assert "unknown hyperparameter 'lerning_rate'" in message
    assert "did you mean 'learning_rate'" in message
    assert "train_text_encoder" in message  # the valid keys are listed


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("mixed_precision", "fp8", "'no', 'fp16' or 'bf16'"),
        ("training_method", "dreambooth", "'full' or 'lora'"),
        ("lr_scheduler", "step", "'constant'"),
        ("train_text_encoder", "maybe", "valid boolean"),
        ("resolution", "500", "multiple of 8"),
        ("learning_rate", "fast", "valid number"),
        ("max_train_steps", "0", "greater than or equal to 1"),
        ("model_output_s3_uri", "https://bucket/x", "s3://bucket/prefix/"),
        ("class_images_output_s3_uri", "bucket/class-images/", "s3://bucket/prefix/"),
        ("learning_rate", "nan", "finite number"),
    ],
)
def test_bad_values_name_the_key_and_what_is_valid(key: str, value: str, expected: str) -> None:
    with pytest.raises(HyperparameterError) as raised:
        parse_hyperparameters({"instance_prompt": "x", key: value})
    assert f"'{key}'" in str(raised.value)
    assert expected in str(raised.value)


def test_missing_prompt_and_prior_preservation_without_class_prompt_fail_readably() -> None:
    with pytest.raises(HyperparameterError, match="'instance_prompt' is required"):
        parse_hyperparameters({})
    with pytest.raises(HyperparameterError, match="with_prior_preservation needs class_prompt"):
        parse_hyperparameters({"instance_prompt": "x", "with_prior_preservation": "true"})


def test_alias_and_clear_name_must_agree() -> None:
    same = {
        "instance_prompt": "x",
        "model_output_s3_uri": "s3://bkt/p/",
        "manul_upload_model_path": "s3://bkt/p/",
    }
    assert parse_hyperparameters(same).model_output_s3_uri == "s3://bkt/p/"
    with pytest.raises(HyperparameterError, match="given twice"):
        parse_hyperparameters({**same, "manul_upload_model_path": "s3://bkt/other/"})


@pytest.mark.parametrize("include_defaults", [False, True])
def test_sagemaker_strings_round_trip(include_defaults: bool) -> None:
    hp = TrainingHyperparameters(
        instance_prompt='"quoted" prompt with true',
        class_prompt="123",
        with_prior_preservation=True,
        training_method="lora",
        learning_rate=1.5e-4,
        lr_scheduler="cosine",
        train_text_encoder=True,
        model_output_s3_uri="s3://bucket/some/prefix/",
        num_threads=1,
        output_dtype="fp32",
    )
    strings = hp.to_sagemaker_strings(include_defaults=include_defaults)
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in strings.items())
    assert len(strings) <= MAX_SAGEMAKER_HYPERPARAMETERS
    assert parse_hyperparameters(strings) == hp
    # What the SageMaker toolkit would hand over after JSON-encoding each string also parses back.
    assert parse_hyperparameters({k: json.dumps(v) for k, v in strings.items()}) == hp


def test_only_non_defaults_are_sent_by_default() -> None:
    strings = TrainingHyperparameters(instance_prompt="x", max_train_steps=800).to_sagemaker_strings()
    assert strings == {"instance_prompt": "x", "max_train_steps": "800"}


def test_quick_kit_job_round_trips() -> None:
    hp = parse_hyperparameters(QUICK_KIT)
    assert parse_hyperparameters(hp.to_sagemaker_strings()) == hp


def test_valid_keys_and_descriptions_cover_the_schema() -> None:
    keys = valid_keys()
    assert set(QUICK_KIT) <= set(keys)
    assert set(ALIASES) <= set(keys)
    described = describe_hyperparameters()
    assert set(described) == set(TrainingHyperparameters.model_fields)
    assert described["instance_prompt"]["required"] is True
    assert described["training_method"]["default"] == "full"
    assert len(keys) <= MAX_SAGEMAKER_HYPERPARAMETERS


def test_pure_modules_do_not_import_torch() -> None:
    """The Lambdas import these; torch would add seconds and hundreds of MB to every cold start."""
    code = (
        "import sys, dreambooth_trainer, dreambooth_trainer.hyperparameters, dreambooth_trainer.metrics, "
        "dreambooth_trainer.vram_presets, dreambooth_trainer.sagemaker_contract, dreambooth_trainer.errors\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'numpy', 'PIL') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
