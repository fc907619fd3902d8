"""Request and response bodies of the HTTP API (pydantic): the handlers' contract and openapi.yaml's source.

The create request *is* a :class:`~lambdas.jobs.spec.JobSpec` (same fields, same checks, unknown fields
rejected) plus what only the API needs: the job name, the images to upload or fetch, and a webhook.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lambdas.jobs import naming
from lambdas.jobs.spec import JobSpec

IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp")
ImageContentType = Literal["image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp"]
JobStatus = Literal[
    "awaiting_upload", "collecting", "validating", "training", "succeeded", "failed", "stopped", "cancelled"
]
JOB_STATUSES: tuple[str, ...] = JobStatus.__args__  # type: ignore[attr-defined]
# A hard ceiling in the document; the deployment's max_images is the real limit (checked by the handler).
MAX_IMAGES_IN_REQUEST = 1000
MAX_URL_LENGTH = 2048


def check_file_name(name: str) -> str:
    """One path segment under ``uploads/<job>/``: never a folder trick, never the commit marker."""
    if not name or name != name.strip():
        raise ValueError("an image file name must not be empty or start/end with spaces")
    if "/" in name or "\\" in name or name in {".", ".."}:
        raise ValueError(f"the image file name {name!r} is a path: give a plain file name like 'cat1.jpg'")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise ValueError(f"the image file name {name!r} contains control characters")
    if name.startswith("."):
        raise ValueError(f"the image file name {name!r} is hidden: the pipeline ignores such files")
    if name.lower() == "job.json" or name.lower().endswith(".json"):
        raise ValueError(f"{name!r} is not an image: the job spec goes in the request body")
    if len(name.encode("utf-8")) > 200:
        raise ValueError("an image file name must be under 200 bytes")
    return name


def check_job_name(name: str) -> str:
    naming.validate_job_name(name)
    if name != name.strip() or name in {".", ".."}:
        raise ValueError(f"the job name {name!r} must not be '.', '..' or start/end with spaces")
    return name


class ImageUpload(BaseModel):
    """One image the client will upload through its presigned target."""

    model_config = ConfigDict(extra="forbid")

    filename: Annotated[str, Field(min_length=1, max_length=200, examples=["cat1.jpg"])]
    content_type: ImageContentType

    @field_validator("filename")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        return check_file_name(value)


HttpsUrl = Annotated[str, Field(min_length=8, max_length=MAX_URL_LENGTH, pattern=r"^(https|http|s3)://\S+$")]


class CreateJobRequest(JobSpec):
    """POST /jobs: a job spec plus either ``images`` (upload targets come back) or ``images_url``."""

    job_name: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="The upload folder name; the server names the job when it is absent."
    )
    images: Annotated[list[ImageUpload], Field(min_length=1, max_length=MAX_IMAGES_IN_REQUEST)] | None = None
    images_url: (
        HttpsUrl | Annotated[list[HttpsUrl], Field(min_length=1, max_length=MAX_IMAGES_IN_REQUEST)] | None
    ) = Field(default=None, description="An https:// or s3:// zip of images, or a list of image URLs.")
    webhook_url: (
        Annotated[str, Field(min_length=9, max_length=MAX_URL_LENGTH, pattern=r"^https?://\S+$")] | None
    ) = Field(
        default=None,
        description="Receives the signed run result when the job ends (https only; never private addresses).",
    )

    @field_validator("job_name")
    @classmethod
    def _valid_job_name(cls, value: str | None) -> str | None:
        return None if value is None else check_job_name(value)

    @model_validator(mode="after")
    def _one_image_source(self) -> CreateJobRequest:
        if (self.images is None) == (self.images_url is None):
            raise ValueError("give exactly one of 'images' (upload targets are returned) or 'images_url'")
        if self.images is not None:
            names = [image.filename for image in self.images]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"duplicate image file names: {', '.join(duplicates)}")
        return self

    def job_spec(self) -> JobSpec:
        """The part that is the job spec, as the pipeline reads it from job.json."""
        fields = set(JobSpec.model_fields) & self.model_fields_set
        return JobSpec.model_validate(self.model_dump(include=fields))


class UploadTarget(BaseModel):
    """A presigned S3 POST: send ``fields`` plus the file (form field ``file``) to ``url``."""

    filename: str
    url: str
    fields: dict[str, str]
    expires_at: str


class FileLink(BaseModel):
    path: str
    url: str
    size: int | None = None


class ModelView(BaseModel):
    s3_prefix: str
    diffusers_folder: str | None = None
    checkpoint: str | None = None
    lora: str | None = None
    files: list[FileLink] = Field(default_factory=list)
    samples: list[FileLink] = Field(default_factory=list)


class FailureView(BaseModel):
    kind: str
    reason: str
    advice: list[str] = Field(default_factory=list)
    problems: list[dict[str, Any]] = Field(default_factory=list)


class Progress(BaseModel):
    """Training progress from the training job's metrics (the trainer's metric lines)."""

    secondary_status: str | None = None
    step: float | None = None
    loss: float | None = None
    steps_per_second: float | None = None
    max_train_steps: int | None = None


class Job(BaseModel):
    id: str
    job_name: str
    status: JobStatus
    stage: str
    created_at: str
    run_id: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    webhook_url: str | None = None
    progress: Progress | None = None
    model: ModelView | None = None
    failure: FailureView | None = None
    skipped: list[dict[str, Any]] = Field(default_factory=list)
    purged: bool = False


class JobCreated(Job):
    uploads: list[UploadTarget] = Field(default_factory=list)
    imported_images: int | None = None


class JobSummary(BaseModel):
    id: str
    job_name: str
    status: JobStatus
    created_at: str
    run_id: str | None = None


class JobList(BaseModel):
    jobs: list[JobSummary]
    next_cursor: str | None = None


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] | None = None
