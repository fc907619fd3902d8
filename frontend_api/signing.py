"""Webhook signatures: HMAC-SHA256 over ``<timestamp>.<body>`` with the deployment's secret.

A receiver recomputes the HMAC from the ``X-DreamBooth-Timestamp`` header and the raw body, compares
it in constant time with ``X-DreamBooth-Signature`` (``v1=<hex>``), and rejects timestamps outside a
few minutes of its clock, so a captured delivery cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-DreamBooth-Timestamp"
SIGNATURE_HEADER = "X-DreamBooth-Signature"
SIGNATURE_VERSION = "v1"
REPLAY_WINDOW_SECONDS = 300


class SignatureError(ValueError):
    """A delivery that must not be trusted."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def signed_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify(
    secret: str, headers: dict[str, str], body: bytes, *, now: float, window: int = REPLAY_WINDOW_SECONDS
) -> None:
    """What a receiver does; raises :class:`SignatureError` for a forged, altered or replayed delivery."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    given = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not raw_timestamp.isdigit():
        raise SignatureError(f"missing or malformed {TIMESTAMP_HEADER}")
    timestamp = int(raw_timestamp)
    if abs(now - timestamp) > window:
        raise SignatureError(
            f"timestamp {timestamp} is outside the {window} s window: a replay or a bad clock"
        )
    if not hmac.compare_digest(given, signature(secret, timestamp, body)):
        raise SignatureError("signature does not match the body")
