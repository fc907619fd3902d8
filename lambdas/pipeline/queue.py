"""The training queue's steps: wait for a slot, requeue on a quota error, free slots of ended runs."""

from __future__ import annotations

import json
from typing import Any

from lambdas.jobs import batch_state, failures
from lambdas.jobs import training_slots as ts
from lambdas.jobs.spec import ResolvedJob
from lambdas.jobs.training_request import stopping_condition
from lambdas.pipeline.config import PipelineSettings
from lambdas.pipeline.intake import now_ms
from lambdas.pipeline.runs_table import JobsTable
from lambdas.pipeline.training_slots import TrainingSlots


def acquire_slot(
    job_name: str, run_id: str, slot: dict[str, Any], job: dict[str, Any], settings: PipelineSettings
) -> dict[str, Any]:
    """The AcquireTrainingSlot step's output (``$.slot``): acquired or not, and how long to wait if not."""
    queue = settings.queue
    stopping = stopping_condition(ResolvedJob.model_validate(job))
    now = now_ms()
    answer = TrainingSlots(settings.table_name).acquire(
        job_name,
        run_id,
        ticket=slot.get("ticket"),
        limit=queue.max_concurrent_training_jobs,
        hold_seconds=ts.hold_seconds(stopping["MaxRuntimeInSeconds"], stopping.get("MaxWaitTimeInSeconds")),
        stale_seconds=ts.stale_ticket_seconds(queue.poll_seconds),
        now_ms=now,
    )
    table = JobsTable(settings.table_name)
    queued_ms = int(slot.get("queued_ms", 0))
    if answer.acquired:
        queued_ms += max(0, now - answer.queued_at_ms)
        table.record_run(job_name, run_id, batch_state.RUN_VALIDATED, now, queued_seconds=queued_ms // 1000)
    elif not slot.get("ticket"):  # first time in line
        table.record_run(job_name, run_id, batch_state.RUN_QUEUED, now, queued_at_ms=answer.queued_at_ms)
    return {
        **slot,
        "queued_ms": queued_ms,
        "acquired": answer.acquired,
        "ticket": None if answer.acquired else answer.ticket,
        "position": answer.position,
        "wait_seconds": queue.poll_seconds,
    }


def after_training_error(
    job_name: str,
    run_id: str,
    slot: dict[str, Any],
    error: dict[str, Any] | None,
    settings: PipelineSettings,
) -> dict[str, Any]:
    """Free the slot; on ResourceLimitExceeded, requeue (bounded, with backoff) instead of failing."""
    TrainingSlots(settings.table_name).release(job_name, run_id, slot.get("ticket"))
    attempts = int(slot.get("quota_attempts", 0))
    wait = None
    if failures.explain_error(error, stage="training").kind == failures.QUOTA:
        attempts += 1
        wait = ts.quota_retry_wait(
            attempts,
            max_attempts=settings.queue.quota_retry_attempts,
            base_seconds=settings.queue.quota_retry_seconds,
        )
    return {
        **slot,
        "acquired": False,
        "ticket": None,
        "quota_attempts": attempts,
        "requeue": wait is not None,
        "wait_seconds": wait or 0,
    }


def release_slot(job_name: str, run_id: str, slot: dict[str, Any] | None, settings: PipelineSettings) -> None:
    TrainingSlots(settings.table_name).release(job_name, run_id, (slot or {}).get("ticket"))


def release_ended_execution(detail: dict[str, Any], settings: PipelineSettings) -> bool:
    """An execution that ended without its own cleanup (aborted, timed out) frees its slot and ticket."""
    try:
        run = json.loads(detail.get("input") or "{}")
    except json.JSONDecodeError:
        return False
    if not isinstance(run, dict) or not run.get("job_name") or not run.get("run_id"):
        return False
    free_run(str(run["job_name"]), str(run["run_id"]), settings)
    return True


def free_run(job_name: str, run_id: str, settings: PipelineSettings) -> None:
    """A run stopped from outside its execution gives back its slot and its place in line."""
    slots = TrainingSlots(settings.table_name)
    slots.release(job_name, run_id)
    slots.forget_tickets_of(job_name, run_id)
