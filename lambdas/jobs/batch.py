"""What a batch holds and whether it can be trained on, decided before any GPU is paid for. Pure.

The seal lists ``uploads/<job>/`` once (the sealed listing: key, ETag, size); validation judges exactly
those objects and nothing uploaded later. A file that cannot be used is skipped and named with its
reason, and the batch trains on the rest; it fails only when fewer than ``min_images`` usable photos
remain, when job.json itself is wrong or over a deployment limit, or, with ``strict_images``, when any
file was skipped. Every problem is reported at once, each with the file it concerns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from lambdas.jobs import limits as service_limits
from lambdas.jobs import s3_layout
from lambdas.jobs.base_models import resolve_base_model
from lambdas.jobs.families import family_problems
from lambdas.jobs.spec import (
    JobDefaults,
    JobSpec,
    JobSpecError,
    ResolvedJob,
    effective_resolution,
    parse_job_spec,
    resolve_job,
    training_hyperparameters,
)

CAPTION_SUFFIX = ".txt"
# The whole batch, rather than one file, is wrong.
BATCH = "(batch)"
# The longest file name a trainer's file system (ext4, xfs) can write.
MAX_FILE_NAME_BYTES = 255
# How much longer a key gets when copied from uploads/<job>/ to training-input/<job>/<run>/images/.
_RUN_ID_LENGTH = len("20260101-000000-abcd")
_TRAINING_KEY_GROWTH = (
    len(s3_layout.TRAINING_INPUT_ROOT) + _RUN_ID_LENGTH + 1 + len(s3_layout.TRAINING_IMAGES_FOLDER) + 1
) - len(s3_layout.UPLOADS_ROOT)


@dataclass(frozen=True)
class ListedObject:
    key: str
    size: int
    etag: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "etag": self.etag, "size": self.size}


@dataclass(frozen=True)
class Problem:
    file: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "problem": self.problem}


@dataclass(frozen=True)
class BatchContents:
    """The sealed objects under one upload prefix, sorted into what validation treats differently."""

    job_name: str
    candidates: tuple[ListedObject, ...]
    captions: tuple[ListedObject, ...]
    spec: ListedObject | None
    ignored: tuple[str, ...]
    refused: tuple[Problem, ...] = ()

    def relative(self, key: str) -> str:
        return key.removeprefix(s3_layout.upload_prefix(self.job_name))


def sealed_listing_json(objects: list[ListedObject]) -> str:
    """The sealed listing as stored at the seal: exactly the objects this run may train on."""
    return json.dumps({"objects": [o.as_dict() for o in objects]}, ensure_ascii=False)


def parse_sealed_listing(text: str | bytes) -> list[ListedObject]:
    return [
        ListedObject(o["key"], int(o["size"]), str(o.get("etag") or "")) for o in json.loads(text)["objects"]
    ]


def key_problem(relative_path: str) -> str | None:
    """Why a key cannot become a training file: unsafe folders, over-long names or keys."""
    unsafe = s3_layout.unsafe_path_problem(relative_path)
    if unsafe:
        return unsafe
    for segment in relative_path.split("/"):
        size = len(segment.encode("utf-8"))
        if size > MAX_FILE_NAME_BYTES:
            return (
                f"the name {segment[:40]!r}... is {size} bytes long; the trainer can write names of at "
                f"most {MAX_FILE_NAME_BYTES} bytes: rename it"
            )
    return None


def sort_batch(job_name: str, objects: list[ListedObject]) -> BatchContents:
    """Split a listing into candidate images, captions, job.json, clutter and refused keys."""
    candidates, captions, ignored, refused = [], [], [], []
    spec = None
    prefix_bytes = len(s3_layout.upload_prefix(job_name).encode("utf-8"))
    for obj in sorted(objects, key=lambda o: o.key):
        uploaded = s3_layout.parse_upload_key(obj.key)
        if uploaded is None or uploaded.job_name != job_name:
            continue
        relative = uploaded.relative_path
        if uploaded.is_ignored:
            ignored.append(relative)
            continue
        problem = key_problem(relative)
        if problem is None and len(obj.key.encode("utf-8")) + _TRAINING_KEY_GROWTH > s3_layout.MAX_KEY_BYTES:
            problem = (
                f"the key is {prefix_bytes + len(relative.encode())} bytes long, too long to copy into the "
                f"run's training input ({s3_layout.MAX_KEY_BYTES} bytes at most): shorten the name"
            )
        if problem:
            refused.append(Problem(relative, problem))
        elif uploaded.is_job_spec:
            spec = obj
        elif PurePosixPath(relative).suffix.lower() == CAPTION_SUFFIX:
            captions.append(obj)
        else:
            candidates.append(obj)
    return BatchContents(job_name, tuple(candidates), tuple(captions), spec, tuple(ignored), tuple(refused))


def check_sizes(contents: BatchContents, defaults: JobDefaults) -> tuple[list[ListedObject], list[Problem]]:
    """Size limits need no download: the candidates worth reading, and the skipped rest."""
    readable, problems = [], []
    for obj in contents.candidates:
        name = contents.relative(obj.key)
        if obj.size == 0:
            problems.append(Problem(name, "the file is empty (0 bytes): upload it again"))
        elif obj.size > defaults.max_image_bytes:
            problems.append(
                Problem(
                    name,
                    f"{_mib(obj.size)} is larger than the {_mib(defaults.max_image_bytes)} limit: "
                    "resize or re-encode it",
                )
            )
        else:
            readable.append(obj)
    return readable, problems


@dataclass(frozen=True)
class BatchReport:
    """``problems`` fail the batch; ``skipped`` files were left out of a batch that may still train."""

    problems: tuple[Problem, ...]
    images: tuple[str, ...]
    job: ResolvedJob | None = None
    notes: tuple[str, ...] = field(default=())
    skipped: tuple[Problem, ...] = ()
    ignored: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.problems and self.job is not None


def check_job_spec(
    job_name: str,
    spec: JobSpec,
    *,
    defaults: JobDefaults,
    limits: service_limits.ServiceLimits,
    bucket: str,
    model_output_s3_uri: str,
    family: str | None = None,
) -> tuple[ResolvedJob, list[str]]:
    """The job a spec asks for, and one line per deployment limit it exceeds or per thing its base model's
    family cannot train. The same check for job.json at validation and for the HTTP API's create;
    JobSpecError when the spec cannot be used. ``family``: the base model's, when the caller read its
    model_index.json (else detected from the base model's alias or name)."""
    if spec.base_model is not None:
        try:
            resolve_base_model(spec.base_model, bucket)
        except ValueError as err:
            raise JobSpecError(f"job.json: base_model: {err}") from None
    job = resolve_job(job_name, spec, defaults, family=family)
    hyperparameters = training_hyperparameters(job, model_output_s3_uri=model_output_s3_uri, bucket=bucket)
    over = service_limits.limit_problems(
        limits,
        instance_type=job.instance_type,
        max_runtime_seconds=job.max_runtime_seconds,
        max_train_steps=job.effective_max_train_steps,
        resolution=effective_resolution(job, hyperparameters),
    )
    over += family_problems(
        job.family,
        training_method=job.training_method,
        instance_type=job.instance_type,
        train_text_encoder=hyperparameters.train_text_encoder,
        allowed_instance_types=limits.instance_types,
    )
    return job, over


def validate_batch(
    contents: BatchContents,
    *,
    accepted: list[str],
    skipped: list[Problem],
    spec_text: str | bytes | None,
    defaults: JobDefaults,
    limits: service_limits.ServiceLimits,
    model_output_s3_uri: str,
    bucket: str,
    family: str | None = None,
) -> BatchReport:
    """Judge the batch from each file's verdict: ``accepted`` (relative names of usable photos) and
    ``skipped`` (unusable files with the reason, size checks included); refused keys are added here.
    ``family``: the base model's, when the caller read its model_index.json (else detected by name)."""
    skipped = sorted([*contents.refused, *skipped], key=lambda p: p.file)
    images = tuple(sorted(accepted))
    problems: list[Problem] = []

    job = None
    try:
        job, over = check_job_spec(
            contents.job_name,
            parse_job_spec(spec_text),
            defaults=defaults,
            limits=limits,
            bucket=bucket,
            model_output_s3_uri=model_output_s3_uri,
            family=family,
        )
        problems.extend(Problem(s3_layout.JOB_SPEC_FILENAME, f"job.json: {line}") for line in over)
    except JobSpecError as err:
        job = None
        problems.extend(Problem(s3_layout.JOB_SPEC_FILENAME, line) for line in str(err).splitlines())

    usable = len(images)
    where = s3_layout.upload_prefix(contents.job_name)
    if usable < defaults.min_images:
        problems.append(
            Problem(
                BATCH,
                f"{usable} usable image(s) under {where}; at least {defaults.min_images} are needed"
                + (f" ({len(skipped)} file(s) skipped, listed here)" if skipped else ""),
            )
        )
        problems.extend(skipped)
    elif job is not None and job.strict_images and skipped:
        problems.append(
            Problem(
                BATCH,
                f'{len(skipped)} file(s) under {where} cannot be used and job.json sets "strict_images": '
                "true; fix or remove them, or set it to false to train on the usable ones",
            )
        )
        problems.extend(skipped)
    else:
        too_many = service_limits.image_count_problem(limits, usable)
        if too_many:
            problems.append(Problem(BATCH, too_many))

    notes = []
    if skipped:
        notes.append(f"skipped {len(skipped)} unusable file(s): {', '.join(p.file for p in skipped[:5])}")
    if contents.ignored:
        notes.append(f"ignored {len(contents.ignored)} non-photo file(s): {', '.join(contents.ignored[:5])}")
    return BatchReport(tuple(problems), images, job, tuple(notes), tuple(skipped), contents.ignored)


def accepted_listing_json(contents: BatchContents, report: BatchReport, *, training_images_uri: str) -> str:
    """What the run trains on, exactly (key, ETag, size of each accepted photo and caption), and what was
    skipped or ignored: written next to the run's training input."""
    by_name = {contents.relative(o.key): o for o in (*contents.candidates, *contents.captions)}
    accepted = [by_name[name].as_dict() for name in report.images if name in by_name]
    captions = [o.as_dict() for o in contents.captions]
    return json.dumps(
        {
            "training_images": training_images_uri,
            "accepted": accepted,
            "captions": captions,
            "skipped": [p.as_dict() for p in report.skipped],
            "ignored": list(report.ignored),
        },
        ensure_ascii=False,
        indent=1,
    )


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
