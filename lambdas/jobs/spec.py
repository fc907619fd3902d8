"""The job spec: what a user may say about a training job, and the service defaults that fill the rest.

A user's ``job.json`` is a partial :class:`JobSpec`; the stack's CDK context gives :class:`JobDefaults`;
:func:`resolve_job` merges them into a :class:`ResolvedJob` with every field decided. The same schema
backs the HTTP API's request body and the local mode's ``--job-file``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TrainingMethod = Literal["full", "lora"]
HyperparameterValue = str | int | float | bool

INSTANCE_TYPE_PATTERN = r"^ml\.[a-z0-9]+\.[a-z0-9]+$"
# SageMaker's own limit on a single training job's runtime (28 days).
MAX_RUNTIME_LIMIT_SECONDS = 28 * 24 * 3600
_WORD = re.compile(r"^[^\s]+$")


class JobSpecError(ValueError):
    """A job spec that cannot be used; the message names each bad field and what to do."""


class JobDefaults(BaseModel):
    """Service-wide defaults, set once per deployment through CDK context."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    instance_type: Annotated[str, Field(pattern=INSTANCE_TYPE_PATTERN)] = "ml.g4dn.xlarge"
    training_method: TrainingMethod = "full"
    max_train_steps: Annotated[int, Field(ge=1, le=50_000)] = 800
    token: str = "sks"
    class_word: str = "person"
    with_prior_preservation: bool = True
    use_spot: bool = True
    max_runtime_seconds: Annotated[int, Field(ge=600, le=MAX_RUNTIME_LIMIT_SECONDS)] = 4 * 3600
    quiet_period_seconds: Annotated[int, Field(ge=5, le=24 * 3600)] = 60
    min_images: Annotated[int, Field(ge=1)] = 3
    max_images: Annotated[int, Field(ge=1)] = 200
    max_image_bytes: Annotated[int, Field(ge=1024)] = 25 * 1024 * 1024

    @model_validator(mode="after")
    def _image_bounds(self) -> JobDefaults:
        if self.min_images > self.max_images:
            raise ValueError(f"min_images ({self.min_images}) is larger than max_images ({self.max_images})")
        return self


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
    hyperparameters: dict[str, HyperparameterValue] = Field(
        default_factory=dict,
        description="Any other trainer hyperparameter, passed through and checked against its schema.",
    )

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
    max_train_steps: int
    base_model: str
    instance_type: str
    with_prior_preservation: bool
    use_spot: bool
    max_runtime_seconds: int
    hyperparameters: dict[str, HyperparameterValue]


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


def resolve_job(job_name: str, spec: JobSpec, defaults: JobDefaults) -> ResolvedJob:
    """Merge a user's spec over the deployment's defaults."""
    token = spec.token or defaults.token
    class_word = spec.class_word or defaults.class_word
    instance_prompt = spec.instance_prompt or f"a photo of {token} {class_word}"
    with_prior = (
        spec.with_prior_preservation
        if spec.with_prior_preservation is not None
        else defaults.with_prior_preservation
    )
    class_prompt = spec.class_prompt or (f"a photo of {class_word}" if with_prior else None)
    return ResolvedJob(
        job_name=job_name,
        instance_prompt=instance_prompt,
        class_prompt=class_prompt,
        training_method=spec.training_method or defaults.training_method,
        max_train_steps=spec.max_train_steps or defaults.max_train_steps,
        base_model=spec.base_model or defaults.base_model,
        instance_type=spec.instance_type or defaults.instance_type,
        with_prior_preservation=with_prior,
        use_spot=spec.use_spot if spec.use_spot is not None else defaults.use_spot,
        max_runtime_seconds=spec.max_runtime_seconds or defaults.max_runtime_seconds,
        hyperparameters=dict(spec.hyperparameters),
    )


def describe_validation_error(err: ValidationError, *, source: str) -> str:
    """One line per problem: ``<source>: <field>: <message>``, which people and machines both read."""
    lines = []
    for problem in err.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "(root)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = f"unknown field; valid fields are: {', '.join(sorted(JobSpec.model_fields))}"
        lines.append(f"{source}: {location}: {message}")
    return "\n".join(lines)
