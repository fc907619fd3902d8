"""Names for jobs, runs and SageMaker training jobs.

A job's identity is its upload folder name, exactly as the user typed it (spaces, unicode and all).
SageMaker needs ``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$`` and uniqueness per account and region, so the
training job name is derived: a readable ASCII slug, a short hash when the slug lost information (so
"My Cat" and "my_cat" never collide), and the run id, which is unique per run of a job.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from datetime import UTC, datetime

TRAINING_JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
TRAINING_JOB_NAME_MAX = 63
RUN_ID_PATTERN = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")
_HASH_LENGTH = 6


def slugify(raw: str) -> str:
    """ASCII, lower case, single dashes: what survives of a name in every AWS naming rule."""
    ascii_text = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug


def name_hash(raw: str, length: int = _HASH_LENGTH) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:length]


def job_slug(job_name: str, max_length: int = 40) -> str:
    """A readable, collision-free slug of a job name.

    The slug alone when it *is* the name; otherwise slug + hash of the original, so two different
    names never share a slug. Truncated names always carry the hash for the same reason.
    """
    slug = slugify(job_name)
    if slug and slug == job_name and len(slug) <= max_length:
        return slug
    digest = name_hash(job_name)
    head = slug[: max_length - len(digest) - 1].strip("-") if slug else "job"
    return f"{head}-{digest}"


def new_run_id(now: datetime | None = None, token: str | None = None) -> str:
    """``YYYYMMDD-HHMMSS-xxxx``: sorts by time, and the random tail keeps two runs in one second apart."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    tail = token if token is not None else secrets.token_hex(2)
    run_id = f"{moment:%Y%m%d-%H%M%S}-{tail}"
    if not RUN_ID_PATTERN.match(run_id):
        raise ValueError(f"invalid run id {run_id!r}: token must be 4 lowercase hex digits")
    return run_id


def training_job_name(job_name: str, run_id: str) -> str:
    """The SageMaker training job name of one run: deterministic, so a retried create names the same job."""
    if not RUN_ID_PATTERN.match(run_id):
        raise ValueError(f"invalid run id {run_id!r}: expected YYYYMMDD-HHMMSS-xxxx")
    budget = TRAINING_JOB_NAME_MAX - len(run_id) - 1
    name = f"{job_slug(job_name, max_length=budget)}-{run_id}"
    if not TRAINING_JOB_NAME_PATTERN.match(name):  # pragma: no cover - guarded by construction
        raise AssertionError(f"derived an invalid training job name {name!r}")
    return name


MAX_JOB_NAME_BYTES = 200
_RENAME = "upload the photos again under a folder with a plain name, e.g. uploads/my-dog/"


def validate_job_name(job_name: str) -> str:
    """Job names are S3 folder names: anything but empty, '.', '..', '/', control characters or very long.

    The message says what to rename: it reaches the user in the run's failure notification.
    """
    shown = _shown(job_name)
    if not job_name or not job_name.strip():
        raise ValueError(
            f"the upload folder name {shown} is empty or blank (photos must sit in a folder named after the "
            f"job, one level under uploads/): {_RENAME}"
        )
    if job_name in {".", ".."}:
        raise ValueError(f"the upload folder name {shown} is not a folder name: {_RENAME}")
    if "/" in job_name:
        raise ValueError(f"the job name {shown} contains '/': use one folder level under uploads/")
    if any(unicodedata.category(ch) == "Cc" for ch in job_name):
        raise ValueError(f"the upload folder name {shown} contains control characters: {_RENAME}")
    size = len(job_name.encode("utf-8"))
    if size > MAX_JOB_NAME_BYTES:
        raise ValueError(
            f"the upload folder name {shown} is {size} bytes long, over the {MAX_JOB_NAME_BYTES}-byte limit "
            f"(models are stored under models/<folder name>/): {_RENAME}"
        )
    return job_name


def _shown(job_name: str) -> str:
    text = ascii(job_name) if any(unicodedata.category(ch) == "Cc" for ch in job_name) else repr(job_name)
    return text if len(text) <= 60 else text[:57] + "..."
