"""openapi.yaml, generated from the handlers' pydantic models: ``python -m frontend_api.openapi`` writes it,
and a test fails when the committed file differs from what this generates.

Also derives the API Gateway request model (JSON Schema draft 4, no ``$ref``) from the same model, so
the gateway and the handler validate one schema.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from frontend_api.errors import CODES
from frontend_api.idempotency import HEADER as IDEMPOTENCY_HEADER
from frontend_api.models import JOB_STATUSES, CreateJobRequest, ErrorBody, Job, JobCreated, JobList

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.yaml"
REF_TEMPLATE = "#/components/schemas/{model}"
_JOB_ID = {"type": "string", "pattern": r"^job-[0-9a-f]{16}$", "examples": ["job-0123456789abcdef"]}


def _error(description: str, codes: list[str]) -> dict[str, Any]:
    return {
        "description": f"{description} (codes: {', '.join(codes)})",
        "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="ErrorBody")}}},
    }


def _errors(*codes: str) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in ("internal_error", *codes):
        by_status.setdefault(CODES[code], []).append(code)
    return {str(status): _error("error", sorted(names)) for status, names in sorted(by_status.items())}


def _ok(status: int, model: type[BaseModel], description: str) -> dict[str, Any]:
    return {
        str(status): {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": REF_TEMPLATE.format(model=model.__name__)}}},
        }
    }


def _job_id_parameter() -> dict[str, Any]:
    return {"name": "job_id", "in": "path", "required": True, "schema": _JOB_ID}


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model, mode in [
        (CreateJobRequest, "validation"),
        (JobCreated, "serialization"),
        (Job, "serialization"),
        (JobList, "serialization"),
        (ErrorBody, "serialization"),
    ]:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode=mode)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    job_path_errors = ("invalid_job_id", "job_not_found")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "DreamBooth fine-tuning service",
            "version": "1.0.0",
            "description": (
                "Create a fine-tuning job from images (presigned uploads) or an images_url, start it, follow "
                "it, fetch the model, or stop it. Errors are {code, message} with stable codes. In AWS every "
                "route needs SigV4 (IAM) or a Cognito JWT; the local server has no auth."
            ),
        },
        "paths": {
            "/jobs": {
                "post": {
                    "operationId": "createJob",
                    "summary": "Create a job: upload targets per image, or images fetched from images_url",
                    "parameters": [
                        {
                            "name": IDEMPOTENCY_HEADER,
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,128}$"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": REF_TEMPLATE.format(model="CreateJobRequest")}
                            }
                        },
                    },
                    "responses": {
                        **_ok(201, JobCreated, "created"),
                        **_ok(200, JobCreated, "the job this Idempotency-Key created before"),
                        **_errors(
                            "malformed_json",
                            "invalid_body",
                            "validation_failed",
                            "body_too_large",
                            "too_many_images",
                            "invalid_idempotency_key",
                            "invalid_image_name",
                            "unsafe_url",
                            "images_url_unreachable",
                            "images_url_too_large",
                            "unsafe_archive",
                            "archive_too_many_files",
                            "no_images",
                            "job_name_taken",
                            "idempotency_key_reused",
                            "job_already_started",
                        ),
                    },
                },
                "get": {
                    "operationId": "listJobs",
                    "summary": "Jobs, newest first",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(JOB_STATUSES)},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                        },
                        {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": 200}},
                    ],
                    "responses": {
                        **_ok(200, JobList, "a page of jobs"),
                        **_errors("invalid_query", "invalid_cursor"),
                    },
                },
            },
            "/jobs/{job_id}": {
                "parameters": [_job_id_parameter()],
                "get": {
                    "operationId": "getJob",
                    "summary": "Status, stage, progress, model files with links, failure",
                    "responses": {**_ok(200, Job, "the job"), **_errors(*job_path_errors)},
                },
                "delete": {
                    "operationId": "stopJob",
                    "summary": "Stop a running job; purge=true deletes its uploads, models, checkpoints",
                    "parameters": [
                        {
                            "name": "purge",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["true", "false"]},
                        }
                    ],
                    "responses": {
                        **_ok(200, Job, "the job after stopping"),
                        **_errors(*job_path_errors, "invalid_query"),
                    },
                },
            },
            "/jobs/{job_id}/start": {
                "parameters": [_job_id_parameter()],
                "post": {
                    "operationId": "startJob",
                    "summary": "Commit the uploaded batch: training starts",
                    "responses": {
                        **_ok(202, Job, "started"),
                        **_errors(*job_path_errors, "job_already_started", "no_images"),
                    },
                },
            },
        },
        "components": {"schemas": schemas},
    }


def render() -> str:
    return yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=100)


_DRAFT4_DROP = {"title", "examples", "default", "description"}


def gateway_schema(model: type[BaseModel] = CreateJobRequest) -> dict[str, Any]:
    """The model's JSON Schema as API Gateway takes it: draft 4, every ``$ref`` inlined."""
    schema = model.model_json_schema(mode="validation")
    definitions = schema.pop("$defs", {})

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return convert(copy.deepcopy(definitions[node["$ref"].rsplit("/", 1)[-1]]))
            return {key: convert(value) for key, value in node.items() if key not in _DRAFT4_DROP}
        if isinstance(node, list):
            return [convert(item) for item in node]
        return node

    converted = convert(schema)
    converted["$schema"] = "http://json-schema.org/draft-04/schema#"
    converted["title"] = model.__name__
    return converted


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    target = Path(argv[0]) if argv else OPENAPI_PATH
    target.write_text(render())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
