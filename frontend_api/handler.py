"""API Gateway (REST, proxy integration) -> :class:`frontend_api.jobs.JobService`. Thin: HTTP only.

Every error leaves as ``{"code", "message"}`` with its status; anything unexpected is logged with its
trace and answered ``internal_error`` without one.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from frontend_api.errors import ApiError
from frontend_api.idempotency import HEADER as IDEMPOTENCY_HEADER
from frontend_api.jobs import JobService
from frontend_api.settings import ApiSettings

logger = Logger(service="dreambooth-api")
app = APIGatewayRestResolver()


def _json(status: int, body: BaseModel | dict[str, Any]) -> Response:
    payload = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(payload, ensure_ascii=False),
        headers={"Cache-Control": "no-store"},
    )


def _service() -> tuple[JobService, str]:
    settings = ApiSettings.from_environment()
    return JobService(settings), caller(app.current_event.raw_event, settings.auth_mode)


def caller(event: dict[str, Any], auth_mode: str) -> str:
    """Whose jobs: a Cognito user sees their own; IAM callers share the account's jobs."""
    context = event.get("requestContext") or {}
    if auth_mode == "cognito":
        claims = (context.get("authorizer") or {}).get("claims") or {}
        subject = claims.get("sub")
        if not subject:
            raise ApiError(
                "job_not_found", "no caller identity in the request"
            )  # the authorizer prevents this
        return f"user:{subject}"
    if auth_mode == "none":
        return "local"
    return "account"


@app.post("/jobs")
def create_job() -> Response:
    service, owner = _service()
    headers = {k.lower(): v for k, v in (app.current_event.headers or {}).items()}
    body = app.current_event.body
    if body is not None and app.current_event.is_base64_encoded:
        try:
            body = base64.b64decode(body).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise ApiError("malformed_json", "the body is not UTF-8 encoded JSON") from None
    status, created = service.create(
        body, owner=owner, idempotency_key=headers.get(IDEMPOTENCY_HEADER.lower())
    )
    return _json(status, created)


@app.get("/jobs")
def list_jobs() -> Response:
    service, owner = _service()
    query = app.current_event.query_string_parameters or {}
    unknown = sorted(set(query) - {"status", "limit", "cursor"})
    if unknown:
        raise ApiError("invalid_query", f"unknown query parameter(s): {', '.join(unknown)}")
    listed = service.list(
        owner=owner, status=query.get("status"), limit=query.get("limit"), cursor_text=query.get("cursor")
    )
    return _json(200, listed)


@app.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    service, owner = _service()
    return _json(200, service.get(job_id, owner=owner))


@app.post("/jobs/<job_id>/start")
def start_job(job_id: str) -> Response:
    service, owner = _service()
    return _json(202, service.start(job_id, owner=owner))


@app.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> Response:
    service, owner = _service()
    purge = (app.current_event.query_string_parameters or {}).get("purge", "false")
    if purge not in {"true", "false"}:
        raise ApiError("invalid_query", "purge must be true or false")
    return _json(200, service.stop(job_id, owner=owner, purge=purge == "true"))


@app.exception_handler(ApiError)
def _api_error(err: ApiError) -> Response:
    logger.info("request refused", extra={"code": err.code, "detail": err.message})
    return _json(err.status, err.body())


@app.not_found
def _not_found(_: Exception) -> Response:
    return _json(404, ApiError("route_not_found", "no such route; see openapi.yaml for the API").body())


@app.exception_handler(Exception)
def _unexpected(err: Exception) -> Response:
    logger.exception("unhandled error")
    return _json(
        500, ApiError("internal_error", "the service failed to handle this request; try again").body()
    )


@logger.inject_lambda_context
def handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
