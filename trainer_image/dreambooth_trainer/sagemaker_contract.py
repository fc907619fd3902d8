"""The SageMaker training-container contract: where things are, how failure is reported, how a stop arrives.

Stdlib only. The root is `/opt/ml`, moved with SAGEMAKER_BASE_DIR so tests and the local mode run the same
code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_DIR = "/opt/ml"
FAILURE_REASON_LIMIT = 1024


@dataclass(frozen=True)
class SageMakerPaths:
    """The contract's folders under one root."""

    base: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SageMakerPaths:
        env = os.environ if env is None else env
        return cls(Path(env.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE_DIR))

    @property
    def hyperparameters_file(self) -> Path:
        return self.base / "input" / "config" / "hyperparameters.json"

    @property
    def data_dir(self) -> Path:
        return self.base / "input" / "data"

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoints_dir(self) -> Path:
        return self.base / "checkpoints"

    def channel(self, name: str) -> Path:
        return self.data_dir / name

    def resolve(self, path: str) -> Path:
        """Map a path a caller wrote for the real container (/opt/ml/...) onto this root."""
        candidate = Path(path)
        try:
            relative = candidate.relative_to(DEFAULT_BASE_DIR)
        except ValueError:
            return candidate
        return self.base / relative


def read_hyperparameters(paths: SageMakerPaths) -> dict[str, str]:
    """The raw string map; a job started without hyperparameters gets an empty one."""
    if not paths.hyperparameters_file.exists():
        return {}
    data = json.loads(paths.hyperparameters_file.read_text(encoding="utf-8") or "{}")
    if not isinstance(data, dict):
        raise ValueError(f"{paths.hyperparameters_file} must hold a JSON object, not {type(data).__name__}")
    return data


def job_name(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("TRAINING_JOB_NAME") or "local-training-job"


def write_failure(paths: SageMakerPaths, reason: str) -> None:
    """SageMaker shows the first 1024 characters as FailureReason; keep it short and first things first."""
    reason = " ".join(reason.split()) or "training failed"
    if len(reason) > FAILURE_REASON_LIMIT:
        reason = reason[: FAILURE_REASON_LIMIT - 3] + "..."
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    paths.failure_file.write_text(reason, encoding="utf-8")


def clear_failure(paths: SageMakerPaths) -> None:
    """A re-run in the same local root must not inherit an old failure."""
    with contextlib.suppress(FileNotFoundError):
        paths.failure_file.unlink()


class StopRequested(BaseException):
    """Raised by the SIGTERM handler outside the training loop (loading, generating class images)."""


class StopSignal:
    """SIGTERM bookkeeping: the loop polls `requested` at step boundaries; elsewhere the signal interrupts.

    The container runs as PID 1, which only gets SIGTERM if a handler is installed; SageMaker sends SIGKILL
    120 s later, so the loop must notice within one step and save.
    """

    def __init__(self) -> None:
        self.requested = False
        self.requested_at = 0.0  # time.monotonic() when the signal arrived
        self.signal_name = ""
        self.phase = "starting"  # what the job is doing, for the failure reason
        self._deferred = 0
        self._previous: dict[int, object] = {}

    def seconds_since_request(self) -> float:
        return time.monotonic() - self.requested_at if self.requested else 0.0

    def _handle(self, signum: int, _frame: object) -> None:
        if not self.requested:
            self.requested_at = time.monotonic()
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if not self._deferred:
            raise StopRequested(self.signal_name)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Inside, a signal only sets `requested`: the loop decides at the next step boundary whether a
        checkpoint save fits SageMaker's window."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1

    @contextlib.contextmanager
    def installed(self, signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[StopSignal]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals can only be handled on the main thread; callers there still get the flag API
            return
        for signum in signums:
            self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)  # type: ignore[arg-type]
            self._previous.clear()
