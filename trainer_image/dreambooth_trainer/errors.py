"""Failures the job reports as such: each carries the exit code and a reason fit for FailureReason."""

from __future__ import annotations


class TrainerError(Exception):
    """A failure whose message is already readable by the person who started the job."""

    exit_code = 1


class TrainingDataError(TrainerError):
    """The channels do not hold what training needs (no images, only broken files, ...)."""

    exit_code = 2


class BaseModelError(TrainerError):
    """The base model cannot be found or read."""

    exit_code = 2


class CheckpointMismatchError(TrainerError):
    """A checkpoint to resume from was written by a job with different settings."""

    exit_code = 2


class TrainingStopped(TrainerError):
    """SIGTERM (StopTrainingJob, MaxRuntime, spot reclaim) arrived; state was saved when possible."""

    exit_code = 143


class SampleRenderingError(TrainerError):
    """The sample images could not be rendered after training: the job fails rather than ship without them."""

    exit_code = 1


class ModelUploadError(TrainerError):
    """The trained model could not be uploaded to model_output_s3_uri (the S3 error is named)."""

    exit_code = 1
