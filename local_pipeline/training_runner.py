"""Runs a CreateTrainingJob request on this machine, the way SageMaker runs a BYOC container.

SageMaker's side of the container contract, and nothing more: channels copied from S3 into
``<base>/input/data/<channel>/``, ``hyperparameters.json`` (every value a string), the input and
resource configs, the checkpoint folder restored from and synced back to S3, ``TRAINING_JOB_NAME`` and
the request's Environment map, then the trainer's own entry point as a subprocess. Its exit status and
``<base>/output/failure`` become the job's status and FailureReason; a non-empty ``<base>/model`` is
tarred to ``<S3OutputPath>/<job>/output/model.tar.gz`` as SageMaker would. A request with
EnableNetworkIsolation runs the trainer without AWS credentials or endpoint, as an isolated container
has none: any S3 call it made would fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lambdas.jobs.s3_layout import split_s3_uri
from local_aws.training_jobs import TrainingJobRequest, TrainingOutcome
from local_pipeline.child_processes import ChildProcesses
from local_pipeline.s3_folders import Download, contained_path, download_prefix, upload_folder

DEFAULT_TRAINER_COMMAND = (sys.executable, "-m", "dreambooth_trainer", "train")
FAILURE_REASON_LIMIT = 1024
RUNNER_TAG = "local runner: "  # what the runner itself reports in the job's output
# What an isolated container lacks: credentials, and the emulator's endpoint and profile settings.
ISOLATED_AWAY = ("AWS_ACCESS_KEY", "AWS_SECRET", "AWS_SESSION", "AWS_SECURITY", "AWS_ENDPOINT", "AWS_PROFILE")
STOPPED_REASON = "the local service was stopped (Ctrl-C or SIGTERM) while the job ran"


class LocalTrainingRunner:
    """Callable that runs one training job request; plug it into the local AWS emulator."""

    def __init__(
        self,
        s3_client,
        *,
        work_root: Path,
        trainer_command: Sequence[str] = DEFAULT_TRAINER_COMMAND,
        extra_env: dict[str, str] | None = None,
        on_output: Callable[[str], None] | None = None,
        processes: ChildProcesses | None = None,
    ) -> None:
        self._s3 = s3_client
        self._work_root = Path(work_root)
        self._command = list(trainer_command)
        self._extra_env = dict(extra_env or {})
        self._on_output = on_output or (lambda line: print(line, end="", flush=True))
        self._processes = processes or ChildProcesses()

    def __call__(self, job: TrainingJobRequest) -> TrainingOutcome:
        request = job.request
        job_name = job.name
        self._work_root.mkdir(parents=True, exist_ok=True)
        base = Path(tempfile.mkdtemp(prefix=f"{job_name}-", dir=self._work_root))
        started = time.monotonic()
        try:
            self._lay_out_container(base, request)
            exit_code = self._run_trainer(base, request)
        except Exception as err:  # the emulator's own failure must still end the job honestly
            if self._processes.stopping:
                return TrainingOutcome("Stopped", STOPPED_REASON)
            return TrainingOutcome("Failed", f"local runner: {err}"[:FAILURE_REASON_LIMIT])
        seconds = int(time.monotonic() - started)
        self._sync_checkpoints_up(base, request)
        if exit_code != 0 and self._processes.stopping:  # as StopTrainingJob: SIGTERM, checkpoints kept
            return TrainingOutcome("Stopped", STOPPED_REASON, seconds, seconds)
        failure = base / "output" / "failure"
        if exit_code != 0:
            reason = failure.read_text(errors="replace").strip() if failure.exists() else ""
            reason = reason or f"the trainer exited with status {exit_code} and wrote no failure reason"
            return TrainingOutcome("Failed", reason[:FAILURE_REASON_LIMIT], seconds, seconds)
        self._upload_model_tarball(base, request)
        return TrainingOutcome("Completed", None, seconds, seconds)

    def _lay_out_container(self, base: Path, request: dict) -> None:
        config = base / "input" / "config"
        config.mkdir(parents=True)
        (base / "model").mkdir()
        (base / "output").mkdir()
        hyperparameters = {key: str(value) for key, value in request.get("HyperParameters", {}).items()}
        (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
        channels = request.get("InputDataConfig", [])
        (config / "inputdataconfig.json").write_text(
            json.dumps({c["ChannelName"]: {"TrainingInputMode": "File"} for c in channels})
        )
        instance_type = request.get("ResourceConfig", {}).get("InstanceType", "local")
        (config / "resourceconfig.json").write_text(
            json.dumps(
                {"current_host": "algo-1", "hosts": ["algo-1"], "current_instance_type": instance_type}
            )
        )
        for channel in channels:
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
            folder = contained_path(base / "input" / "data", channel["ChannelName"])
            self._report_refused(download_prefix(self._s3, uri, folder))
        checkpoint = request.get("CheckpointConfig")
        if checkpoint:
            self._report_refused(download_prefix(self._s3, checkpoint["S3Uri"], self._checkpoint_dir(base)))

    def _report_refused(self, download: Download) -> None:
        for line in download.describe_refused():
            self._on_output(f"{RUNNER_TAG}{line}\n")

    def _run_trainer(self, base: Path, request: dict) -> int:
        env = {
            **os.environ,
            **request.get("Environment", {}),
            **self._extra_env,
            "SAGEMAKER_BASE_DIR": str(base),
            "TRAINING_JOB_NAME": request["TrainingJobName"],
            "PYTHONUNBUFFERED": "1",
        }
        if request.get("EnableNetworkIsolation"):
            env = {key: value for key, value in env.items() if not key.startswith(ISOLATED_AWAY)}
            # nor credentials from files or an instance role
            env |= {"AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull}
            env["AWS_EC2_METADATA_DISABLED"] = "true"
        process = self._processes.popen(
            self._command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                self._on_output(line)
            return process.wait()
        finally:
            self._processes.release(process)

    def _checkpoint_dir(self, base: Path) -> Path:
        return base / "checkpoints"

    def _sync_checkpoints_up(self, base: Path, request: dict) -> None:
        checkpoint = request.get("CheckpointConfig")
        local = self._checkpoint_dir(base)
        if checkpoint and local.is_dir():
            upload_folder(self._s3, local, checkpoint["S3Uri"])

    def _upload_model_tarball(self, base: Path, request: dict) -> None:
        model_dir = base / "model"
        output_path = request.get("OutputDataConfig", {}).get("S3OutputPath")
        if not output_path or not any(model_dir.iterdir()):
            return
        tarball = base / "model.tar.gz"
        with tarfile.open(tarball, "w:gz") as archive:
            for item in sorted(model_dir.iterdir()):
                archive.add(item, arcname=item.name)
        bucket, prefix = split_s3_uri(output_path.rstrip("/") + "/")
        key = f"{prefix}{request['TrainingJobName']}/output/model.tar.gz"
        self._s3.upload_file(str(tarball), bucket, key)
