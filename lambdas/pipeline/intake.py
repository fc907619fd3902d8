"""An upload event joins the job's open batch, or opens a new run and starts its one execution.

Safe under duplicates, retries, reordering and concurrent deliveries: every decision is a conditional
write on the job's BATCH item, an object version is identified by its token (key, ETag, write time from
HeadObject), and the execution name is derived from job and run, so starting it twice starts it once.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from lambdas.jobs import batch_state, naming, s3_layout
from lambdas.pipeline.aws import client, error_code
from lambdas.pipeline.config import PipelineSettings
from lambdas.pipeline.runs_table import AlreadySeen, Conflict, JobsTable

# Outcomes, logged per record and asserted by tests.
IGNORED = "ignored"
GONE = "gone"
DUPLICATE = "duplicate"
JOINED = "joined"
OPENED = "opened"
_ATTEMPTS = 8


@dataclass(frozen=True)
class IntakeResult:
    outcome: str
    job_name: str | None = None
    run_id: str | None = None
    detail: str = ""


def now_ms() -> int:
    return int(time.time() * 1000)


def handle_object_created(bucket: str, raw_key: str, settings: PipelineSettings) -> IntakeResult:
    """One S3 "Object Created" event; ``raw_key`` as delivered (URL-encoded, ``+`` for a space)."""
    if bucket != settings.bucket:
        return IntakeResult(IGNORED, detail=f"event for another bucket {bucket!r}")
    # The decoded key is the one S3 means; the raw key is tried as well, so a producer that does not
    # encode keys (or a key that only looks encoded) still finds its object.
    for key in dict.fromkeys([s3_layout.decode_event_key(raw_key), raw_key]):
        uploaded = s3_layout.parse_upload_key(key)
        if uploaded is None:
            return IntakeResult(IGNORED, detail=f"{key!r} is not under {s3_layout.UPLOADS_ROOT}<job>/")
        if uploaded.is_ignored:
            return IntakeResult(
                IGNORED, uploaded.job_name, detail=f"{uploaded.relative_path!r} is not a photo"
            )
        # A job name that cannot be used still opens a run: its CheckBatch fails it, once the batch is
        # complete, with a notification that says what to rename (never a silent drop).
        head = _head_or_none(bucket, key)
        if head is not None:
            return record_upload(
                uploaded.job_name,
                key,
                batch_state.object_token(key, head["ETag"], head["LastModified"]),
                content=batch_state.content_token(key, head["ETag"]),
                committed=uploaded.is_job_spec,
                settings=settings,
            )
    return IntakeResult(GONE, uploaded.job_name, detail=f"{raw_key!r} no longer exists")


def _head_or_none(bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return client("s3").head_object(Bucket=bucket, Key=key)
    except Exception as err:
        if error_code(err) in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise


def record_upload(
    job_name: str, key: str, token: str, *, content: str, committed: bool, settings: PipelineSettings
) -> IntakeResult:
    table = JobsTable(settings.table_name)
    for _ in range(_ATTEMPTS):
        batch = table.get_batch(job_name)
        moment = now_ms()
        if batch is not None and batch.collecting:
            try:
                table.join_batch(
                    job_name,
                    batch.run_id,
                    token=token,
                    key=key,
                    content=content,
                    committed=committed,
                    now_ms=moment,
                )
            except Conflict:
                continue
            if not batch.execution_started:
                # The opener may have crashed between its write and StartExecution: this finishes its work.
                start_execution(job_name, batch.run_id, settings, table)
            return IntakeResult(JOINED, job_name, batch.run_id)
        if batch is not None and table.run_in_progress_covers(job_name, batch.run_id, content):
            return IntakeResult(
                DUPLICATE,
                job_name,
                batch.run_id,
                f"{key!r}: same content as run {batch.run_id}, still in progress",
            )
        run_id = naming.new_run_id()
        try:
            table.open_batch(
                job_name,
                run_id,
                previous_run_id=batch.run_id if batch else None,
                token=token,
                key=key,
                content=content,
                committed=committed,
                now_ms=moment,
                execution_name=naming.training_job_name(job_name, run_id),
            )
        except AlreadySeen:
            return IntakeResult(DUPLICATE, job_name, batch.run_id if batch else None, f"{key!r} seen before")
        except Conflict:
            continue
        start_execution(job_name, run_id, settings, table)
        return IntakeResult(OPENED, job_name, run_id)
    raise RuntimeError(f"the batch of {job_name!r} kept changing under {_ATTEMPTS} attempts; retrying later")


def start_execution(job_name: str, run_id: str, settings: PipelineSettings, table: JobsTable) -> str:
    """Start the run's execution (returns its name); the name is fixed by job and run, so a second start
    of the same run is a no-op."""
    if not settings.state_machine_arn:
        raise RuntimeError("STATE_MACHINE_ARN is not set: this function cannot start runs")
    sfn: Any = client("stepfunctions")
    name = naming.training_job_name(job_name, run_id)
    with contextlib.suppress(sfn.exceptions.ExecutionAlreadyExists):
        sfn.start_execution(
            stateMachineArn=settings.state_machine_arn,
            name=name,
            input=json.dumps({"job_name": job_name, "run_id": run_id}, ensure_ascii=False),
        )
    table.mark_execution_started(job_name, run_id)
    return name
