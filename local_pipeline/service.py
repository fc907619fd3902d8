"""The local service: the emulated deployment, with training jobs run by the real trainer on this machine.

``run`` and ``up`` both go through here. The first one to start writes ``local-output/service.json``;
a later ``run`` (or any command given ``--endpoint-url``) joins that service instead of starting its own,
so a second upload of the same batch meets the same dedup state, exactly as it would in AWS.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3
import requests
from botocore.config import Config

from dreambooth_trainer.hyperparameters import parse_hyperparameters
from lambdas.jobs import s3_layout
from local_aws.emulator import CREDENTIALS, LocalAws
from local_aws.node_runtime import node_major, node_support_problem
from local_aws.synth import DEFAULT_STACK_NAME, synthesize
from local_aws.training_jobs import TrainingJobRequest, TrainingOutcome
from local_pipeline.child_processes import ChildProcesses
from local_pipeline.progress import TrainingProgress, stage, warn
from local_pipeline.s3_folders import UnsafeKeyError, contained_path, download_prefix, upload_folder
from local_pipeline.training_runner import LocalTrainingRunner

OUTPUT_ROOT = Path("local-output")
LOG_ROOT = OUTPUT_ROOT / "logs"
STATE_FILE = OUTPUT_ROOT / "service.json"
WORK_ROOT = Path(".cache") / "local_pipeline" / "jobs"
REGION = "us-east-1"
# Locally a batch without job.json starts after 10 s of quiet instead of a minute.
LOCAL_CONTEXT = {"default_quiet_period_seconds": 10}
INBOX_PREFIX = "local-inbox-"
# How long a hosting command keeps the service up for clients that joined it and are still working.
JOINED_CLIENTS_GRACE_SECONDS = 120


class ServiceError(RuntimeError):
    """The local service cannot do what was asked; the message says what to do."""


@dataclass(frozen=True)
class ServiceEndpoint:
    """Where a running local service is, and the resources a client needs."""

    endpoint_url: str
    bucket: str
    topic_arn: str

    def client(self, service: str):
        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=CREDENTIALS["AWS_SESSION_TOKEN"],
            config=Config(retries={"max_attempts": 3}, read_timeout=120),
        )

    def upload_uri(self, job_name: str) -> str:
        return s3_layout.s3_uri(self.bucket, s3_layout.upload_prefix(job_name))


class EmbeddedService:
    """The emulated stack in this process; training jobs run the trainer as a subprocess."""

    def __init__(
        self, *, port: int | None = None, verbose: bool = False, context: dict | None = None
    ) -> None:
        self._port = port
        self._verbose = verbose
        self._context = {**LOCAL_CONTEXT, **(context or {})}
        self._aws: LocalAws | None = None
        self._processes = ChildProcesses()
        self.endpoint: ServiceEndpoint | None = None

    def __enter__(self) -> EmbeddedService:
        _check_node()
        stage("synthesizing the CDK stack (cdk-nag checks included)")
        template = synthesize(self._context)
        stage("starting emulated AWS (moto) with the stack's resources and the real Lambda handlers")
        self._aws = LocalAws(template, port=self._port).start()
        self._aws.set_training_runner(self._run_training_job)
        self.endpoint = ServiceEndpoint(self._aws.endpoint_url, self._aws.bucket, self._aws.topic_arn)
        OUTPUT_ROOT.mkdir(exist_ok=True)
        STATE_FILE.write_text(json.dumps({**asdict(self.endpoint), "pid": os.getpid()}, indent=2))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._aws is not None:
                self._wait_for_joined_clients()
        finally:
            self._close()

    def _close(self) -> None:
        self.stop_training_jobs()  # nothing this service started outlives it
        if STATE_FILE.exists() and json.loads(STATE_FILE.read_text()).get("pid") == os.getpid():
            STATE_FILE.unlink()
        if self._aws is not None:
            self._aws.stop()

    def stop_training_jobs(self) -> int:
        """Stop every running trainer (SIGTERM, then SIGKILL) and start no new one: each such job ends
        Stopped, so its run ends with a ``training_stopped`` notification. Returns how many were stopped."""
        return self._processes.stop_all()

    def _wait_for_joined_clients(self) -> None:
        """A `run` that joined this service may still be copying its model: let it finish first."""
        assert self._aws is not None
        sqs = self._aws.boto3_client("sqs")
        deadline = time.monotonic() + JOINED_CLIENTS_GRACE_SECONDS
        announced = False
        while time.monotonic() < deadline:
            inboxes = sqs.list_queues(QueueNamePrefix=INBOX_PREFIX).get("QueueUrls", [])
            if not inboxes:
                return
            if not announced:
                stage(f"waiting for {len(inboxes)} client(s) that joined this service to finish")
                announced = True
            time.sleep(0.5)

    def _run_training_job(self, job: TrainingJobRequest) -> TrainingOutcome:
        assert self._aws is not None
        steps = parse_hyperparameters(job.hyperparameters).max_train_steps
        stage(f"training job {job.name}: running the trainer through the SageMaker container contract")
        log_path = LOG_ROOT / f"training-{job.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as log:
            progress = TrainingProgress(steps, log=log, verbose=self._verbose)
            runner = LocalTrainingRunner(
                self._aws.boto3_client("s3"),
                work_root=WORK_ROOT,
                extra_env={
                    **self._aws.client_environment,
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                },
                on_output=progress,
                processes=self._processes,
            )
            try:
                outcome = runner(job)
            finally:
                progress.close()
        detail = (
            f" ({outcome.failure_reason}; the trainer's log: {log_path})" if outcome.failure_reason else ""
        )
        stage(f"training job {job.name}: {outcome.status}{detail}")
        return outcome


def _check_node() -> None:
    """A Node the CDK does not support is a warning to act on; end-of-life Node 20 only a note in the log."""
    problem = node_support_problem(node_major())
    if problem is None:
        return
    severity, message = problem
    if severity == "warning":
        warn(message)
    else:
        logging.getLogger(__name__).warning(message)


def running_service(endpoint_url: str | None = None) -> ServiceEndpoint | None:
    """A service already running: the one at ``endpoint_url``, or the one ``service.json`` names."""
    if endpoint_url:
        return _endpoint_at(endpoint_url)
    if not STATE_FILE.exists():
        return None
    state = json.loads(STATE_FILE.read_text())
    if not _answers(state["endpoint_url"]):
        STATE_FILE.unlink(missing_ok=True)  # left behind by a service that is gone
        return None
    return ServiceEndpoint(state["endpoint_url"], state["bucket"], state["topic_arn"])


def _answers(endpoint_url: str) -> bool:
    try:
        requests.get(endpoint_url, timeout=2)
    except requests.RequestException:
        return False
    return True


def _endpoint_at(endpoint_url: str) -> ServiceEndpoint:
    """Find the service's bucket and topic on an S3-compatible/moto endpoint by the stack's names."""
    if not _answers(endpoint_url):
        raise ServiceError(f"nothing answers at {endpoint_url}: start it with `python -m local_pipeline up`")
    probe = ServiceEndpoint(endpoint_url, "", "")
    prefix = DEFAULT_STACK_NAME.lower()
    buckets = [b["Name"] for b in probe.client("s3").list_buckets().get("Buckets", [])]
    data = [b for b in buckets if b.startswith(prefix) and "storagedata" in b.replace("-", "")]
    topics = [t["TopicArn"] for t in probe.client("sns").list_topics().get("Topics", [])]
    events = [t for t in topics if "JobEvents" in t]
    if len(data) != 1 or len(events) != 1:
        raise ServiceError(
            f"{endpoint_url} does not run this service's stack (found buckets {buckets}, topics {topics}); "
            "point --endpoint-url at a `python -m local_pipeline up` service"
        )
    return ServiceEndpoint(endpoint_url, data[0], events[0])


class NotificationInbox:
    """An SQS queue subscribed to the service's topic: notifications as a machine subscriber gets them."""

    def __init__(self, endpoint: ServiceEndpoint) -> None:
        self._sqs = endpoint.client("sqs")
        self.queue_url = self._sqs.create_queue(QueueName=f"{INBOX_PREFIX}{uuid.uuid4().hex[:12]}")[
            "QueueUrl"
        ]
        arn = self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]
        endpoint.client("sns").subscribe(
            TopicArn=endpoint.topic_arn, Protocol="sqs", Endpoint=arn["QueueArn"]
        )

    def receive(self, wait_seconds: float = 1.0) -> list[str]:
        """The ``Message`` strings delivered since the last call (SNS envelopes unwrapped), whatever
        they hold: a message is text, and a subscriber must survive one that is not JSON."""
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=int(wait_seconds)
        )
        messages = []
        for message in response.get("Messages", []):
            messages.append(_unwrap_sns_envelope(message["Body"]))
            self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return messages

    def wait_for_job(self, job_name: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.receive():
                notification = parse_notification(message)
                if notification is None:
                    warn(f"ignored a message on the topic that is not a JSON notification: {message[:200]!r}")
                elif notification.get("job_name") == job_name:
                    return message
        raise ServiceError(f"no notification for job {job_name!r} within {timeout:.0f} s")

    def close(self) -> None:
        self._sqs.delete_queue(QueueUrl=self.queue_url)


def _unwrap_sns_envelope(body: str) -> str:
    try:
        envelope = json.loads(body)
    except ValueError:
        return body  # raw message delivery
    if isinstance(envelope, dict) and isinstance(envelope.get("Message"), str):
        return envelope["Message"]
    return body


def parse_notification(message: str) -> dict[str, Any] | None:
    """The notification as a JSON object, or None when the message is anything else."""
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def submit_batch(endpoint: ServiceEndpoint, images: Path, job_name: str, job_spec: dict[str, Any]) -> int:
    """Upload the photos as a user would, then job.json, whose arrival commits the batch."""
    s3 = endpoint.client("s3")
    prefix = s3_layout.upload_prefix(job_name)
    files = sorted(p for p in images.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ServiceError(f"{images} holds no files: put the subject's photos (.jpg, .png, .webp) there")
    for path in files:
        s3.upload_file(str(path), endpoint.bucket, prefix + path.relative_to(images).as_posix())
    s3.put_object(
        Bucket=endpoint.bucket,
        Key=s3_layout.job_spec_key(job_name),
        Body=json.dumps(job_spec, sort_keys=True).encode(),
        ContentType="application/json",
    )
    return len(files)


def upload_base_model(endpoint: ServiceEndpoint, path: Path) -> str:
    """A local base model goes where a user would put theirs, ``base-models/<name>/``; returns its URI."""
    s3 = endpoint.client("s3")
    if path.is_file():
        key = f"{s3_layout.BASE_MODELS_ROOT}{path.stem}/{path.name}"
        s3.upload_file(str(path), endpoint.bucket, key)
        return s3_layout.s3_uri(endpoint.bucket, key.rsplit("/", 1)[0] + "/")
    if not (path / "model_index.json").is_file():
        raise ServiceError(
            f"{path} is neither a diffusers folder (model_index.json) nor a .safetensors/.ckpt file"
        )
    uri = s3_layout.s3_uri(endpoint.bucket, f"{s3_layout.BASE_MODELS_ROOT}{path.name}/")
    upload_folder(s3, path, uri)
    return uri


def copy_model_out(endpoint: ServiceEndpoint, notification: dict[str, Any], root: Path) -> Path | None:
    """The trained model's files into ``root/<job name>`` (the notification names where they are).

    A job name or key that would write outside ``root`` is refused and reported, never followed.
    """
    model = notification.get("model") or {}
    if not model.get("s3_prefix"):
        return None
    try:
        target = contained_path(root, str(notification.get("job_name") or "job"))
    except UnsafeKeyError as err:
        warn(f"the model is not copied out: job name {err}")
        return None
    download = download_prefix(endpoint.client("s3"), model["s3_prefix"], target)
    for line in download.describe_refused():
        warn(line)
    return target
