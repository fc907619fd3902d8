"""lambdas/jobs/families.py: the family of a base model and what it decides, without torch or the Hub."""

import pytest

from dreambooth_trainer.family_table import ALIASES, FAMILIES
from lambdas.jobs.families import (
    default_training_method,
    detect_family,
    family_problems,
    image_side_rule,
    min_image_side,
)
from lambdas.jobs.limits import DEFAULT_INSTANCE_TYPES


@pytest.mark.parametrize(
    ("base_model", "family", "how"),
    [
        ("sdxl", "sdxl", "alias"),
        ("FLUX1-dev", "flux", "alias"),
        ("z-image", "zimage", "alias"),
        ("sd15", "sd", "alias"),
        ("stabilityai/stable-diffusion-xl-base-1.0", "sdxl", "alias"),  # an alias's pinned Hub id
        ("black-forest-labs/FLUX.1-dev", "flux", "alias"),
        ("RunDiffusion/Juggernaut-XL-v9", "sdxl", "name"),
        ("SG161222/RealVisXL_V4.0", "sdxl", "name"),
        ("black-forest-labs/FLUX.1-schnell", "flux", "name"),
        ("someone/z-image-turbo-finetune", "zimage", "name"),
        ("stabilityai/stable-diffusion-2-1", "sd", "default"),
        ("someone/pixel-art-model", "sd", "default"),  # 'pixel' holds no 'xl' token
        ("s3://data-bucket/base-models/my-model/", "sd", "default"),
    ],
)
def test_the_family_comes_from_the_alias_table_else_the_name(base_model, family, how):
    choice = detect_family(base_model)
    assert (choice.name, choice.how) == (family, how)


def test_model_index_json_decides_over_the_name():
    choice = detect_family("s3://b/base-models/my-model/", {"_class_name": "FluxPipeline"})
    assert (choice.name, choice.how) == ("flux", "model_index.json")
    assert (
        detect_family("s3://b/base-models/my-xl/", {"_class_name": "StableDiffusionXLPipeline"}).name
        == "sdxl"
    )
    # A pipeline no family handles falls back to the name: the trainer refuses it with its own message.
    assert detect_family("s3://b/base-models/wan/", {"_class_name": "WanPipeline"}).how == "default"


def test_every_alias_names_a_family_of_the_table():
    assert {alias.family for alias in ALIASES.values()} <= set(FAMILIES)
    assert ALIASES["flux1-dev"].commercial_use is False


def test_the_minimum_photo_side_is_the_familys_or_the_deployments_if_larger():
    assert min_image_side("sdxl", 64) == 512
    assert min_image_side("flux", 64) == 512
    assert min_image_side("sd", 64) == 64
    assert min_image_side("sdxl", 768) == 768
    assert image_side_rule("sdxl") == " for sdxl base models, which train at 1024 px"


def test_lora_only_families_default_to_lora_whatever_the_deployment_says():
    assert default_training_method("sd", None) == "full"
    assert default_training_method("sd", "lora") == "lora"
    assert default_training_method("sdxl", None) == "lora"
    assert default_training_method("flux", "full") == "lora"


def test_a_full_fine_tune_of_a_lora_only_family_is_refused_with_what_to_write():
    problems = family_problems(
        "sdxl",
        training_method="full",
        instance_type="ml.g4dn.xlarge",
        train_text_encoder=False,
        allowed_instance_types=DEFAULT_INSTANCE_TYPES,
    )
    assert problems == [
        'training_method "full": sdxl (Stable Diffusion XL) base models train lora only; set '
        '"training_method": "lora" or leave it out'
    ]


def test_a_bf16_family_on_a_t4_is_refused_naming_instance_types_that_work():
    (problem,) = family_problems(
        "flux",
        training_method="lora",
        instance_type="ml.g4dn.xlarge",
        train_text_encoder=False,
        allowed_instance_types=("ml.g4dn.xlarge", "ml.g5.xlarge", "ml.g6.xlarge"),
    )
    assert problem.startswith("instance_type ml.g4dn.xlarge: flux (FLUX.1) trains in bf16")
    assert "e.g. ml.g5.xlarge, ml.g6.xlarge" in problem and "the flux default is ml.g6.xlarge" in problem
    assert not family_problems(
        "flux",
        training_method="lora",
        instance_type="ml.g6.xlarge",
        train_text_encoder=False,
        allowed_instance_types=DEFAULT_INSTANCE_TYPES,
    )
    # SDXL trains in fp16: a T4 is its default.
    assert not family_problems(
        "sdxl",
        training_method="lora",
        instance_type="ml.g4dn.xlarge",
        train_text_encoder=False,
        allowed_instance_types=DEFAULT_INSTANCE_TYPES,
    )


def test_text_encoder_training_is_refused_for_the_denoiser_only_families():
    (problem,) = family_problems(
        "zimage",
        training_method="lora",
        instance_type="ml.g6.xlarge",
        train_text_encoder=True,
        allowed_instance_types=DEFAULT_INSTANCE_TYPES,
    )
    assert "train_text_encoder" in problem and "zimage" in problem
