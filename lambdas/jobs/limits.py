"""Deployment-level cost limits: what no job.json can ask for, whatever it says. Pure.

Set once per deployment as CDK context (``cdk deploy -c limit_max_runtime_seconds=28800``); each limit is
named by its context key, so a job that exceeds one fails validation with a message saying which limit
it hit and how an operator raises it. The instance allow-list is enforced in IAM as well (the state
machine may only create training jobs on these instance types), so a bug in a Lambda cannot spend
outside it.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lambdas.jobs.spec import INSTANCE_TYPE_PATTERN, MAX_RUNTIME_LIMIT_SECONDS

# Context keys for limits are the ServiceLimits field names with this prefix.
LIMITS_PREFIX = "limit_"
_SIZES = ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")
# The single-GPU sizes of the g4dn (T4), g5 (A10G), g6 (L4) and g6e (L40S) families.
DEFAULT_INSTANCE_TYPES = tuple(
    f"ml.{family}.{size}" for family in ("g4dn", "g5", "g6", "g6e") for size in _SIZES
)


class ServiceLimits(BaseModel):
    """The most a job may ask for; the defaults keep a single job's cost in the tens of dollars."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance_types: tuple[Annotated[str, Field(pattern=INSTANCE_TYPE_PATTERN)], ...] = Field(
        default=DEFAULT_INSTANCE_TYPES, min_length=1
    )
    max_runtime_seconds: Annotated[int, Field(ge=600, le=MAX_RUNTIME_LIMIT_SECONDS)] = 4 * 3600
    max_train_steps: Annotated[int, Field(ge=1, le=50_000)] = 5000
    max_resolution: Annotated[int, Field(ge=64, le=4096)] = 1024
    max_images: Annotated[int, Field(ge=1, le=10_000)] = 200

    @field_validator("instance_types", mode="before")
    @classmethod
    def _list_from_context(cls, value: object) -> object:
        """``-c limit_instance_types=ml.g5.xlarge,ml.g5.2xlarge`` or a JSON list, as cdk.json holds it."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as err:
                    raise ValueError(f"not a JSON list: {err.msg}") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value


def context_key(field: str) -> str:
    return f"{LIMITS_PREFIX}{field}"


def _exceeded(what: str, asked: object, field: str, limit: object) -> str:
    return (
        f"{what} {asked} is over this deployment's limit of {limit}; lower it in job.json, or ask the "
        f"operator to raise the limit (CDK context '{context_key(field)}')"
    )


def limit_problems(
    limits: ServiceLimits,
    *,
    instance_type: str,
    max_runtime_seconds: int,
    max_train_steps: int,
    resolution: int,
) -> list[str]:
    """One line per limit a job exceeds, each naming the limit and the context key that raises it."""
    problems = []
    if instance_type not in limits.instance_types:
        problems.append(
            f"instance_type {instance_type} is not allowed in this deployment (allowed: "
            f"{', '.join(limits.instance_types)}); pick one of them in job.json, or ask the operator to add "
            f"it (CDK context '{context_key('instance_types')}')"
        )
    if max_runtime_seconds > limits.max_runtime_seconds:
        problems.append(
            _exceeded(
                "max_runtime_seconds", max_runtime_seconds, "max_runtime_seconds", limits.max_runtime_seconds
            )
        )
    if max_train_steps > limits.max_train_steps:
        problems.append(
            _exceeded("max_train_steps", max_train_steps, "max_train_steps", limits.max_train_steps)
        )
    if resolution > limits.max_resolution:
        problems.append(_exceeded("resolution", resolution, "max_resolution", limits.max_resolution))
    return problems


def image_count_problem(limits: ServiceLimits, count: int) -> str | None:
    if count <= limits.max_images:
        return None
    return (
        f"{count} usable images; this deployment trains on at most {limits.max_images} per batch: upload "
        f"fewer, or ask the operator to raise the limit (CDK context '{context_key('max_images')}')"
    )
