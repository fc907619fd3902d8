"""API Gateway's part, locally: HTTP requests become REST proxy events for the API function in the emulator.

The API Lambda and the webhook Lambda run as the synthesized stack defines them (same handler, same
environment), re-routed with the local overrides: no auth (nothing to sign requests with locally), and
http:// or loopback URLs allowed so a receiver or a zip server on this machine can be used.

The gateway's request validator runs here too: a create body that is not JSON or breaks the schema the
stack gives the gateway (`frontend_api.openapi.gateway_schema`) never reaches the function and gets the
stack's BAD_REQUEST_BODY response, 422 `validation_failed`. Its message is this validator's wording, not
API Gateway's.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from jsonschema import Draft4Validator

from frontend_api import settings as api_settings
from frontend_api.openapi import gateway_schema
from local_aws import moto_shims

API_HANDLER = "frontend_api.handler.handler"
WEBHOOK_HANDLER = "frontend_api.webhook_handler.handler"
LOCAL_OVERRIDES = {api_settings.AUTH_MODE: "none", api_settings.ALLOW_LOCAL_URLS: "1"}
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
# The gateway's resources (infra/api.py); a path that matches none still reaches the function, as a
# {proxy+} would, so its route_not_found answer is what a client sees.
RESOURCES = ("/jobs", "/jobs/{job_id}", "/jobs/{job_id}/start")
METHODS = {"/jobs": ("GET", "POST"), "/jobs/{job_id}": ("GET", "DELETE"), "/jobs/{job_id}/start": ("POST",)}
# The methods with a request model (infra/api.py), checked for a JSON body (or one without a content type,
# which the gateway takes as JSON); another content type passes through to the function unchecked.
BODY_MODELS = {("POST", "/jobs"): gateway_schema}
INVALID_BODY = (422, "validation_failed")  # infra/api.py's BAD_REQUEST_BODY gateway response


def find_function(lambda_client: Any, handler: str) -> dict[str, Any]:
    pages = lambda_client.get_paginator("list_functions").paginate()
    found = [f for page in pages for f in page["Functions"] if f.get("Handler") == handler]
    if len(found) != 1:
        raise RuntimeError(f"expected one function with handler {handler}, found {len(found)}")
    return found[0]


def prepare_local_functions(
    lambda_client: Any, client_environment: dict[str, str], overrides: dict[str, str] | None = None
) -> dict[str, str]:
    """Route both API functions with the local overrides; returns their environment (API function's)."""
    environment: dict[str, str] = {}
    for handler in (API_HANDLER, WEBHOOK_HANDLER):
        function = find_function(lambda_client, handler)
        environment = {
            **(function.get("Environment") or {}).get("Variables", {}),
            **client_environment,
            **LOCAL_OVERRIDES,
            **(overrides or {}),
            "AWS_LAMBDA_FUNCTION_NAME": function["FunctionName"],
        }
        moto_shims.route_lambda(
            function["FunctionName"],
            moto_shims.LambdaRoute(
                handler=handler,
                environment=environment,
                memory_mb=int(function.get("MemorySize", 128)),
                timeout_s=int(function.get("Timeout", 30)),
            ),
        )
    return {**environment, "API_FUNCTION_NAME": find_function(lambda_client, API_HANDLER)["FunctionName"]}


def ensure_webhook_secret(secrets_client: Any, secret_id: str) -> str:
    """The stack's webhook secret exists in AWS from deploy; locally it is created once, at random."""
    try:
        return secrets_client.get_secret_value(SecretId=secret_id)["SecretString"]
    except secrets_client.exceptions.ResourceNotFoundException:
        value = secrets.token_urlsafe(36)
        secrets_client.create_secret(Name=secret_id, SecretString=value)
        return value


def match_resource(path: str) -> tuple[str, dict[str, str] | None]:
    """(resource, path parameters), segments percent-decoded as API Gateway does."""
    segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
    for resource in RESOURCES:
        template = resource.strip("/").split("/")
        if len(template) != len(segments):
            continue
        params: dict[str, str] = {}
        for expected, actual in zip(template, segments, strict=True):
            if expected.startswith("{"):
                params[expected.strip("{}")] = actual
            elif expected != actual:
                break
        else:
            return resource, params or None
    return path, None


def rest_event(method: str, raw_path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    parts = urlsplit(raw_path)
    path = parts.path or "/"
    resource, path_parameters = match_resource(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent", "")},
        },
        "body": text if body else None,
        "isBase64Encoded": encoded,
    }


class LocalGateway:
    """One request at a time into the API function (its Powertools resolver holds the current event)."""

    def __init__(self, lambda_client: Any, function_name: str, *, validate_bodies: bool = True) -> None:
        """validate_bodies=False: every body reaches the function (to test the function's own checks)."""
        self._lambda = lambda_client
        self._function = function_name
        self._lock = threading.Lock()
        models = BODY_MODELS if validate_bodies else {}
        self._validators = {route: Draft4Validator(schema()) for route, schema in models.items()}

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
        event = rest_event(method, raw_path, headers, body)
        allowed = METHODS.get(event["resource"])
        if allowed and method not in allowed:
            status, out_headers, out = _error(
                405,
                "method_not_allowed",
                f"{method} is not a method of {event['resource']}; use {', '.join(allowed)}",
            )
            return status, {**out_headers, "Allow": ", ".join(allowed)}, out
        validator = self._validators.get((method, event["resource"]))
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if validator is not None and content_type.split(";")[0].strip().lower() in ("", "application/json"):
            problem = body_problem(validator, body)
            if problem is not None:
                return _error(*INVALID_BODY, problem)
        with self._lock:
            response = self._lambda.invoke(FunctionName=self._function, Payload=json.dumps(event).encode())
        payload = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError") or "statusCode" not in payload:
            return _error(502, "internal_error", "the API function failed; see local-output/logs/service.log")
        out = payload.get("body") or ""
        data = base64.b64decode(out) if payload.get("isBase64Encoded") else out.encode("utf-8")
        headers = dict(payload.get("headers") or {})
        for name, values in (payload.get("multiValueHeaders") or {}).items():
            headers[name] = ", ".join(str(v) for v in values)
        return int(payload["statusCode"]), headers, data


def body_problem(validator: Draft4Validator, body: bytes) -> str | None:
    """What the gateway's validator finds wrong with a body, or None."""
    if not body.strip():
        return "Invalid request body: empty"
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "Invalid request body: not JSON"
    errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return None
    return "[" + "; ".join(f"{e.json_path}: {e.message}" for e in errors) + "]"


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"code": code, "message": message}).encode()
    return status, {"Content-Type": "application/json"}, body
