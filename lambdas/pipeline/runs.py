"""A validated batch becomes a training request; a finished run becomes a record and a notification."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dreambooth_trainer.hyperparameters import parse_hyperparameters
from lambdas.jobs import batch_state, failures, naming, notification, s3_layout
from lambdas.jobs.batch import BatchReport
from lambdas.jobs.model_files import describe_model_files, parse_json_object
from lambdas.jobs.spec import ResolvedJob, training_hyperparameters
from lambdas.jobs.training_request import build_training_request, model_output_s3_uri
from lambdas.pipeline.aws import client, error_code
from lambdas.pipeline.batch_checks import list_objects, list_objects_page
from lambdas.pipeline.config import PipelineSettings
from lambdas.pipeline.intake import now_ms
from lambdas.pipeline.queue import release_slot
from lambdas.pipeline.runs_table import JobsTable


def record_validation(job_name: str, run_id: str, report: BatchReport, settings: PipelineSettings) -> dict:
    """The Validate step's output: small, JSON, and enough for the steps after it."""
    table = JobsTable(settings.table_name)
    result = {
        "valid": report.valid,
        "problems": [p.as_dict() for p in report.problems],
        "images": len(report.images),
        # Bounded: the execution state stays far below Step Functions' 256 KB; batch.json has them all.
        "skipped": [
            {"file": p.file, "reason": p.problem} for p in report.skipped[: notification.FILES_LISTED]
        ],
        "skipped_count": len(report.skipped),
        "ignored": list(report.ignored[: notification.FILES_LISTED]),
        "ignored_count": len(report.ignored),
        "input_listing": s3_layout.s3_uri(settings.bucket, s3_layout.accepted_listing_key(job_name, run_id)),
        "notes": list(report.notes),
        "job": report.job.model_dump() if report.job else None,
    }
    if report.valid:
        table.record_run(
            job_name, run_id, batch_state.RUN_VALIDATED, now_ms(), image_count=len(report.images)
        )
    return result


def training_request(job_name: str, run_id: str, job: dict[str, Any], settings: PipelineSettings) -> dict:
    resolved = ResolvedJob.model_validate(job)
    output = model_output_s3_uri(settings.bucket, job_name, run_id)
    hyperparameters = training_hyperparameters(resolved, model_output_s3_uri=output, bucket=settings.bucket)
    shared_class_images = hyperparameters.class_images_output_s3_uri  # set for prior preservation only
    request = build_training_request(
        resolved,
        run_id=run_id,
        bucket=settings.bucket,
        hyperparameters=hyperparameters,
        class_images_available=bool(
            shared_class_images and list_objects_page(*s3_layout.split_s3_uri(shared_class_images))
        ),
        network_isolation=settings.network_isolation,
    )
    JobsTable(settings.table_name).record_run(
        job_name,
        run_id,
        batch_state.RUN_TRAINING,
        now_ms(),
        training_job_name=request["TrainingJobName"],
        model_output_s3_uri=output,
    )
    return request


def finish_succeeded(state: dict[str, Any], settings: PipelineSettings) -> dict[str, str]:
    job_name, run_id = state["job_name"], state["run_id"]
    release_slot(job_name, run_id, state.get("slot"), settings)
    training_job_name = (state.get("training") or {}).get("TrainingJobName") or naming.training_job_name(
        job_name, run_id
    )
    described = client("sagemaker").describe_training_job(TrainingJobName=training_job_name)
    # The trainer writes where its hyperparameter says: read it back with the trainer's own parser.
    prefix_uri = parse_hyperparameters(described["HyperParameters"]).model_output_s3_uri or ""
    bucket, prefix = s3_layout.split_s3_uri(prefix_uri)
    manifest = parse_json_object(_read_or_none(bucket, prefix + s3_layout.MANIFEST_FILENAME))
    listed = None
    if manifest is None:
        listed = [o["Key"].removeprefix(prefix) for o in list_objects(bucket, prefix)]
    complete = _read_or_none(bucket, prefix + s3_layout.SUCCESS_MARKER_FILENAME) is not None
    record = parse_json_object(_read_or_none(bucket, prefix + s3_layout.TRAINING_RECORD_FILENAME))
    model = describe_model_files(prefix_uri, manifest, listed, complete=complete, record=record)
    facts = _facts(state, settings, described)
    if facts.max_train_steps is None and isinstance((record or {}).get("steps"), int):
        # The job left the steps to the trainer (family default, subject_type): its record says how many.
        facts = replace(facts, max_train_steps=record["steps"])
    message = notification.success(facts, model)
    JobsTable(settings.table_name).record_run(
        job_name,
        run_id,
        batch_state.RUN_SUCCEEDED,
        now_ms(),
        details=message.payload,
        model_output_s3_uri=prefix_uri,
    )
    return {"status": notification.SUCCEEDED, "subject": message.subject, "message": message.sns_message()}


def finish_failed(state: dict[str, Any], settings: PipelineSettings) -> dict[str, str]:
    """Record the run as failed and describe why. Never raises for a state it cannot describe: the run
    still ends ``failed`` and the notification is still the documented JSON, saying that much."""
    job_name, run_id = str(state.get("job_name")), str(state.get("run_id"))
    release_slot(job_name, run_id, state.get("slot"), settings)
    table = JobsTable(settings.table_name)
    table.close_batch(job_name, run_id, now_ms())
    try:
        why = _failure_of(state, settings)
        described = None
        if (state.get("request") or {}).get("TrainingJobName"):
            described = _describe_or_none(state["request"]["TrainingJobName"])
        message = notification.failure(_facts(state, settings, described), why)
    except Exception as err:  # describing failed: say so in the same shape, not in a stack trace
        why = failures.Failure(
            failures.INTERNAL,
            f"The run failed, and describing the failure failed as well ({type(err).__name__}).",
            ("See the execution's history in the Step Functions console.", failures.RETRY_HINT),
        )
        message = notification.failure(
            notification.RunFacts(job_name, run_id, _uploads_uri(settings.bucket, job_name)), why
        )
    table.record_run(
        job_name, run_id, batch_state.RUN_FAILED, now_ms(), details=message.payload, failure_kind=why.kind
    )
    return {"status": notification.FAILED, "subject": message.subject, "message": message.sns_message()}


def _failure_of(state: dict[str, Any], settings: PipelineSettings) -> failures.Failure:
    validation = state.get("validation") or {}
    request = state.get("request") or {}
    job = validation.get("job") or {}
    if validation and not validation.get("valid", True):
        return failures.invalid_batch(
            _uploads_uri(settings.bucket, state["job_name"]), validation.get("problems", [])
        )
    return failures.explain_error(
        state.get("error"),
        stage=state.get("failed_state") or "pipeline",
        instance_type=(request.get("ResourceConfig") or {}).get("InstanceType") or job.get("instance_type"),
        use_spot=request.get("EnableManagedSpotTraining", job.get("use_spot")),
    )


def _uploads_uri(bucket: str, job_name: str) -> str:
    return s3_layout.s3_uri(bucket, s3_layout.upload_folder_text(job_name))


def _facts(
    state: dict[str, Any], settings: PipelineSettings, described: dict | None
) -> notification.RunFacts:
    job_name, run_id = state["job_name"], state["run_id"]
    validation = state.get("validation") or {}
    job = validation.get("job") or {}
    request = state.get("request") or {}
    run = JobsTable(settings.table_name).get_run(job_name, run_id) or {}
    created = run.get("created_at_ms")
    described = described or {}
    return notification.RunFacts(
        job_name=job_name,
        run_id=run_id,
        upload_prefix_uri=_uploads_uri(settings.bucket, job_name),
        training_job_name=request.get("TrainingJobName") or described.get("TrainingJobName"),
        prompt=job.get("instance_prompt"),
        training_method=job.get("training_method"),
        max_train_steps=job.get("max_train_steps"),
        family=job.get("family"),
        instance_type=job.get("instance_type"),
        use_spot=job.get("use_spot"),
        image_count=validation.get("images") if validation.get("valid") else None,
        skipped=tuple(validation.get("skipped") or ()),
        skipped_count=validation.get("skipped_count") or 0,
        ignored=tuple(validation.get("ignored") or ()),
        ignored_count=validation.get("ignored_count") or 0,
        input_listing=validation.get("input_listing"),
        total_seconds=(now_ms() - created) // 1000 if isinstance(created, int) else None,
        training_seconds=described.get("TrainingTimeInSeconds"),
        billable_seconds=described.get("BillableTimeInSeconds"),
        queued_seconds=run.get("queued_seconds"),
    )


def _describe_or_none(name: str) -> dict | None:
    try:
        return client("sagemaker").describe_training_job(TrainingJobName=name)
    except Exception as err:
        if error_code(err) in {"ValidationException", "ResourceNotFound"}:
            return None  # the create itself failed: there is no job
        raise


def _read_or_none(bucket: str, key: str) -> bytes | None:
    try:
        return client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as err:
        if error_code(err) in {"NoSuchKey", "404", "NotFound"}:
            return None
        raise
