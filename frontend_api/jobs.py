"""The API's operations on jobs: create, start, read, list, stop. Handlers only translate HTTP to these.

A job created here is an ordinary pipeline job: its photos land under ``uploads/<job>/`` and its
``job.json`` (the spec) is the commit marker the intake already listens to, so everything after that is
the S3 drop's path, unchanged.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from frontend_api import archive, cursor, idempotency, imports
from frontend_api.errors import ApiError
from frontend_api.models import (
    JOB_STATUSES,
    CreateJobRequest,
    FailureView,
    FileLink,
    Job,
    JobCreated,
    JobList,
    JobSummary,
    ModelView,
    Progress,
    UploadTarget,
)
from frontend_api.settings import ApiSettings
from frontend_api.store import ApiJob, ApiStore, IdempotencyConflict, KeyReused, NameTaken
from frontend_api.url_safety import UnsafeUrl, check_url
from lambdas.jobs import batch_state as bs
from lambdas.jobs import failures, naming, notification, s3_layout
from lambdas.jobs.batch import check_job_spec
from lambdas.jobs.spec import JobSpecError
from lambdas.jobs.training_request import model_output_s3_uri
from lambdas.pipeline.aws import client, error_code
from lambdas.pipeline.queue import free_run
from lambdas.pipeline.runs_table import JobsTable

JOB_ID_PATTERN = re.compile(r"^job-[0-9a-f]{16}$")
MAX_BODY_BYTES = 256 * 1024
LINK_EXPIRY_SECONDS = 3600
MAX_LINKED_FILES = 500
DEFAULT_PAGE, MAX_PAGE = 20, 100
ACTIVE = ("collecting", "validating", "training")


def new_job_id() -> str:
    return f"job-{secrets.token_hex(8)}"


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_job_id(job_id: str) -> str:
    if not JOB_ID_PATTERN.match(job_id):
        raise ApiError(
            "invalid_job_id", f"{job_id[:80]!r} is not a job id; ids look like job-0123456789abcdef"
        )
    return job_id


def parse_body(raw: str | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        raise ApiError("invalid_body", "the request needs a JSON object body")
    if len(raw.encode("utf-8")) > MAX_BODY_BYTES:
        raise ApiError("body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as err:
        message = getattr(err, "msg", "too deeply nested")
        raise ApiError("malformed_json", f"the body is not valid JSON ({message})") from None
    if not isinstance(body, dict):
        raise ApiError("invalid_body", 'the body must be a JSON object, e.g. {"images": [...]}')
    return body


def validation_error(err: ValidationError) -> ApiError:
    details = []
    for problem in err.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(body)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field; valid fields are: " + ", ".join(sorted(CreateJobRequest.model_fields))
        details.append({"field": field, "message": message})
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return ApiError("validation_failed", f"the job request is invalid: {summary}", details=details)


class JobService:
    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.bucket = settings.pipeline.bucket
        self.defaults = settings.pipeline.defaults
        self.limits = settings.pipeline.limits
        self.store = ApiStore(settings.pipeline.table_name, client("dynamodb"))
        self.runs = JobsTable(settings.pipeline.table_name, client("dynamodb"))
        self.s3 = client("s3")

    # --- create ---

    def create(
        self, raw_body: str | None, *, owner: str, idempotency_key: str | None
    ) -> tuple[int, JobCreated]:
        body = parse_body(raw_body)
        try:
            request = CreateJobRequest.model_validate(body)
        except ValidationError as err:
            raise validation_error(err) from None
        if idempotency_key is not None:
            idempotency.check_key(idempotency_key)
        fingerprint = idempotency.fingerprint(body)
        if idempotency_key is not None:
            reused = self.store.idempotent_job(owner, idempotency_key, fingerprint)
            if reused is not None:
                return self._replayed(reused, owner)
        self._check_limits(request)
        fetched = self._fetch_images(request) if request.images_url is not None else None

        created = now_ms()
        job_id = new_job_id()
        job = ApiJob(
            id=job_id,
            job_name=request.job_name or job_id,
            owner=owner,
            created_at_ms=created,
            spec=request.job_spec().model_dump(exclude_unset=True),
            fingerprint=fingerprint,
            webhook_url=request.webhook_url,
            images=[image.model_dump() for image in request.images or []],
            images_url=request.images_url,
        )
        try:
            self.store.create(job, idempotency_key=idempotency_key, now_s=created // 1000)
        except IdempotencyConflict as conflict:
            return self._replayed(conflict.reuse, owner)
        except NameTaken:
            raise ApiError(
                "job_name_taken",
                f"the job name {job.job_name!r} is already in use; choose another or leave job_name out",
            ) from None

        result = JobCreated(**self.view(job).model_dump())
        if fetched is not None:
            prefix = s3_layout.upload_prefix(job.job_name)
            for name, data in fetched.files:
                self.s3.put_object(Bucket=self.bucket, Key=prefix + name, Body=data)
            self._commit(job)
            result = JobCreated(**self.view(self.store.get(job.id) or job).model_dump())
            result.imported_images = fetched.image_count
            result.skipped = fetched.skipped
        else:
            # The client uploads through the targets, then calls /start: its batch must not start on a pause
            # longer than the quiet period while the targets are still valid.
            self.runs.hold_batch(job.job_name, created + self.settings.upload_expiry_seconds * 1000)
            result.uploads = self.upload_targets(job)
        return 201, result

    def _replayed(self, reused: KeyReused, owner: str) -> tuple[int, JobCreated]:
        if not reused.same_body:
            raise ApiError(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different body; use a new key for a new job",
            )
        job = self.store.get(reused.job_id)
        if job is None or job.owner != owner:  # pragma: no cover - the key is per owner
            raise ApiError(
                "idempotency_in_progress", "the first request with this key is still being handled"
            )
        result = JobCreated(**self.view(job).model_dump())
        if job.images and job.started_at_ms is None:
            result.uploads = self.upload_targets(job)
        return 200, result

    def _check_limits(self, request: CreateJobRequest) -> None:
        """Refuse at create what the pipeline would refuse later: the deployment's limits, up front.

        The one place to add further deployment limits (instance types, steps, runtime) as 4xx answers.
        """
        count = len(request.images or []) or (
            len(request.images_url) if isinstance(request.images_url, list) else 0
        )
        if count > self.limits.max_images:
            raise ApiError(
                "too_many_images",
                f"{count} images; this deployment takes at most {self.limits.max_images} per job",
            )
        name = request.job_name or "api-job"
        try:
            _, over = check_job_spec(
                name,
                request.job_spec(),
                defaults=self.defaults,
                limits=self.limits,
                bucket=self.bucket,
                model_output_s3_uri=model_output_s3_uri(self.bucket, name, "create"),
            )
        except JobSpecError as err:
            raise ApiError("validation_failed", str(err).replace("job.json: ", "")) from None
        if over:
            raise ApiError("limit_exceeded", "; ".join(over).replace(" in job.json", " in the request"))
        if request.webhook_url is not None:
            try:
                check_url(request.webhook_url, what="webhook_url", allow_local=self.settings.allow_local_urls)
            except UnsafeUrl as err:
                raise ApiError("unsafe_url", str(err)) from None

    def _import_settings(self) -> imports.ImportSettings:
        return imports.ImportSettings(
            allow_local=self.settings.allow_local_urls, allowed_s3_buckets=self.settings.import_buckets
        )

    def _fetch_images(self, request: CreateJobRequest) -> imports.Fetched:
        limits = archive.ArchiveLimits(
            max_images=self.limits.max_images, max_entry_bytes=self.defaults.max_image_bytes
        )
        if isinstance(request.images_url, list):
            return imports.fetch_list(
                request.images_url, limits=limits, settings=self._import_settings(), s3=self.s3
            )
        return imports.fetch_zip(
            str(request.images_url), limits=limits, settings=self._import_settings(), s3=self.s3
        )

    def upload_targets(self, job: ApiJob) -> list[UploadTarget]:
        expiry = self.settings.upload_expiry_seconds
        expires_at = iso(now_ms() + expiry * 1000)
        prefix = s3_layout.upload_prefix(job.job_name)
        targets = []
        for image in job.images:
            key = prefix + image["filename"]
            post = self.s3.generate_presigned_post(
                Bucket=self.bucket,
                Key=key,
                Fields={"Content-Type": image["content_type"]},
                Conditions=[
                    {"bucket": self.bucket},
                    {"key": key},
                    {"Content-Type": image["content_type"]},
                    ["content-length-range", 1, self.defaults.max_image_bytes],
                ],
                ExpiresIn=expiry,
            )
            targets.append(
                UploadTarget(
                    filename=image["filename"], url=post["url"], fields=post["fields"], expires_at=expires_at
                )
            )
        return targets

    # --- start ---

    def start(self, job_id: str, *, owner: str) -> Job:
        job = self._owned(job_id, owner)
        if job.started_at_ms is not None or job.stopped_at_ms is not None:
            raise ApiError("job_already_started", f"job {job_id} was already started or stopped")
        prefix = s3_layout.upload_prefix(job.job_name)
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        if not listed.get("KeyCount"):
            raise ApiError(
                "no_images", f"nothing was uploaded for job {job_id}: upload through its targets first"
            )
        run = self._run(job)
        if run is not None and job_status(job, run)[0] in ("validating", "training"):
            # The quiet period started the batch before this start call, so without the job's spec:
            # that run is stopped (quietly) and job.json starts a new run on the whole folder.
            self._stop_run(job, run, announce=False)
        self._commit(job)
        return self.view(self.store.get(job_id) or job)

    def _commit(self, job: ApiJob) -> None:
        """job.json is the marker the intake commits a batch on; its content is the job's spec."""
        if not self.store.mark_started_once(job.id, now_ms()):
            raise ApiError("job_already_started", f"job {job.id} was already started")
        self.s3.put_object(
            Bucket=self.bucket,
            Key=s3_layout.job_spec_key(job.job_name),
            Body=json.dumps(job.spec, sort_keys=True).encode(),
            ContentType="application/json",
        )

    # --- read ---

    def _owned(self, job_id: str, owner: str) -> ApiJob:
        check_job_id(job_id)
        job = self.store.get(job_id)
        if job is None or (self.settings.auth_mode == "cognito" and job.owner != owner):
            raise ApiError("job_not_found", f"there is no job {job_id}")
        return job

    def get(self, job_id: str, *, owner: str) -> Job:
        return self.view(self._owned(job_id, owner), detailed=True)

    def _run(self, job: ApiJob) -> dict[str, Any] | None:
        batch = self.runs.get_batch(job.job_name)
        if batch is None:
            return None
        return self.runs.get_run(job.job_name, batch.run_id)

    def view(self, job: ApiJob, *, detailed: bool = False, run: dict[str, Any] | None = None) -> Job:
        run = run if run is not None else self._run(job)
        status, stage = job_status(job, run)
        details = (run or {}).get("details") or {}
        result = Job(
            id=job.id,
            job_name=job.job_name,
            status=status,
            stage=stage,
            created_at=iso(job.created_at_ms),
            run_id=(run or {}).get("run_id"),
            spec=job.spec,
            webhook_url=job.webhook_url,
            purged=job.purged,
            skipped=list(details.get("skipped") or []),
        )
        if details.get("failure"):
            failure = details["failure"]
            result.failure = FailureView(
                kind=failure.get("kind", failures.INTERNAL),
                reason=failure.get("reason", ""),
                advice=list(failure.get("advice") or []),
                problems=list(failure.get("problems") or []),
            )
        if detailed and status == "training" and run and run.get("training_job_name"):
            result.progress = self._progress(run["training_job_name"])
        if detailed and status == "succeeded" and details.get("model") and not job.purged:
            result.model = self._model(details["model"])
        return result

    def _progress(self, training_job_name: str) -> Progress | None:
        try:
            described = client("sagemaker").describe_training_job(TrainingJobName=training_job_name)
        except Exception as err:
            if error_code(err) in {"ValidationException", "ResourceNotFound"}:
                return None
            raise
        return progress_of(described)

    def _model(self, model: dict[str, Any]) -> ModelView:
        prefix_uri = model["s3_prefix"]
        bucket, prefix = s3_layout.split_s3_uri(prefix_uri)
        files: list[FileLink] = []
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                if len(files) >= MAX_LINKED_FILES:
                    break
                url = self.s3.generate_presigned_url(
                    "get_object", Params={"Bucket": bucket, "Key": obj["Key"]}, ExpiresIn=LINK_EXPIRY_SECONDS
                )
                files.append(FileLink(path=obj["Key"].removeprefix(prefix), url=url, size=obj["Size"]))
        samples_folder = s3_layout.SAMPLES_FOLDER + "/"
        return ModelView(
            s3_prefix=prefix_uri,
            diffusers_folder=model.get("diffusers_folder"),
            checkpoint=model.get("checkpoint"),
            lora=model.get("lora"),
            files=[f for f in files if not f.path.startswith(samples_folder)],
            samples=[f for f in files if f.path.startswith(samples_folder)],
        )

    # --- list ---

    def list(self, *, owner: str, status: str | None, limit: str | None, cursor_text: str | None) -> JobList:
        if status is not None and status not in JOB_STATUSES:
            raise ApiError("invalid_query", f"status must be one of {', '.join(JOB_STATUSES)}")
        if limit is None:
            size = DEFAULT_PAGE
        elif limit.isdigit() and 1 <= int(limit) <= MAX_PAGE:
            size = int(limit)
        else:
            raise ApiError("invalid_query", f"limit must be a whole number from 1 to {MAX_PAGE}")
        after = cursor.decode(cursor_text) if cursor_text is not None else None
        list_owner = self._list_owner(owner)
        found: list[JobSummary] = []
        last = after
        while True:
            rows, has_more = self.store.list_page(list_owner, after=last, limit=size)
            for index, (position, job_id) in enumerate(rows):
                last = position
                job = self.store.get(job_id)
                view = self.view(job) if job is not None else None
                if view is not None and (status is None or view.status == status):
                    found.append(
                        JobSummary(
                            id=view.id,
                            job_name=view.job_name,
                            status=view.status,
                            created_at=view.created_at,
                            run_id=view.run_id,
                        )
                    )
                if len(found) >= size:
                    more = has_more or index < len(rows) - 1
                    return JobList(jobs=found, next_cursor=cursor.encode(position) if more else None)
            if not has_more or not rows:
                return JobList(jobs=found, next_cursor=None)

    def _list_owner(self, owner: str) -> str:
        return owner

    # --- stop ---

    def stop(self, job_id: str, *, owner: str, purge: bool) -> Job:
        job = self._owned(job_id, owner)
        run = self._run(job)
        status, _ = job_status(job, run)
        if status in ACTIVE and run is not None:
            self._stop_run(job, run)
        if job.stopped_at_ms is None:
            self.store.mark(job.id, stopped_at_ms=now_ms())
        if purge:
            self._purge(job)
            self.store.mark(job.id, purged=True)
        return self.view(self.store.get(job.id) or job, detailed=True)

    def _stop_run(self, job: ApiJob, run: dict[str, Any], *, announce: bool = True) -> None:
        """Stop the execution (Step Functions stops its training job), then record and announce the end."""
        pipeline = self.settings.pipeline
        run_id = run["run_id"]
        name = run.get("execution_name") or naming.training_job_name(job.job_name, run_id)
        if pipeline.state_machine_arn:
            arn = pipeline.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
            sfn = client("stepfunctions")
            with contextlib.suppress(sfn.exceptions.ExecutionDoesNotExist):
                sfn.stop_execution(executionArn=arn, error="JobStopped", cause="stopped through the HTTP API")
        if run.get("training_job_name"):
            # Step Functions stops a .sync training job itself; this covers the moment before it noticed.
            with contextlib.suppress(Exception):
                client("sagemaker").stop_training_job(TrainingJobName=run["training_job_name"])
        moment = now_ms()
        self.runs.close_batch(job.job_name, run_id, moment)
        self.runs.release_hold(job.job_name)
        free_run(job.job_name, run_id, pipeline)  # at once, not only when EventBridge reports the abort
        why = failures.Failure(
            failures.TRAINING_STOPPED,
            "The job was stopped through the HTTP API (DELETE /jobs/{id}).",
            ("Create a new job, or upload to the same folder again to start a new run.",),
        )
        facts = notification.RunFacts(
            job_name=job.job_name,
            run_id=run_id,
            upload_prefix_uri=s3_layout.s3_uri(self.bucket, s3_layout.upload_prefix(job.job_name)),
            training_job_name=run.get("training_job_name"),
            total_seconds=(moment - run["created_at_ms"]) // 1000 if "created_at_ms" in run else None,
        )
        message = notification.failure(facts, why)
        self.runs.record_run(
            job.job_name, run_id, bs.RUN_FAILED, moment, details=message.payload, failure_kind=why.kind
        )
        if announce and self.settings.topic_arn:
            client("sns").publish(
                TopicArn=self.settings.topic_arn,
                Subject=message.subject,
                Message=message.sns_message(),
                MessageStructure="json",
            )

    def _purge(self, job: ApiJob) -> None:
        prefixes = [
            s3_layout.upload_prefix(job.job_name),
            f"{s3_layout.MODELS_ROOT}{job.job_name}/",
            f"{s3_layout.CHECKPOINTS_ROOT}{job.job_name}/",
        ]
        for prefix in prefixes:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:
                    self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})


def progress_of(described: dict[str, Any]) -> Progress:
    """DescribeTrainingJob -> progress: the latest values SageMaker read from the trainer's metric lines."""
    metrics = {m["MetricName"]: m["Value"] for m in described.get("FinalMetricDataList") or []}
    steps = str((described.get("HyperParameters") or {}).get("max_train_steps", "")).strip('"')
    return Progress(
        secondary_status=described.get("SecondaryStatus"),
        step=metrics.get("train:step"),
        loss=metrics.get("train:loss"),
        steps_per_second=metrics.get("train:steps_per_second"),
        max_train_steps=int(steps) if steps.isdigit() else None,
    )


def job_status(job: ApiJob, run: dict[str, Any] | None) -> tuple[str, str]:
    """(status, stage): status is the API's coarse state, stage the pipeline's run state."""
    if run is None:
        return ("cancelled" if job.stopped_at_ms else "awaiting_upload"), "no run yet"
    state = run.get("run_state", bs.RUN_COLLECTING)
    if state == bs.RUN_COLLECTING:
        return "collecting", state
    if state in (bs.RUN_SEALED, bs.RUN_VALIDATED):
        return "validating", state
    if state == bs.RUN_TRAINING:
        return "training", state
    if state == bs.RUN_SUCCEEDED:
        return "succeeded", state
    if run.get("failure_kind") == failures.TRAINING_STOPPED:
        return "stopped", state
    return "failed", state
