"""Deployment settings, read once from CDK context and validated before any construct is built.

``cdk deploy -c notification_email=me@example.com -c default_max_train_steps=1200`` (or ``cdk.json``'s
``context``) sets them. Job defaults are the domain's :class:`JobDefaults`: one definition, used by
the stack and handed to the Lambdas.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dreambooth_trainer.family_table import resolve_alias
from lambdas.jobs.families import detect_family
from lambdas.jobs.limits import LIMITS_PREFIX, ServiceLimits, context_key
from lambdas.jobs.spec import JobDefaults
from lambdas.jobs.training_slots import QueueSettings

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Context keys for job defaults are the JobDefaults field names with this prefix.
DEFAULTS_PREFIX = "default_"
# Context keys of the training queue: QueueSettings' fields (poll_seconds as training_slot_poll_seconds).
QUEUE_CONTEXT_KEYS = {
    "max_concurrent_training_jobs": "max_concurrent_training_jobs",
    "training_slot_poll_seconds": "poll_seconds",
    "quota_retry_attempts": "quota_retry_attempts",
    "quota_retry_seconds": "quota_retry_seconds",
}


class InfraSettings(BaseModel):
    """Production-infra knobs (issue 12); each field is the context key of the same name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # "codebuild": the image is built in AWS (no Docker on the deployer's machine); "local": CDK's
    # DockerImageAsset, built by the deployer's Docker.
    image_build: Literal["codebuild", "local"] = "codebuild"
    # Trainer images the ECR repository keeps (older ones expire).
    trainer_images_kept: Annotated[int, Field(ge=1, le=1000)] = 10
    # Data bucket retention: uploads and spot checkpoints expire, overwritten or deleted objects stay
    # recoverable as noncurrent versions for this many days.
    uploads_retention_days: Annotated[int, Field(ge=1)] = 30
    checkpoints_retention_days: Annotated[int, Field(ge=1)] = 7
    noncurrent_versions_retention_days: Annotated[int, Field(ge=1)] = 30
    # Alarms go to a new ops topic e-mailing ``ops_email``, or to an existing ``alarm_topic_arn``, or
    # (neither given) to the job notification topic.
    ops_email: str | None = None
    alarm_topic_arn: (
        Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w-]+$")] | None
    ) = None
    # Training jobs in your VPC: both lists or neither.
    training_subnet_ids: tuple[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]+$")], ...] = ()
    training_security_group_ids: tuple[Annotated[str, Field(pattern=r"^sg-[0-9a-f]+$")], ...] = ()
    # Training jobs whose base model comes from S3 (s3://<bucket>/base-models/...) run with network
    # isolation: no network, no credentials in the container; the model comes back in SageMaker's
    # model.tar.gz and a step unpacks it. Jobs on a Hub base model need the network and run as before.
    training_network_isolation: bool = False

    @field_validator("ops_email")
    @classmethod
    def _ops_email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError(f"{value!r} is not an e-mail address (cdk deploy -c ops_email=ops@example.com)")
        return value

    @field_validator("training_subnet_ids", "training_security_group_ids", mode="before")
    @classmethod
    def _id_list(cls, value: Any) -> Any:
        """``-c training_subnet_ids=subnet-a,subnet-b`` arrives as one string; cdk.json gives a list."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _vpc_needs_both(self) -> InfraSettings:
        if bool(self.training_subnet_ids) != bool(self.training_security_group_ids):
            raise ValueError(
                "training_subnet_ids and training_security_group_ids go together: give both (a training "
                "job in a VPC needs subnets and security groups) or neither"
            )
        return self

    @property
    def training_vpc(self) -> bool:
        return bool(self.training_subnet_ids)


INFRA_KEYS = tuple(InfraSettings.model_fields)


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    notification_email: str | None = None
    retain_data_on_delete: bool = True
    # First wait before retrying a throttled CreateTrainingJob (then doubled, 5 attempts).
    training_retry_seconds: Annotated[int, Field(ge=1, le=600)] = 20
    job_defaults: JobDefaults = JobDefaults()
    training_queue: QueueSettings = QueueSettings()
    # Cost limits (lambdas/jobs/limits.py): context keys limit_<field>.
    limits: ServiceLimits = ServiceLimits()
    # --- production infra: image build, retention, operations, training network (issue 12) ---
    infra: InfraSettings = InfraSettings()

    @field_validator("notification_email")
    @classmethod
    def _looks_like_email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError(
                f"{value!r} is not an e-mail address (cdk deploy -c notification_email=you@example.com)"
            )
        return value

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> ServiceSettings:
        """A deployment whose defaults break its own limits would refuse every job.json-less batch."""
        defaults, limits = self.job_defaults, self.limits
        # Unset, the default base model's family picks the instance (family_table).
        family = detect_family(resolve_alias(defaults.base_model))
        instance_type = defaults.instance_type or family.entry.defaults.instance_type
        checks = [
            (
                instance_type in limits.instance_types,
                f"default_instance_type {instance_type}"
                + ("" if defaults.instance_type else f" (the default for {family.name} base models)")
                + f" is not in {context_key('instance_types')}",
            ),
            (
                defaults.max_runtime_seconds <= limits.max_runtime_seconds,
                f"default_max_runtime_seconds {defaults.max_runtime_seconds} is over "
                f"{context_key('max_runtime_seconds')} {limits.max_runtime_seconds}",
            ),
            (
                defaults.max_train_steps is None or defaults.max_train_steps <= limits.max_train_steps,
                f"default_max_train_steps {defaults.max_train_steps} is over "
                f"{context_key('max_train_steps')} {limits.max_train_steps}",
            ),
            (
                defaults.min_images <= limits.max_images,
                f"default_min_images {defaults.min_images} is over "
                f"{context_key('max_images')} {limits.max_images}",
            ),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def settings_from_context(context: dict[str, Any]) -> ServiceSettings:
    """Build settings from a flat context mapping; unknown ``default_*`` keys are errors, not ignored."""
    defaults = {
        key.removeprefix(DEFAULTS_PREFIX): value
        for key, value in context.items()
        if key.startswith(DEFAULTS_PREFIX)
    }
    limits = {
        key.removeprefix(LIMITS_PREFIX): value
        for key, value in context.items()
        if key.startswith(LIMITS_PREFIX)
    }
    if "max_images" in defaults:
        raise ValueError(
            f"invalid CDK context: default_max_images is now a limit: set {context_key('max_images')}"
        )
    try:
        return ServiceSettings(
            notification_email=context.get("notification_email") or None,
            retain_data_on_delete=_as_bool(context.get("retain_data_on_delete", True)),
            training_retry_seconds=context.get("training_retry_seconds", 20),
            job_defaults=JobDefaults.model_validate(defaults),
            training_queue=QueueSettings.model_validate(
                {field: context[key] for key, field in QUEUE_CONTEXT_KEYS.items() if key in context}
            ),
            limits=ServiceLimits.model_validate(limits),
            infra=_infra_settings(context),
        )
    except ValidationError as err:
        problems = "; ".join(
            (f"{_context_key(err.title, e['loc'])}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise ValueError(f"invalid CDK context: {problems}") from None


def _context_key(model: str, loc: tuple) -> str:
    """The context key a user typed, for a pydantic error location."""
    name = ".".join(str(p) for p in loc)
    if model == "JobDefaults":
        return DEFAULTS_PREFIX + name
    if model == "QueueSettings":
        return {field: key for key, field in QUEUE_CONTEXT_KEYS.items()}.get(name, name)
    if model == "ServiceLimits":
        return LIMITS_PREFIX + name
    return name


def _infra_settings(context: dict[str, Any]) -> InfraSettings:
    """The issue-12 keys present in context (``-c`` values arrive as strings; pydantic converts)."""
    return InfraSettings.model_validate(
        {key: context[key] for key in INFRA_KEYS if context.get(key) not in (None, "")}
    )


def _as_bool(value: Any) -> bool:
    """Context from ``-c key=value`` arrives as a string; "false" must mean false."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")
