"""What a pipeline Lambda is told by its environment, and the names of those variables.

The stack sets the variables (infra/pipeline.py imports these names); the local emulator runs several
functions in one process, so it hands each invocation its own environment through a context variable
instead of mutating ``os.environ`` under other threads' feet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from lambdas.jobs.limits import ServiceLimits
from lambdas.jobs.spec import JobDefaults
from lambdas.jobs.training_slots import QueueSettings

BUCKET_NAME = "BUCKET_NAME"
JOBS_TABLE_NAME = "JOBS_TABLE_NAME"
STATE_MACHINE_ARN = "STATE_MACHINE_ARN"
JOB_DEFAULTS = "JOB_DEFAULTS"
SERVICE_LIMITS = "SERVICE_LIMITS"
TRAINING_QUEUE = "TRAINING_QUEUE"
TRAINING_NETWORK_ISOLATION = "TRAINING_NETWORK_ISOLATION"  # "true": S3-based runs train isolated

_FUNCTION_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("function_environment", default=None)


def environ() -> Mapping[str, str]:
    """This invocation's environment: the emulator's per-call one, else the process's."""
    override = _FUNCTION_ENVIRONMENT.get()
    return os.environ if override is None else override


@contextmanager
def function_environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Run a handler in-process with its own environment variables (over the process's)."""
    token = _FUNCTION_ENVIRONMENT.set({**os.environ, **variables})
    try:
        yield
    finally:
        _FUNCTION_ENVIRONMENT.reset(token)


@dataclass(frozen=True)
class PipelineSettings:
    bucket: str
    table_name: str
    defaults: JobDefaults
    state_machine_arn: str | None = None
    limits: ServiceLimits = ServiceLimits()
    queue: QueueSettings = QueueSettings()
    network_isolation: bool = False

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> PipelineSettings:
        env = environ() if env is None else env
        missing = [name for name in (BUCKET_NAME, JOBS_TABLE_NAME, JOB_DEFAULTS) if not env.get(name)]
        if missing:
            raise RuntimeError(f"missing environment variable(s): {', '.join(missing)}")
        return cls(
            bucket=env[BUCKET_NAME],
            table_name=env[JOBS_TABLE_NAME],
            defaults=JobDefaults.model_validate_json(env[JOB_DEFAULTS]),
            state_machine_arn=env.get(STATE_MACHINE_ARN) or None,
            # Absent only where a function needs no limits; the stack sets it for every function.
            limits=ServiceLimits.model_validate_json(env[SERVICE_LIMITS])
            if env.get(SERVICE_LIMITS)
            else ServiceLimits(),
            queue=QueueSettings.model_validate_json(env[TRAINING_QUEUE])
            if env.get(TRAINING_QUEUE)
            else QueueSettings(),
            network_isolation=env.get(TRAINING_NETWORK_ISOLATION) == "true",
        )
