"""The job spec: what a user may say about a training job, and the service defaults that fill the rest.

A user's ``job.json`` is a partial :class:`JobSpec`; the stack's CDK context gives :class:`JobDefaults`;
:func:`resolve_job` merges them into a :class:`ResolvedJob` with every field decided. The same schema
backs the HTTP API's request body and the local mode's ``--job-file``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dreambooth_trainer.family_table import FAMILIES, resolve_alias
from dreambooth_trainer.hyperparameters import (
    HyperparameterError,
    TrainingHyperparameters,
    parse_hyperparameters,
)
from dreambooth_trainer.subject_defaults import PROFILES
from lambdas.jobs import s3_layout
from lambdas.jobs.families import default_training_method, detect_family
from lambdas.jobs.naming import job_slug

TrainingMethod = Literal["full", "lora"]
SubjectType = Literal["person", "pet", "object", "style"]
# What the service has always trained SD 1.x/2.x for when nobody said (diffusers' DreamBooth example's
# full fine-tune); the other families' steps are the trainer's family defaults (family_table).
SD_MAX_TRAIN_STEPS = 800
HyperparameterValue = str | int | float | bool

INSTANCE_TYPE_PATTERN = r"^ml\.[a-z0-9]+\.[a-z0-9]+$"
# SageMaker's own limit on a single training job's runtime (28 days).
MAX_RUNTIME_LIMIT_SECONDS = 28 * 24 * 3600
_WORD = re.compile(r"^[^\s]+$")


# Hyperparameters the service decides for every run: where data and the model go.
SERVICE_OWNED_HYPERPARAMETERS = {
    "model_output_s3_uri": "every run writes to s3://<bucket>/models/<job>/<run>/",
    "manul_upload_model_path": "every run writes to s3://<bucket>/models/<job>/<run>/",
    "instance_data_dir": "the batch's photos are the 'images' channel",
    "class_data_dir": "shared class images are the 'class_images' channel",
    "models_path": "the trainer writes to /opt/ml/model",
    "model_name": "it is the job name",
    "class_images_output_s3_uri": "prior-preservation runs share generated class images to"
    " s3://<bucket>/class-images/<hash>/, the folder their 'class_images' channel reads",
}
# Hyperparameters that job.json spells as its own fields (hyperparameter -> field).
SPEC_FIELD_HYPERPARAMETERS = {
    "instance_prompt": "instance_prompt",
    "class_prompt": "class_prompt",
    "with_prior_preservation": "with_prior_preservation",
    "training_method": "training_method",
    "max_train_steps": "max_train_steps",
    "pretrained_model_name_or_path": "base_model",
    "subject_type": "subject_type",
}


def free_hyperparameters(values: dict[str, HyperparameterValue]) -> dict[str, HyperparameterValue]:
    """Extra trainer hyperparameters may not touch what the service or a job.json field decides."""
    problems = []
    for key in values:
        if key in SERVICE_OWNED_HYPERPARAMETERS:
            problems.append(f"'{key}' is set by the service ({SERVICE_OWNED_HYPERPARAMETERS[key]})")
        elif key in SPEC_FIELD_HYPERPARAMETERS:
            problems.append(f"'{key}' is a job.json field: set \"{SPEC_FIELD_HYPERPARAMETERS[key]}\" instead")
    if problems:
        raise ValueError("; ".join(problems))
    return values


class JobSpecError(ValueError):
    """A job spec that cannot be used; the message names each bad field and what to do."""


class JobDefaults(BaseModel):
    """Service-wide defaults, set once per deployment through CDK context."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    # None: the base model's family decides (family_table): its instance type; full for SD 1.x/2.x and
    # LoRA for the LoRA-only families; 800 steps for SD 1.x/2.x, the trainer's family default otherwise.
    # Set, it applies to every job that does not say otherwise (a method only where the family trains it).
    instance_type: Annotated[str, Field(pattern=INSTANCE_TYPE_PATTERN)] | None = None
    training_method: TrainingMethod | None = None
    max_train_steps: Annotated[int, Field(ge=1, le=50_000)] | None = None
    token: str = "sks"
    class_word: str = "person"
    with_prior_preservation: bool = True
    use_spot: bool = True
    max_runtime_seconds: Annotated[int, Field(ge=600, le=MAX_RUNTIME_LIMIT_SECONDS)] = 4 * 3600
    quiet_period_seconds: Annotated[int, Field(ge=1, le=24 * 3600)] = 60
    # After job.json commits a batch, wait this long without new uploads: `aws s3 cp --recursive` sends
    # job.json in parallel with the photos, and a photo that lands a moment later belongs to the batch.
    commit_settle_seconds: Annotated[int, Field(ge=0, le=3600)] = 5
    # Fewer usable photos than this fail the batch (the most is a limit: lambdas/jobs/limits.py).
    min_images: Annotated[int, Field(ge=1)] = 3
    # True: one unusable file fails the whole batch instead of being skipped and reported.
    strict_images: bool = False
    # Trainer hyperparameters for every job of this deployment (e.g. {"resolution": 768} for SD 2);
    # a job.json's own "hyperparameters" win over them.
    hyperparameters: dict[str, HyperparameterValue] = Field(default_factory=dict)

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _json_from_context(cls, value: object) -> object:
        """``cdk deploy -c default_hyperparameters='{"resolution": 768}'`` arrives as a string."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as err:
                raise ValueError(f"not a JSON object: {err.msg}") from None
        return value

    @field_validator("hyperparameters")
    @classmethod
    def _no_service_owned_keys(cls, values: dict[str, HyperparameterValue]) -> dict[str, HyperparameterValue]:
        return free_hyperparameters(values)

    max_image_bytes: Annotated[int, Field(ge=1024)] = 25 * 1024 * 1024
    min_image_side: Annotated[int, Field(ge=1)] = 64


class JobSpec(BaseModel):
    """What a user may put in ``job.json`` (every field optional: the defaults fill the gaps).

    Either give ``instance_prompt`` (and optionally ``class_prompt``) in full, or give a rare ``token``
    and a ``class_word`` and let the service write "a photo of <token> <class_word>".
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    instance_prompt: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    class_prompt: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    token: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    class_word: Annotated[str, Field(min_length=1, max_length=80)] | None = None
    training_method: TrainingMethod | None = None
    max_train_steps: Annotated[int, Field(ge=1, le=50_000)] | None = None
    base_model: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    instance_type: Annotated[str, Field(pattern=INSTANCE_TYPE_PATTERN)] | None = None
    with_prior_preservation: bool | None = None
    use_spot: bool | None = None
    max_runtime_seconds: Annotated[int, Field(ge=600, le=MAX_RUNTIME_LIMIT_SECONDS)] | None = None
    subject_type: SubjectType | None = Field(
        default=None,
        description="What the photos show; the trainer then picks steps, prior preservation and class prompt"
        " for it (unless job.json sets them)",
    )
    strict_images: bool | None = Field(
        default=None,
        description="true: any unusable file fails the batch; false (default): it is skipped and reported.",
    )
    hyperparameters: dict[str, HyperparameterValue] = Field(
        default_factory=dict,
        description="Any other trainer hyperparameter, passed through and checked against its schema.",
    )

    @field_validator("hyperparameters")
    @classmethod
    def _no_service_owned_keys(cls, values: dict[str, HyperparameterValue]) -> dict[str, HyperparameterValue]:
        return free_hyperparameters(values)

    @field_validator("token")
    @classmethod
    def _token_is_one_word(cls, token: str | None) -> str | None:
        if token is not None and not _WORD.match(token):
            raise ValueError("the token must be a single word without spaces, e.g. 'sks'")
        return token


class ResolvedJob(BaseModel):
    """A job with every choice made: what the pipeline trains and what the notification reports."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_name: str
    instance_prompt: str
    class_prompt: str | None
    training_method: TrainingMethod
    # None: the trainer decides (the family's default, or subject_type's steps per image).
    max_train_steps: int | None
    base_model: str
    instance_type: str
    # None: subject_type decides in the trainer.
    with_prior_preservation: bool | None
    use_spot: bool
    max_runtime_seconds: int
    strict_images: bool = False
    hyperparameters: dict[str, HyperparameterValue]
    family: str = "sd"
    subject_type: SubjectType | None = None

    @property
    def effective_max_train_steps(self) -> int:
        """The steps the trainer will run when the job did not say: the family's default."""
        return self.max_train_steps or FAMILIES[self.family].defaults.max_train_steps

    def effective_prior_preservation(self) -> tuple[bool, str | None]:
        """(with prior preservation, class prompt) as the trainer will decide them, subject_type included."""
        profile = PROFILES.get(self.subject_type or "")
        if self.with_prior_preservation is not None or profile is None:
            prior = bool(self.with_prior_preservation)
        else:
            prior = profile.with_prior_preservation
        return prior, self.class_prompt or (profile.class_prompt if profile and prior else None)


def parse_job_spec(raw: str | bytes | dict | None) -> JobSpec:
    """Read a user's ``job.json``; every problem is reported at once, each with its field."""
    if raw is None or raw == b"" or raw == "":
        return JobSpec()
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as err:
            raise JobSpecError(
                f"job.json is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                "fix the file and upload it again"
            ) from None
    if not isinstance(raw, dict):
        raise JobSpecError('job.json must hold a JSON object, e.g. {"class_word": "dog"}')
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as err:
        raise JobSpecError(describe_validation_error(err, source="job.json")) from None


def resolve_job(
    job_name: str, spec: JobSpec, defaults: JobDefaults, *, family: str | None = None
) -> ResolvedJob:
    """Merge a user's spec over the deployment's defaults and the base model's family.

    ``family``: when the caller read it from the base model's model_index.json; otherwise it is detected
    from the base model's name (lambdas/jobs/families.py). With ``subject_type``, steps, prior preservation
    and class prompt are left to the trainer's subject defaults unless job.json sets them.
    """
    base_model = resolve_alias(spec.base_model or defaults.base_model)
    family = family or detect_family(base_model).name
    entry = FAMILIES[family]
    token = spec.token or defaults.token
    class_word = spec.class_word or defaults.class_word
    instance_prompt = spec.instance_prompt or f"a photo of {token} {class_word}"
    if spec.subject_type:
        with_prior = spec.with_prior_preservation
        # Prior preservation asked for in job.json needs a class prompt: the job's class word writes it.
        class_prompt = spec.class_prompt or (f"a photo of {class_word}" if with_prior else None)
        steps = spec.max_train_steps
    else:
        with_prior = (
            spec.with_prior_preservation
            if spec.with_prior_preservation is not None
            else defaults.with_prior_preservation
        )
        class_prompt = spec.class_prompt or (f"a photo of {class_word}" if with_prior else None)
        steps = spec.max_train_steps or defaults.max_train_steps
        if steps is None and family == "sd":
            steps = SD_MAX_TRAIN_STEPS
    return ResolvedJob(
        job_name=job_name,
        instance_prompt=instance_prompt,
        class_prompt=class_prompt,
        training_method=spec.training_method or default_training_method(family, defaults.training_method),
        max_train_steps=steps,
        base_model=base_model,
        instance_type=spec.instance_type or defaults.instance_type or entry.defaults.instance_type,
        with_prior_preservation=with_prior,
        use_spot=spec.use_spot if spec.use_spot is not None else defaults.use_spot,
        max_runtime_seconds=spec.max_runtime_seconds or defaults.max_runtime_seconds,
        strict_images=spec.strict_images if spec.strict_images is not None else defaults.strict_images,
        hyperparameters={**defaults.hyperparameters, **spec.hyperparameters},
        family=family,
        subject_type=spec.subject_type,
    )


def describe_validation_error(err: ValidationError, *, source: str) -> str:
    """One line per problem: ``<source>: <field>: <message>``, which people and machines both read."""
    lines = []
    for problem in err.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "(root)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = f"unknown field; valid fields are: {', '.join(sorted(JobSpec.model_fields))}"
        lines.append(f"{source}: {location}: {message}")
    return "\n".join(lines)


def class_images_prefix(job: ResolvedJob, hyperparameters: TrainingHyperparameters) -> str:
    """The shared class-images folder of a job, keyed by the resolution the trainer actually uses."""
    _, class_prompt = job.effective_prior_preservation()
    return s3_layout.class_images_prefix(
        class_prompt or "", job.base_model, effective_resolution(job, hyperparameters)
    )


def effective_resolution(job: ResolvedJob, hyperparameters: TrainingHyperparameters) -> int:
    """The resolution the trainer trains at: the job's, else its family's default (SD: the schema's)."""
    if "resolution" in hyperparameters.model_fields_set or job.family == "sd":
        return hyperparameters.resolution
    return FAMILIES[job.family].defaults.resolution


def training_hyperparameters(
    job: ResolvedJob, *, model_output_s3_uri: str, bucket: str
) -> TrainingHyperparameters:
    """The trainer's hyperparameters for one run, checked by the trainer's own schema.

    The user's extra keys go first and the job's decided values over them, so nothing in
    ``hyperparameters`` can redirect the model or contradict a job.json field (the spec also rejects
    such keys up front, with a message). With prior preservation, ``class_images_output_s3_uri`` is
    ``s3://<bucket>/<class_images_prefix>``: the trainer shares the class images it generates to the same
    folder that later runs read as their 'class_images' channel.
    """
    decided: dict[str, HyperparameterValue] = {
        "instance_prompt": job.instance_prompt,
        "training_method": job.training_method,
        "model_output_s3_uri": model_output_s3_uri,
        "model_name": job_slug(job.job_name),
    }
    # Left out, the trainer decides: subject_type's values, else the family's defaults.
    if job.with_prior_preservation is not None:
        decided["with_prior_preservation"] = job.with_prior_preservation
    if job.max_train_steps is not None:
        decided["max_train_steps"] = job.max_train_steps
    if job.class_prompt:
        decided["class_prompt"] = job.class_prompt
    if job.subject_type:
        decided["subject_type"] = job.subject_type
        if job.family != "sd" and "train_text_encoder" not in job.hyperparameters:
            # subject_type person trains the text encoder; these families train the denoiser only.
            decided["train_text_encoder"] = False
    if not job.base_model.startswith("s3://"):
        # An s3:// base model arrives as the 'model' channel, which the trainer prefers.
        decided["pretrained_model_name_or_path"] = job.base_model
    values = {**job.hyperparameters, **decided}
    try:
        hyperparameters = parse_hyperparameters(values)
        if job.effective_prior_preservation()[0]:
            # Keyed by the parsed resolution (a default or a user's key), hence the second parse.
            shared = s3_layout.s3_uri(bucket, class_images_prefix(job, hyperparameters))
            hyperparameters = parse_hyperparameters({**values, "class_images_output_s3_uri": shared})
        return hyperparameters
    except HyperparameterError as err:
        raise JobSpecError(f"job.json: hyperparameters: {err}") from None


# Sent even when equal to the trainer's default, so the request alone says what a run was asked to do.
ALWAYS_SENT_HYPERPARAMETERS = frozenset(
    {
        "instance_prompt",
        "with_prior_preservation",
        "training_method",
        "max_train_steps",
        "model_output_s3_uri",
    }
)


def hyperparameter_strings(hyperparameters: TrainingHyperparameters) -> dict[str, str]:
    """CreateTrainingJob's HyperParameters: what differs from the trainer's defaults, plus the key choices.

    A key choice the job left to the trainer (steps and prior preservation under subject_type or a family
    default) is not sent: sending the schema default would override the trainer's own choice.
    """
    full = hyperparameters.to_sagemaker_strings(include_defaults=True)
    changed = hyperparameters.to_sagemaker_strings()
    chosen = ALWAYS_SENT_HYPERPARAMETERS & hyperparameters.model_fields_set
    return {key: value for key, value in full.items() if key in changed or key in chosen}
