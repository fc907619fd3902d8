"""The typed events the handlers accept (pydantic, validated by Powertools' parser)."""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools.utilities.parser.models import S3EventNotificationEventBridgeModel, SqsRecordModel
from pydantic import BaseModel, ConfigDict, Json


class S3TestEvent(BaseModel):
    """What S3 sends once when a notification target is configured; carries no object."""

    Event: Literal["s3:TestEvent"]


class UploadEventRecord(SqsRecordModel):
    """An SQS record whose body is the EventBridge event S3 emitted for an object."""

    body: Json[S3EventNotificationEventBridgeModel | S3TestEvent]  # type: ignore[assignment]


class RunRef(BaseModel):
    """The state machine's input and what most steps are handed: which job, which run."""

    job_name: str
    run_id: str


class TrainingRequestEvent(RunRef):
    job: dict[str, Any]


class RunState(RunRef):
    """The whole execution state: validation, request, training result or the caught error, when present."""

    model_config = ConfigDict(extra="allow")


class FinishEvent(BaseModel):
    outcome: Literal["succeeded", "failed"]
    state: RunState


class SlotEvent(BaseModel):
    """AcquireTrainingSlot / TrainingError steps, or an EventBridge execution status change."""

    action: Literal["acquire", "training_error", "execution_ended"]
    job_name: str = ""
    run_id: str = ""
    slot: dict[str, Any] = {}
    job: dict[str, Any] = {}
    error: dict[str, Any] | None = None
    detail: dict[str, Any] = {}
