"""S3's checks of a browser-based upload (POST with a policy), which moto does not make.

A presigned POST carries a base64 JSON policy: an expiration and conditions that every form field and the
file must meet (exact values, prefixes, a size range). S3 refuses an upload that breaks one, or that sends
a form field no condition covers, before storing anything. The signature is not checked here (moto checks
no signatures).

Reference: "Creating a POST policy" and "Browser-based uploads using POST" in the Amazon S3 API Reference.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# Form fields a policy does not have to cover.
EXEMPT_FIELDS = {"policy", "signature", "awsaccesskeyid", "x-amz-signature", "file"}
SMALLER_THAN_ALLOWED = "Your proposed upload is smaller than the minimum allowed size"


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str

    def xml(self) -> str:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>{_escape(self.message)}</Message></Error>"
        )


def check_post(fields: dict[str, str], bucket: str, size: int, now: datetime | None = None) -> Refusal | None:
    """None when S3 would store the upload; else what S3 answers. ``fields``: the form fields but the file."""
    values = {name.lower(): value for name, value in fields.items()} | {"bucket": bucket}
    try:
        policy = json.loads(base64.b64decode(values["policy"], validate=True))
        expiration = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
        conditions = policy["conditions"]
    except (KeyError, ValueError, TypeError, AttributeError):
        return _denied("Invalid Policy: Invalid JSON.")
    if (now or datetime.now(UTC)) >= expiration:
        return _denied("Invalid according to Policy: Policy expired.")
    covered = {"bucket"}
    for condition in conditions:
        if isinstance(condition, list) and condition and condition[0] == "content-length-range":
            _, smallest, largest = condition
            if size > int(largest):
                return Refusal(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
            if size < int(smallest):
                return Refusal(400, "EntityTooSmall", SMALLER_THAN_ALLOWED)
            continue
        operator, field, expected = _parts(condition)
        covered.add(field)
        actual = values.get(field)
        met = actual is not None and (actual == expected if operator == "eq" else actual.startswith(expected))
        if not met:
            return _denied(f"Invalid according to Policy: Policy Condition failed: {json.dumps(condition)}")
    extra = sorted(
        name
        for name in values
        if name not in covered and name not in EXEMPT_FIELDS and not name.startswith("x-ignore-")
    )
    if extra:
        return _denied(f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")
    return None


def _parts(condition: Any) -> tuple[str, str, str]:
    """{"field": value} or ["eq" | "starts-with", "$field", value] -> (operator, lower-case field, value)."""
    if isinstance(condition, dict) and len(condition) == 1:
        ((field, expected),) = condition.items()
        return "eq", field.lower(), str(expected)
    operator, field, expected = condition
    return operator, field.removeprefix("$").lower(), str(expected)


def _denied(message: str) -> Refusal:
    return Refusal(403, "AccessDenied", message)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
