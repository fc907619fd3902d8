"""Idempotent creates: the same ``Idempotency-Key`` and body return the same job; another body is a 409."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from frontend_api.errors import ApiError

HEADER = "Idempotency-Key"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,128}$")
# How long a key is remembered (the table's TTL removes it after that).
RETENTION_SECONDS = 24 * 3600


def check_key(key: str) -> str:
    if not KEY_PATTERN.match(key):
        raise ApiError(
            "invalid_idempotency_key",
            f"{HEADER} must be 1-128 printable ASCII characters without spaces (a UUID is a good choice)",
        )
    return key


def fingerprint(body: Any) -> str:
    """Of the parsed body, so whitespace and key order do not make a retry look different."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def record_key(owner: str, key: str) -> str:
    """The table key of one caller's idempotency key (hashed: keys are caller-chosen text)."""
    return "IDEMP#" + hashlib.sha256(f"{owner}\n{key}".encode()).hexdigest()
