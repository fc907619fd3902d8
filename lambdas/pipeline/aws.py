"""boto3 clients, one per service and endpoint, reused across warm invocations."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from lambdas.pipeline.config import environ

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})
_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str | None], Any] = {}


def client(service: str) -> Any:
    """A client for this invocation's endpoint (AWS_ENDPOINT_URL when emulated) and region."""
    env = environ()
    endpoint = env.get("AWS_ENDPOINT_URL") or None
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    key = (service, endpoint, region)
    with _lock:  # creating clients from the default session is not thread-safe
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(
                service, endpoint_url=endpoint, region_name=region, config=_CONFIG
            )
        return _clients[key]


def error_code(err: Exception) -> str | None:
    response = getattr(err, "response", None) or {}
    return (response.get("Error") or {}).get("Code")
