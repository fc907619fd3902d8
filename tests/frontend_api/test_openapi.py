"""openapi.yaml is generated from the handlers' models, and the local server honours it (schemathesis)."""

from __future__ import annotations

import threading

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from frontend_api.openapi import OPENAPI_PATH, document, gateway_schema, render
from local_pipeline.serve import ApiServer

from .support import api_over, start_api_emulator


def test_the_committed_openapi_yaml_is_the_generated_one():
    assert OPENAPI_PATH.read_text() == render(), "run: python -m frontend_api.openapi"


def test_every_error_response_uses_the_error_body_and_every_route_is_documented():
    doc = yaml.safe_load(OPENAPI_PATH.read_text())
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/start"}
    for path in doc["paths"].values():
        for method, operation in path.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert document()["components"]["schemas"]["CreateJobRequest"]["additionalProperties"] is False


def test_the_gateway_schema_is_draft_4_without_references():
    schema = gateway_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert "$ref" not in str(schema) and "$defs" not in schema


@pytest.fixture(scope="module")
def base_url():
    aws = start_api_emulator()
    server = ApiServer(0, api_over(aws).gateway)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield server.url
    server.shutdown()
    server.server_close()
    aws.stop(drain_seconds=0)


schema = schemathesis.openapi.from_path(OPENAPI_PATH)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
    derandomize=True,
)
def test_no_5xx_and_no_response_outside_the_document(case, base_url):
    case.call_and_validate(
        base_url=base_url,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=60,
    )
