"""The state machine's first steps: wait until a batch is complete and seal it, then validate it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lambdas.jobs import batch_state, s3_layout
from lambdas.jobs.batch import BatchReport, ListedObject, Problem, check_sizes, sort_batch, validate_batch
from lambdas.jobs.image_headers import FIRST_READ_BYTES, MAX_READ_BYTES, NeedMoreBytes, sniff_image
from lambdas.jobs.training_request import model_output_s3_uri
from lambdas.pipeline.aws import client, error_code
from lambdas.pipeline.config import PipelineSettings
from lambdas.pipeline.intake import now_ms
from lambdas.pipeline.runs_table import JobsTable

_READERS = 8


class BatchLost(RuntimeError):
    """The job's open batch belongs to another run: this execution must not train."""


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
    )
    if not readiness.ready:
        return {"ready": False, "wait_seconds": readiness.wait_seconds}

    # Everything under the prefix now belongs to this run: late events for these objects are duplicates.
    listing = list_objects(settings.bucket, s3_layout.upload_prefix(job_name))
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


def validate(job_name: str, run_id: str, settings: PipelineSettings) -> BatchReport:
    listing = list_objects(settings.bucket, s3_layout.upload_prefix(job_name))
    contents = sort_batch(job_name, [ListedObject(o["Key"], int(o["Size"])) for o in listing])
    readable, size_problems = check_sizes(contents, settings.defaults)
    s3 = client("s3")  # made here: worker threads do not see this invocation's environment
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        found = pool.map(lambda o: _header(s3, settings.bucket, o), readable)
        headers = dict(zip([o.key for o in readable], found, strict=True))
    spec_text = _read(s3, settings.bucket, contents.spec.key) if contents.spec else None
    report = validate_batch(
        contents,
        size_problems=size_problems,
        headers=headers,
        spec_text=spec_text,
        defaults=settings.defaults,
        model_output_s3_uri=model_output_s3_uri(settings.bucket, job_name, run_id),
        bucket=settings.bucket,
    )
    if report.job is not None and report.job.base_model.startswith("s3://"):
        model_bucket, key = s3_layout.split_s3_uri(report.job.base_model)
        if model_bucket == settings.bucket and not list_objects_page(model_bucket, key):
            missing = Problem(
                s3_layout.JOB_SPEC_FILENAME, f"base_model: nothing found at {report.job.base_model}"
            )
            report = BatchReport((*report.problems, missing), report.images, report.job, report.notes)
    return report


def list_objects_page(bucket: str, prefix: str) -> list[dict[str, Any]]:
    return client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("Contents", [])


def _header(s3: Any, bucket: str, obj: ListedObject):
    """The image header from a ranged GET; a longer read only for JPEGs whose frame header lies deeper."""
    size = FIRST_READ_BYTES
    while True:
        data = _read(s3, bucket, obj.key, size)
        try:
            return sniff_image(data)
        except NeedMoreBytes as err:
            if size >= MAX_READ_BYTES or len(data) < size:
                return f"cannot read the image header: {err}; the file may be truncated or damaged"
            size = MAX_READ_BYTES
        except ValueError as err:
            return str(err)


def _read(s3: Any, bucket: str, key: str, length: int | None = None) -> bytes:
    params = {"Bucket": bucket, "Key": key}
    if length is not None:
        params["Range"] = f"bytes=0-{length - 1}"
    try:
        return s3.get_object(**params)["Body"].read()
    except Exception as err:
        if error_code(err) == "InvalidRange":  # an empty object
            return b""
        raise
