"""The emulated stack with the API functions routed as `serve` routes them, and a held trainer."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from dataclasses import dataclass
from typing import Any

from frontend_api import settings as api_settings
from local_aws import FAST_CONTEXT, LocalAws, TrainingJobRequest, TrainingOutcome, synthesize
from local_pipeline.serve_gateway import LocalGateway, ensure_webhook_secret, prepare_local_functions
from tests.pipeline.support import fake_trainer, jpeg

# Uploads through presigned targets start on POST /start; the quiet period (20 s) is only a fallback.
API_CONTEXT = {**FAST_CONTEXT, "default_quiet_period_seconds": 20, "limit_max_images": 20}
IMPORTS_BUCKET = "customer-photos"


def start_api_emulator() -> LocalAws:
    aws = LocalAws(synthesize(API_CONTEXT)).start()
    aws.boto3_client("s3").create_bucket(Bucket=IMPORTS_BUCKET)
    return aws


@dataclass
class Api:
    aws: LocalAws
    gateway: LocalGateway
    secret: str
    environment: dict[str, str]

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict]:
        raw = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        data = raw.encode() if isinstance(raw, str) else (raw or b"")
        status, _, out = self.gateway.handle(
            method, path, {"Content-Type": "application/json", **(headers or {})}, data
        )
        return status, json.loads(out)


def api_over(aws: LocalAws, *, validate_bodies: bool = True) -> Api:
    """The API over the emulator, behind the local gateway (validate_bodies=False: without the gateway's
    request validator, so every body reaches the function, whose own checks the handler tests drive)."""
    environment = prepare_local_functions(
        aws.boto3_client("lambda"), aws.client_environment, {api_settings.IMPORT_BUCKETS: IMPORTS_BUCKET}
    )
    secret = ensure_webhook_secret(
        aws.boto3_client("secretsmanager"), environment[api_settings.WEBHOOK_SECRET_ID]
    )
    return Api(
        aws,
        LocalGateway(
            aws.boto3_client("lambda"), environment["API_FUNCTION_NAME"], validate_bodies=validate_bodies
        ),
        secret,
        environment,
    )


class HeldTrainer:
    """Training jobs stay InProgress until released; then they write a model as the trainer would."""

    def __init__(self, aws: LocalAws) -> None:
        self._finish = fake_trainer(aws)
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, job: TrainingJobRequest) -> TrainingOutcome:
        self.started.set()
        self.release.wait(timeout=120)
        return self._finish(job)


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def photos_zip(count: int = 3) -> bytes:
    return zip_of({f"photos/{i}.jpg": jpeg(i) for i in range(count)})


__all__ = ["Api", "HeldTrainer", "api_over", "jpeg", "photos_zip", "start_api_emulator", "zip_of"]
