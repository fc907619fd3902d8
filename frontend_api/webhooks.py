"""Webhook delivery: a run's result, signed, POSTed to the job's webhook_url, retried with backoff.

Fed by an SQS queue subscribed to the notification topic (SNS -> SQS -> this Lambda): SQS redelivers
what a whole invocation could not deliver (and parks it in a dead-letter queue after a few tries),
while each invocation retries quickly on its own first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import urllib3

from frontend_api import http_client, signing
from frontend_api.url_safety import UnsafeUrl, check_url

EVENT = "job.ended"
BACKOFF_SECONDS = (1.0, 2.0, 4.0)
# Statuses worth retrying; any other 4xx means the receiver refuses this delivery for good.
RETRYABLE = frozenset({408, 409, 425, 429})


class DeliveryFailed(RuntimeError):
    """Retryable: the receiver did not take the delivery; SQS will offer it again."""


@dataclass(frozen=True)
class Delivery:
    url: str
    body: bytes


def delivery_body(job_id: str, result: dict) -> bytes:
    return json.dumps(
        {"event": EVENT, "job_id": job_id, "job_name": result.get("job_name"), "result": result},
        ensure_ascii=False,
        sort_keys=True,
    ).encode("utf-8")


def deliver(
    delivery: Delivery,
    secret: str,
    *,
    allow_local: bool = False,
    backoff: tuple[float, ...] = BACKOFF_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> int | None:
    """The receiver's status once it answers 2xx; None when it refuses for good (4xx, unsafe URL).

    Each attempt is signed afresh (a new timestamp), so a receiver's replay window never rejects a retry.
    """
    last = "no attempt"
    for attempt in range(len(backoff) + 1):
        if attempt:
            sleep(backoff[attempt - 1])
        try:
            checked = check_url(delivery.url, what="webhook_url", allow_local=allow_local)
        except UnsafeUrl:
            return None
        headers = signing.signed_headers(secret, int(clock()), delivery.body)
        try:
            response = http_client.request(
                checked, "POST", body=delivery.body, headers=headers, read_timeout=10
            )
        except urllib3.exceptions.HTTPError as err:
            last = type(err).__name__
            continue
        status = response.status
        response.drain_conn()
        response.release_conn()
        if 200 <= status < 300:
            return status
        if 400 <= status < 500 and status not in RETRYABLE:
            return None
        last = f"HTTP {status}"
    raise DeliveryFailed(
        f"{delivery.url} did not accept the delivery after {len(backoff) + 1} attempts ({last})"
    )
