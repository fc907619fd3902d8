"""Defaults that depend on what is trained: the training method, and the kind of subject (``subject_type``).

Pure (stdlib + the schema). The job calls :func:`apply_subject_defaults` once it knows how many instance
images it has; every value a caller set explicitly (``model_fields_set``: a key in hyperparameters.json)
wins. Every default chosen comes back as one log line saying where it came from. The numbers and their
sources are tabled in trainer_image/README.md ("Defaults by method and subject").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .hyperparameters import TrainingHyperparameters

# diffusers' examples/dreambooth: train_dreambooth.py's README trains full with 5e-6; its LoRA script's
# README with 1e-4 (the LoRA reference range is 1e-4 to 5e-4). One rate for both leaves LoRA barely moving.
METHOD_LEARNING_RATES = {"full": 5e-6, "lora": 1e-4}

# max_train_steps = steps_per_image x images, kept in this range (few photos still need a few hundred
# steps; many photos must not run for hours).
MIN_STEPS, MAX_STEPS = 400, 2000
# Class images to generate: class_images_per_image x images, at most this many (generation takes ~1-3 s
# per image on a T4; diffusers' prior-preservation example uses 200).
MAX_CLASS_IMAGES = 200


@dataclass(frozen=True)
class SubjectProfile:
    steps_per_image: int
    full_learning_rate: float
    lora_learning_rate: float
    with_prior_preservation: bool
    class_prompt: str | None  # used only when the job gives none
    class_images_per_image: int
    train_text_encoder: bool

    def learning_rate(self, method: str) -> float:
        return self.full_learning_rate if method == "full" else self.lora_learning_rate


PROFILES: dict[str, SubjectProfile] = {
    # Faces overfit and lose identity easily: more steps at a low rate, prior preservation, text encoder.
    "person": SubjectProfile(
        steps_per_image=100,
        full_learning_rate=2e-6,
        lora_learning_rate=1e-4,
        with_prior_preservation=True,
        class_prompt="a photo of a person",
        class_images_per_image=40,
        train_text_encoder=True,
    ),
    # diffusers' own DreamBooth example subject (5 photos of a dog, prior preservation, 800 steps).
    "pet": SubjectProfile(
        steps_per_image=160,
        full_learning_rate=5e-6,
        lora_learning_rate=1e-4,
        with_prior_preservation=True,
        class_prompt="a photo of a pet",
        class_images_per_image=40,
        train_text_encoder=False,
    ),
    # Objects: 400 steps for a 5-photo set at a low rate; prior preservation makes little difference.
    "object": SubjectProfile(
        steps_per_image=80,
        full_learning_rate=2e-6,
        lora_learning_rate=1e-4,
        with_prior_preservation=False,
        class_prompt=None,
        class_images_per_image=0,
        train_text_encoder=False,
    ),
    # A style is meant to move the prior, so it is not preserved.
    "style": SubjectProfile(
        steps_per_image=100,
        full_learning_rate=5e-6,
        lora_learning_rate=1e-4,
        with_prior_preservation=False,
        class_prompt=None,
        class_images_per_image=0,
        train_text_encoder=False,
    ),
}


def apply_subject_defaults(
    hp: TrainingHyperparameters, num_instance_images: int, *, text_encoder_trainable: bool = True
) -> tuple[TrainingHyperparameters, list[str]]:
    """The settings with method and subject defaults filled in, and one line per value chosen.

    ``text_encoder_trainable`` False (a family whose text encoders stay frozen): the profile's text-encoder
    training is not applied, so a subject type never turns on what the family refuses."""
    explicit = hp.model_fields_set
    profile = PROFILES.get(hp.subject_type) if hp.subject_type else None
    source = f"subject_type={hp.subject_type}" if profile else f"training_method={hp.training_method}"
    wanted: dict[str, tuple[Any, str]] = {}

    rate = profile.learning_rate(hp.training_method) if profile else METHOD_LEARNING_RATES[hp.training_method]
    wanted["learning_rate"] = (rate, f"{source}, training_method={hp.training_method}" if profile else source)
    if profile:
        steps = min(MAX_STEPS, max(MIN_STEPS, profile.steps_per_image * num_instance_images))
        wanted["max_train_steps"] = (
            steps,
            f"{source}: {profile.steps_per_image} per image x {num_instance_images} image(s),"
            f" within {MIN_STEPS}-{MAX_STEPS}",
        )
        if text_encoder_trainable:
            wanted["train_text_encoder"] = (profile.train_text_encoder, source)
        wanted["with_prior_preservation"] = (profile.with_prior_preservation, source)
    prior = (
        hp.with_prior_preservation
        if "with_prior_preservation" in explicit or not profile
        else profile.with_prior_preservation
    )
    if profile and prior:
        if not hp.class_prompt and profile.class_prompt:
            wanted["class_prompt"] = (
                profile.class_prompt,
                f"{source} (a specific one, e.g. 'a photo of a dog', is better)",
            )
        count = min(MAX_CLASS_IMAGES, profile.class_images_per_image * num_instance_images)
        wanted["num_class_images"] = (
            count,
            f"{source}: {profile.class_images_per_image} per image x {num_instance_images},"
            f" at most {MAX_CLASS_IMAGES}",
        )

    changes: dict[str, Any] = {}
    lines: list[str] = []
    for key, (value, reason) in wanted.items():
        if key in explicit:
            continue
        if getattr(hp, key) != value:
            changes[key] = value
        lines.append(f"default: {key} = {value!r} ({reason})")
    return (hp.model_copy(update=changes) if changes else hp), lines
