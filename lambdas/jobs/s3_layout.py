"""The one place that spells the bucket's key layout.

Everything that reads or writes the bucket (Lambdas, the API, the infra's event rules, the local mode)
builds keys through these functions so the layout can never drift between them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote_plus

UPLOADS_ROOT = "uploads/"
MODELS_ROOT = "models/"
CLASS_IMAGES_ROOT = "class-images/"
CHECKPOINTS_ROOT = "checkpoints/"
# Base models a user uploads (a diffusers folder or one .safetensors file), referenced by s3:// URI.
BASE_MODELS_ROOT = "base-models/"
# One run's frozen input: the accepted photos (and their captions), copied from the very bytes validation
# decoded, and the lists of what was sealed and what was accepted. Expires (infra/storage.py).
TRAINING_INPUT_ROOT = "training-input/"
# SageMaker's own output (``<S3OutputPath>/<training job>/output/model.tar.gz``), kept apart from the model
# folders users download. Expires (infra/storage.py).
SAGEMAKER_OUTPUT_ROOT = "sagemaker-output/"

JOB_SPEC_FILENAME = "job.json"
SEALED_LISTING_FILENAME = "sealed.json"
ACCEPTED_LISTING_FILENAME = "batch.json"
TRAINING_IMAGES_FOLDER = "images"
# S3's limit on a key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
MANIFEST_FILENAME = "manifest.json"
# The trainer's training record next to the model: kind, family, steps, lora_files, samples.
TRAINING_RECORD_FILENAME = "dreambooth.json"
# Written by the trainer after every model file and the manifest: only then is a model complete.
SUCCESS_MARKER_FILENAME = "_SUCCESS"
SAMPLES_FOLDER = "samples"

# Files that desktop tools drop next to photos; never part of a batch.
IGNORED_UPLOAD_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


def upload_prefix(job_name: str) -> str:
    """Where a user drops the photos of one job: ``uploads/<job>/``."""
    _require_segment(job_name, "job name")
    return f"{UPLOADS_ROOT}{job_name}/"


def upload_folder_text(job_name: str) -> str:
    """``uploads/<job>/`` as the user typed it, even for a name :func:`upload_prefix` refuses.

    For messages only (a notification must name the folder a user has to rename); never a key to read.
    """
    return f"{UPLOADS_ROOT}{job_name}/"


def job_spec_key(job_name: str) -> str:
    """The optional ``job.json`` whose arrival commits a batch."""
    return upload_prefix(job_name) + JOB_SPEC_FILENAME


def model_prefix(job_name: str, run_id: str) -> str:
    """Where one run's trained model lands: ``models/<job>/<run>/``."""
    _require_segment(job_name, "job name")
    _require_segment(run_id, "run id")
    return f"{MODELS_ROOT}{job_name}/{run_id}/"


def samples_prefix(job_name: str, run_id: str) -> str:
    return model_prefix(job_name, run_id) + SAMPLES_FOLDER + "/"


def checkpoint_prefix(job_name: str, run_id: str) -> str:
    """Spot checkpoints of one run; a retried run resumes from here."""
    _require_segment(job_name, "job name")
    _require_segment(run_id, "run id")
    return f"{CHECKPOINTS_ROOT}{job_name}/{run_id}/"


def training_input_prefix(job_name: str, run_id: str) -> str:
    """One run's frozen input: ``training-input/<job>/<run>/``."""
    _require_segment(job_name, "job name")
    _require_segment(run_id, "run id")
    return f"{TRAINING_INPUT_ROOT}{job_name}/{run_id}/"


def training_images_prefix(job_name: str, run_id: str) -> str:
    """The accepted photos of one run, exactly as validated: the training job's 'images' channel."""
    return training_input_prefix(job_name, run_id) + TRAINING_IMAGES_FOLDER + "/"


def sealed_listing_key(job_name: str, run_id: str) -> str:
    """Every object under the upload folder when the batch was sealed (key, ETag, size)."""
    return training_input_prefix(job_name, run_id) + SEALED_LISTING_FILENAME


def accepted_listing_key(job_name: str, run_id: str) -> str:
    """What validation accepted (key, ETag, size), skipped (with the reason) and ignored."""
    return training_input_prefix(job_name, run_id) + ACCEPTED_LISTING_FILENAME


def sagemaker_output_prefix(job_name: str, run_id: str) -> str:
    """A run's S3OutputPath: SageMaker's model.tar.gz lands here, never inside the model folder."""
    _require_segment(job_name, "job name")
    _require_segment(run_id, "run id")
    return f"{SAGEMAKER_OUTPUT_ROOT}{job_name}/{run_id}/"


def sagemaker_model_tarball_key(job_name: str, run_id: str, training_job_name: str) -> str:
    """Where SageMaker puts a run's model.tar.gz: its S3OutputPath, the training job, ``output/``."""
    return f"{sagemaker_output_prefix(job_name, run_id)}{training_job_name}/output/model.tar.gz"


def class_images_prefix(class_prompt: str, base_model: str, resolution: int) -> str:
    """Class images are shared between jobs that would generate the same ones.

    The folder is named by a hash of what determines the images, so a second job with the same class
    prompt, base model and resolution reuses them instead of paying for generation again.
    """
    identity = f"{class_prompt.strip()}\n{base_model.strip()}\n{int(resolution)}".encode()
    return f"{CLASS_IMAGES_ROOT}{hashlib.sha256(identity).hexdigest()[:16]}/"


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); a clear error for anything else."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ValueError(f"not an s3:// URI: {uri!r}; expected s3://<bucket>/<key>")
    return bucket, key


@dataclass(frozen=True)
class UploadedObject:
    """An object under ``uploads/<job>/``, as named in an S3 event."""

    job_name: str
    relative_path: str

    @property
    def is_job_spec(self) -> bool:
        return self.relative_path == JOB_SPEC_FILENAME

    @property
    def is_ignored(self) -> bool:
        """Folder placeholders, hidden files and desktop clutter never count as images."""
        name = PurePosixPath(self.relative_path).name
        return (
            not self.relative_path
            or self.relative_path.endswith("/")
            or name.lower() in IGNORED_UPLOAD_NAMES
            or name.startswith(".")
        )


def decode_event_key(raw_key: str) -> str:
    """S3 notifications URL-encode keys (``+`` for a space, ``%2F`` even for slashes in some emulators)."""
    return unquote_plus(raw_key)


def parse_upload_key(key: str) -> UploadedObject | None:
    """Which job an (already decoded) key belongs to, or None when it is not under ``uploads/``.

    A key without a usable folder (``uploads//x.jpg``, ``uploads/x.jpg``) has the empty job name: it opens a
    run like any other, which fails with a notification saying where photos go, never a silent drop.
    """
    if not key.startswith(UPLOADS_ROOT):
        return None
    job_name, sep, relative = key[len(UPLOADS_ROOT) :].partition("/")
    if not sep:  # a file straight under uploads/: it belongs to no job; reported as the empty folder name
        return UploadedObject(job_name="", relative_path=job_name)
    return UploadedObject(job_name=job_name, relative_path=relative)


def unsafe_path_problem(relative_path: str) -> str | None:
    """Why a key's relative part cannot name a file (``..``/``.``/empty segments), or None when it can.

    S3 keys are plain text: ``uploads/x/../../y.jpg`` is a valid key. Such keys are data, never a path: the
    batch skips them instead of copying them anywhere a container would write them to disk.
    """
    segments = relative_path.split("/")
    if any(segment in {".", ".."} for segment in segments):
        return "the key holds a '.' or '..' folder, which no file system can hold: rename the file or folder"
    if any(not segment for segment in segments[:-1]) or relative_path.startswith("/"):
        return "the key holds an empty folder name ('//'): rename the file or folder"
    return None


def _require_segment(value: str, what: str) -> None:
    if not value or "/" in value or value in {".", ".."}:
        raise ValueError(f"invalid {what} {value!r}: it must be non-empty and contain no '/'")
