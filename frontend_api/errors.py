"""The API's error model: ``{"code", "message"}`` with a stable code per problem and its HTTP status."""

from __future__ import annotations

from typing import Any

# code -> HTTP status. Codes are part of the API contract: add new ones, never rename one.
CODES: dict[str, int] = {
    "malformed_json": 400,
    "invalid_body": 400,
    "validation_failed": 422,
    "body_too_large": 413,
    "too_many_images": 413,
    "invalid_job_id": 400,
    "invalid_job_name": 400,
    "invalid_image_name": 400,
    "invalid_cursor": 400,
    "invalid_query": 400,
    "invalid_idempotency_key": 400,
    "unsafe_url": 422,
    "images_url_unreachable": 422,
    "images_url_too_large": 413,
    "unsafe_archive": 422,
    "archive_too_many_files": 413,
    "no_images": 422,
    "limit_exceeded": 422,
    "job_not_found": 404,
    "route_not_found": 404,
    "method_not_allowed": 405,
    "job_name_taken": 409,
    "idempotency_key_reused": 409,
    "idempotency_in_progress": 409,
    "job_already_started": 409,
    "job_not_running": 409,
    "internal_error": 500,
    # Answered by API Gateway itself (infra/api.py maps its responses to this shape).
    "unauthorized": 401,
    "forbidden": 403,
    "throttled": 429,
    "bad_request": 400,
}


class ApiError(Exception):
    """A problem the caller can act on; ``message`` says what is wrong and what to do."""

    def __init__(self, code: str, message: str, *, details: list[dict[str, str]] | None = None) -> None:
        if code not in CODES:  # pragma: no cover - a programming error
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    @property
    def status(self) -> int:
        return CODES[self.code]

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body
