"""The state machine's first step: wait until a batch is complete, then seal it with its exact listing."""

from __future__ import annotations

from typing import Any

from lambdas.jobs import batch_state, naming, s3_layout
from lambdas.jobs.batch import ListedObject, sealed_listing_json
from lambdas.pipeline.aws import client
from lambdas.pipeline.config import PipelineSettings
from lambdas.pipeline.intake import now_ms
from lambdas.pipeline.runs_table import JobsTable


class BatchLost(RuntimeError):
    """The job's open batch belongs to another run: this execution must not train."""


class InvalidJobName(ValueError):
    """The upload folder's name cannot name a job; the message says what to rename.

    Raised once the batch is complete, so one notification covers every upload into that folder.
    """


def check_batch(job_name: str, run_id: str, settings: PipelineSettings) -> dict[str, Any]:
    """``{"ready": bool, "wait_seconds": int}``; when ready, the batch is sealed for this run."""
    table = JobsTable(settings.table_name)
    run = table.get_run(job_name, run_id)
    if run is None:
        raise BatchLost(f"run {run_id} of {job_name!r} is not in the jobs table")
    if run["run_state"] != batch_state.RUN_COLLECTING:
        return {"ready": True, "wait_seconds": 0}  # sealed by an earlier attempt of this step
    batch = table.get_batch(job_name)
    if batch is None or batch.run_id != run_id or not batch.collecting:
        raise BatchLost(f"the open batch of {job_name!r} is not run {run_id}'s")

    readiness = batch_state.batch_readiness(
        now_ms=now_ms(),
        last_activity_ms=batch.last_activity_ms,
        committed=batch.committed,
        quiet_period_seconds=settings.defaults.quiet_period_seconds,
        commit_settle_seconds=settings.defaults.commit_settle_seconds,
        held_until_ms=None if batch.committed else table.held_until_ms(job_name),
    )
    if not readiness.ready:
        return {"ready": False, "wait_seconds": readiness.wait_seconds}
    try:
        naming.validate_job_name(job_name)
    except ValueError as err:
        raise InvalidJobName(str(err)) from None

    # Everything under the prefix now belongs to this run: late events for these objects are duplicates.
    # The listing is stored before the seal: it is the whole batch, and validation reads nothing else, so
    # an object that lands after it belongs to the next batch (its event finds this batch sealed).
    listing = list_objects(settings.bucket, s3_layout.upload_prefix(job_name))
    client("s3").put_object(
        Bucket=settings.bucket,
        Key=s3_layout.sealed_listing_key(job_name, run_id),
        Body=sealed_listing_json([ListedObject(o["Key"], int(o["Size"]), o["ETag"]) for o in listing]).encode(
            "utf-8"
        ),
        ContentType="application/json",
    )
    tokens = [
        (
            batch_state.object_token(o["Key"], o["ETag"], o["LastModified"]),
            o["Key"],
            batch_state.content_token(o["Key"], o["ETag"]),
        )
        for o in listing
    ]
    table.mark_seen(job_name, run_id, tokens, now_ms())
    if not table.seal(job_name, run_id, last_activity_ms=batch.last_activity_ms, now_ms=now_ms()):
        return {"ready": False, "wait_seconds": 1}  # an upload arrived meanwhile: it joins this batch
    return {"ready": True, "wait_seconds": 0}


def list_objects(bucket: str, prefix: str) -> list[dict[str, Any]]:
    pages = client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj for page in pages for obj in page.get("Contents", [])]


def list_objects_page(bucket: str, prefix: str) -> list[dict[str, Any]]:
    return client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("Contents", [])
