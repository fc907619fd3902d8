"""What a local training runner is handed and what it answers.

The emulator calls a runner (in a thread of its own) for every CreateTrainingJob the state machine
makes; the runner does the work (tests: nothing; the local mode: run the trainer) and returns how the
job ended, which becomes the job's status for ``createTrainingJob.sync``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

TrainingStatus = Literal["Completed", "Failed", "Stopped"]


@dataclass(frozen=True)
class TrainingJobRequest:
    """A CreateTrainingJob request exactly as the state machine sent it (PascalCase fields)."""

    request: dict[str, Any]

    @property
    def name(self) -> str:
        return self.request["TrainingJobName"]

    @property
    def hyperparameters(self) -> dict[str, str]:
        return dict(self.request.get("HyperParameters") or {})

    @property
    def channels(self) -> dict[str, str]:
        """Channel name -> S3 URI."""
        return {
            channel["ChannelName"]: channel["DataSource"]["S3DataSource"]["S3Uri"]
            for channel in self.request.get("InputDataConfig") or []
        }

    @property
    def model_output_s3_uri(self) -> str | None:
        return self.hyperparameters.get("model_output_s3_uri")

    @property
    def output_s3_path(self) -> str:
        return self.request["OutputDataConfig"]["S3OutputPath"]

    @property
    def checkpoint_s3_uri(self) -> str | None:
        return (self.request.get("CheckpointConfig") or {}).get("S3Uri")

    @property
    def image(self) -> str:
        return self.request["AlgorithmSpecification"]["TrainingImage"]

    @property
    def environment(self) -> dict[str, str]:
        return dict(self.request.get("Environment") or {})


@dataclass(frozen=True)
class TrainingOutcome:
    status: TrainingStatus = "Completed"
    failure_reason: str | None = None
    training_seconds: int | None = None
    billable_seconds: int | None = None


TrainingRunner = Callable[[TrainingJobRequest], TrainingOutcome]
