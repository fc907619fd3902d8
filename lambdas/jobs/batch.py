"""What a batch holds and whether it can be trained on, decided before any GPU is paid for. Pure.

The Lambda lists ``uploads/<job>/``, reads the first bytes of each candidate image and hands both
here; every problem is reported at once, each with the file it concerns, so one failure notification
tells the user everything to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from lambdas.jobs import s3_layout
from lambdas.jobs.image_headers import ImageHeader
from lambdas.jobs.spec import (
    JobDefaults,
    JobSpecError,
    ResolvedJob,
    parse_job_spec,
    resolve_job,
    training_hyperparameters,
)

CAPTION_SUFFIX = ".txt"
# The whole batch, rather than one file, is wrong.
BATCH = "(batch)"


@dataclass(frozen=True)
class ListedObject:
    key: str
    size: int


@dataclass(frozen=True)
class BatchContents:
    """The objects under one upload prefix, sorted into what validation treats differently."""

    job_name: str
    candidates: tuple[ListedObject, ...]
    captions: tuple[str, ...]
    spec: ListedObject | None
    ignored: tuple[str, ...]

    def relative(self, key: str) -> str:
        return key.removeprefix(s3_layout.upload_prefix(self.job_name))


def sort_batch(job_name: str, objects: list[ListedObject]) -> BatchContents:
    """Split a listing into candidate images, captions, job.json and clutter (nested folders included)."""
    candidates, captions, ignored = [], [], []
    spec = None
    for obj in sorted(objects, key=lambda o: o.key):
        uploaded = s3_layout.parse_upload_key(obj.key)
        if uploaded is None or uploaded.job_name != job_name:
            continue
        if uploaded.is_ignored:
            ignored.append(uploaded.relative_path)
        elif uploaded.is_job_spec:
            spec = obj
        elif PurePosixPath(uploaded.relative_path).suffix.lower() == CAPTION_SUFFIX:
            captions.append(uploaded.relative_path)
        else:
            candidates.append(obj)
    return BatchContents(job_name, tuple(candidates), tuple(captions), spec, tuple(ignored))


@dataclass(frozen=True)
class Problem:
    file: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "problem": self.problem}


@dataclass(frozen=True)
class BatchReport:
    problems: tuple[Problem, ...]
    images: tuple[str, ...]
    job: ResolvedJob | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def valid(self) -> bool:
        return not self.problems and self.job is not None


def check_sizes(contents: BatchContents, defaults: JobDefaults) -> tuple[list[ListedObject], list[Problem]]:
    """Size limits need no download: the candidates worth reading, and problems for the rest."""
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


def validate_batch(
    contents: BatchContents,
    *,
    size_problems: list[Problem],
    headers: Mapping[str, ImageHeader | str],
    spec_text: str | bytes | None,
    defaults: JobDefaults,
    model_output_s3_uri: str,
    bucket: str,
) -> BatchReport:
    """Judge the batch: ``headers`` maps each readable candidate's key to its header or an error text."""
    problems = list(size_problems)
    images = []
    for key, header in sorted(headers.items()):
        name = contents.relative(key)
        if isinstance(header, str):
            problems.append(Problem(name, header))
        elif min(header.width, header.height) < defaults.min_image_side:
            problems.append(
                Problem(
                    name,
                    f"{header.width}x{header.height} px is too small: "
                    f"both sides need at least {defaults.min_image_side} px",
                )
            )
        else:
            images.append(name)

    usable = len(images)
    if usable < defaults.min_images:
        where = s3_layout.upload_prefix(contents.job_name)
        problems.append(
            Problem(
                BATCH,
                f"{usable} usable image(s) under {where}; at least {defaults.min_images} are needed",
            )
        )
    elif usable > defaults.max_images:
        problems.append(
            Problem(BATCH, f"{usable} images; at most {defaults.max_images} are accepted per batch")
        )

    job = None
    try:
        spec = parse_job_spec(spec_text)
        job = resolve_job(contents.job_name, spec, defaults)
        training_hyperparameters(job, model_output_s3_uri=model_output_s3_uri, bucket=bucket)
        problems.extend(_base_model_problems(job.base_model, bucket))
    except JobSpecError as err:
        job = None
        problems.extend(Problem(s3_layout.JOB_SPEC_FILENAME, line) for line in str(err).splitlines())

    notes = []
    if contents.ignored:
        notes.append(f"ignored {len(contents.ignored)} non-photo file(s): {', '.join(contents.ignored[:5])}")
    return BatchReport(tuple(problems), tuple(images), job, tuple(notes))


def _base_model_problems(base_model: str, bucket: str) -> list[Problem]:
    if not base_model.startswith("s3://"):
        return []
    try:
        model_bucket, key = s3_layout.split_s3_uri(base_model)
    except ValueError as err:
        return [Problem(s3_layout.JOB_SPEC_FILENAME, f"base_model: {err}")]
    allowed = s3_layout.s3_uri(bucket, s3_layout.BASE_MODELS_ROOT)
    if model_bucket != bucket or not key.startswith(s3_layout.BASE_MODELS_ROOT):
        return [
            Problem(
                s3_layout.JOB_SPEC_FILENAME,
                f"base_model: training jobs can read base models only under {allowed}; "
                f"copy the model there and point base_model at it",
            )
        ]
    return []


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
