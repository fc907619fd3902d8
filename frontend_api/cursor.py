"""Opaque list cursors: the position after the last job a page returned, base64url JSON, checked on read."""

from __future__ import annotations

import base64
import binascii
import json
import re

from frontend_api.errors import ApiError

# The list item sort key a cursor points after: ``JOB#<created ms, 13 digits>#<job id>``.
POSITION = re.compile(r"^JOB#\d{13}#job-[0-9a-f]{16}$")
_VERSION = 1


def encode(position: str) -> str:
    raw = json.dumps({"v": _VERSION, "after": position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> str:
    """The position, or ApiError ``invalid_cursor`` for anything this service did not hand out."""
    problem = ApiError(
        "invalid_cursor", "the cursor is not one this API returned: pass next_cursor unchanged"
    )
    if len(cursor) > 200 or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        raise problem
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise problem from None
    if not isinstance(data, dict) or data.get("v") != _VERSION or not isinstance(data.get("after"), str):
        raise problem
    if not POSITION.match(data["after"]):
        raise problem
    return data["after"]
