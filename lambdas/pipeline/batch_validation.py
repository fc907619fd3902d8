"""The Validate step: judge the sealed batch file by file, and freeze what passed as the run's input.

Why a run-specific copy rather than a SageMaker ``ManifestFile`` channel: a manifest names keys, and
SageMaker reads whatever lies at a key when the job starts (the bucket is not versioned, and a manifest
cannot pin an ETag), so a photo overwritten after validation would train unchecked. Here each sealed
object is read once, by the ETag the seal listed (``If-Match``), decoded in full, and the very bytes
that were decoded are written to ``training-input/<job>/<run>/images/``: the 'images' channel. What is
checked is what is trained, byte for byte; the copy costs a second copy of the photos for a few days
(the prefix expires, infra/storage.py) and needs nothing special from SageMaker or the local runner.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lambdas.jobs import s3_layout
from lambdas.jobs.base_models import resolve_base_model
from lambdas.jobs.batch import (
    BatchReport,
    ListedObject,
    Problem,
    accepted_listing_json,
    check_sizes,
    parse_sealed_listing,
    sort_batch,
    validate_batch,
)
from lambdas.jobs.families import FamilyChoice, detect_family, image_side_rule, min_image_side
from lambdas.jobs.image_checks import judge_image
from lambdas.jobs.image_headers import ImageHeader
from lambdas.jobs.model_files import parse_json_object
from lambdas.jobs.spec import JobSpecError, parse_job_spec
from lambdas.jobs.training_request import model_output_s3_uri
from lambdas.pipeline.aws import client, error_code
from lambdas.pipeline.batch_checks import list_objects_page
from lambdas.pipeline.config import PipelineSettings

MODEL_INDEX = "model_index.json"
# Photos decoded at once: each holds its bytes and its pixels (a 48 MP photo is ~150 MB decoded).
_DECODERS = 4
CHANGED_AFTER_SEAL = (
    "changed or deleted after the batch was sealed; the new version belongs to the next batch"
)


class SealedListingMissing(RuntimeError):
    """The run was never sealed by CheckBatch: there is nothing it may train on."""


def validate(job_name: str, run_id: str, settings: PipelineSettings) -> BatchReport:
    s3 = client("s3")  # made here: worker threads do not see this invocation's environment
    bucket = settings.bucket
    sealed = _sealed_listing(s3, bucket, job_name, run_id)
    contents = sort_batch(job_name, sealed)
    readable, skipped = check_sizes(contents, settings.defaults)
    images_prefix = s3_layout.training_images_prefix(job_name, run_id)
    # job.json first: its base model's family sets the smallest photo side (512 px for SDXL/FLUX-class).
    spec_text = None
    if contents.spec:
        spec_text = _read_sealed(s3, bucket, contents.spec)
        if spec_text is None:
            skipped.append(Problem(s3_layout.JOB_SPEC_FILENAME, CHANGED_AFTER_SEAL))
    family = _family(s3, spec_text, settings)
    min_side = min_image_side(family.name, settings.defaults.min_image_side)
    side_rule = image_side_rule(family.name) if min_side > settings.defaults.min_image_side else ""

    def stage(obj: ListedObject) -> tuple[str, ImageHeader | str]:
        name = contents.relative(obj.key)
        data = _read_sealed(s3, bucket, obj)
        if data is None:
            return name, CHANGED_AFTER_SEAL
        verdict = judge_image(data, min_side=min_side, side_rule=side_rule)
        if isinstance(verdict, ImageHeader):
            s3.put_object(Bucket=bucket, Key=images_prefix + name, Body=data)
        return name, verdict

    with ThreadPoolExecutor(max_workers=_DECODERS) as pool:
        verdicts = list(pool.map(stage, readable))
    accepted = [name for name, verdict in verdicts if isinstance(verdict, ImageHeader)]
    skipped += [Problem(name, verdict) for name, verdict in verdicts if isinstance(verdict, str)]
    for caption in contents.captions:  # the trainer pairs <photo>.txt with its photo
        data = _read_sealed(s3, bucket, caption)
        if data is not None:
            s3.put_object(Bucket=bucket, Key=images_prefix + contents.relative(caption.key), Body=data)

    report = validate_batch(
        contents,
        accepted=accepted,
        skipped=skipped,
        spec_text=spec_text,
        defaults=settings.defaults,
        limits=settings.limits,
        model_output_s3_uri=model_output_s3_uri(bucket, job_name, run_id),
        bucket=bucket,
        family=family.name,
    )
    if report.job is not None and report.job.base_model.startswith("s3://"):
        model_bucket, key = s3_layout.split_s3_uri(report.job.base_model)
        if model_bucket == bucket and not list_objects_page(model_bucket, key):
            missing = Problem(
                s3_layout.JOB_SPEC_FILENAME, f"base_model: nothing found at {report.job.base_model}"
            )
            report = BatchReport(
                (*report.problems, missing),
                report.images,
                report.job,
                report.notes,
                report.skipped,
                report.ignored,
            )
    s3.put_object(
        Bucket=bucket,
        Key=s3_layout.accepted_listing_key(job_name, run_id),
        Body=accepted_listing_json(
            contents, report, training_images_uri=s3_layout.s3_uri(bucket, images_prefix)
        ).encode("utf-8"),
        ContentType="application/json",
    )
    return report


def _family(s3: Any, spec_text: bytes | None, settings: PipelineSettings) -> FamilyChoice:
    """The base model's family: by alias or name, or from model_index.json of a base-models/ folder.

    A job.json that cannot be read leaves the deployment's base model: validate_batch reports the problem.
    """
    base_model = settings.defaults.base_model
    try:
        spec = parse_job_spec(spec_text)
        base_model = resolve_base_model(spec.base_model or base_model, settings.bucket)
    except (JobSpecError, ValueError):
        pass
    model_index = None
    if base_model.startswith("s3://"):
        model_bucket, key = s3_layout.split_s3_uri(base_model.rstrip("/") + "/")
        if model_bucket == settings.bucket:
            model_index = parse_json_object(_read_or_none(s3, model_bucket, key + MODEL_INDEX))
    return detect_family(base_model, model_index)


def _read_or_none(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as err:
        if error_code(err) in {"NoSuchKey", "404", "AccessDenied", "403"}:
            return None
        raise


def _sealed_listing(s3: Any, bucket: str, job_name: str, run_id: str) -> list[ListedObject]:
    key = s3_layout.sealed_listing_key(job_name, run_id)
    try:
        return parse_sealed_listing(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except Exception as err:
        if error_code(err) in {"NoSuchKey", "404"}:
            raise SealedListingMissing(
                f"run {run_id} of {job_name!r} has no sealed listing at {key}"
            ) from None
        raise


def _read_sealed(s3: Any, bucket: str, obj: ListedObject) -> bytes | None:
    """The object's bytes as sealed (same ETag), or None when it changed or went away since."""
    params = {"Bucket": bucket, "Key": obj.key}
    if obj.etag:
        params["IfMatch"] = obj.etag
    try:
        return s3.get_object(**params)["Body"].read()
    except Exception as err:
        if error_code(err) in {"PreconditionFailed", "412", "NoSuchKey", "404"}:
            return None
        raise
