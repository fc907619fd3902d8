"""The HTTP API's template: auth on every method, throttling, access logs, the gateway's body schema."""

import pytest

from app import build_app
from frontend_api.openapi import gateway_schema
from infra.api import api_asset_files
from local_pipeline.serve_gateway import BODY_MODELS, INVALID_BODY


def of_type(resources, kind):
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def methods(resources):
    return [m["Properties"] for m in of_type(resources, "AWS::ApiGateway::Method").values()]


@pytest.fixture(scope="module")
def cognito_resources():
    app = build_app(
        {"notification_email": "a@example.com", "stack_name": "CognitoApi", "api_auth": "cognito"}
    )
    return app.synth().get_stack_by_name("CognitoApi").template["Resources"]


def test_every_method_needs_iam_by_default_and_there_are_the_five_routes(resources):
    found = methods(resources)
    assert sorted(m["HttpMethod"] for m in found) == ["DELETE", "GET", "GET", "POST", "POST"]
    assert {m["AuthorizationType"] for m in found} == {"AWS_IAM"}


def test_with_api_auth_cognito_every_method_needs_the_user_pool_jwt(cognito_resources):
    found = methods(cognito_resources)
    assert len(found) == 5
    assert {m["AuthorizationType"] for m in found} == {"COGNITO_USER_POOLS"}
    assert all("AuthorizerId" in m for m in found)
    (authorizer,) = of_type(cognito_resources, "AWS::ApiGateway::Authorizer").values()
    assert authorizer["Properties"]["Type"] == "COGNITO_USER_POOLS"
    handler_env = [
        f["Properties"]["Environment"]["Variables"]
        for f in of_type(cognito_resources, "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "frontend_api.handler.handler"
    ]
    assert handler_env[0]["API_AUTH_MODE"] == "cognito"


def test_the_stage_is_throttled_traced_and_access_logged(resources):
    (stage,) = of_type(resources, "AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    (settings,) = props["MethodSettings"]
    assert settings["ThrottlingRateLimit"] > 0 and settings["ThrottlingBurstLimit"] > 0
    assert settings["LoggingLevel"] == "ERROR"
    assert props["TracingEnabled"] is True
    assert (
        "DestinationArn" in props["AccessLogSetting"]
        and "$context.requestId" in props["AccessLogSetting"]["Format"]
    )


def test_the_create_body_is_validated_at_the_gateway_with_the_handlers_schema(resources):
    (model,) = of_type(resources, "AWS::ApiGateway::Model").values()
    assert model["Properties"]["Schema"] == gateway_schema()
    (validator,) = of_type(resources, "AWS::ApiGateway::RequestValidator").values()
    assert validator["Properties"]["ValidateRequestBody"] is True
    post_jobs = [m for m in methods(resources) if m["HttpMethod"] == "POST" and "RequestModels" in m]
    assert len(post_jobs) == 1
    assert list(post_jobs[0]["RequestModels"]) == ["application/json"]
    # The local gateway validates the same routes with the same schema.
    assert {route: schema() for route, schema in BODY_MODELS.items()} == {("POST", "/jobs"): gateway_schema()}


def test_gateway_errors_use_the_api_error_shape(resources):
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in of_type(resources, "AWS::ApiGateway::GatewayResponse").values()
    }
    status, code = INVALID_BODY  # what the local gateway answers for a body its validator refuses
    assert responses["BAD_REQUEST_BODY"]["StatusCode"] == str(status)
    assert f'"code": "{code}"' in responses["BAD_REQUEST_BODY"]["ResponseTemplates"]["application/json"]
    assert {"THROTTLED", "ACCESS_DENIED", "UNAUTHORIZED", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(responses)


def test_webhooks_are_fed_by_a_queue_subscribed_to_the_topic_with_a_dead_letter_queue(resources):
    subs = [s["Properties"] for s in of_type(resources, "AWS::SNS::Subscription").values()]
    assert any(s["Protocol"] == "sqs" for s in subs)
    handlers = {f["Properties"].get("Handler") for f in of_type(resources, "AWS::Lambda::Function").values()}
    assert {"frontend_api.handler.handler", "frontend_api.webhook_handler.handler"} <= handlers
    assert of_type(resources, "AWS::SecretsManager::Secret")


def test_the_api_url_is_an_output(stack_artifact):
    assert "ApiUrl" in stack_artifact.template["Outputs"]


def test_the_api_code_asset_holds_the_api_and_the_pipeline_code():
    files = api_asset_files()
    assert "frontend_api/handler.py" in files and "lambdas/jobs/spec.py" in files
    assert "dreambooth_trainer/hyperparameters.py" in files


def test_the_staged_api_asset_imports_both_handlers_with_runtime_packages_only(stack_artifact, tmp_path):
    """Lambda's Python runtime has boto3/botocore/urllib3; the layer brings pydantic and Powertools."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    manifest = json.loads(
        Path(stack_artifact.assembly.directory, f"{stack_artifact.stack_name}.assets.json").read_text()
    )
    (function,) = [
        r
        for r in stack_artifact.template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
        and r["Properties"].get("Handler") == "frontend_api.handler.handler"
    ]
    source = manifest["files"][function["Properties"]["Code"]["S3Key"].removesuffix(".zip")]["source"]
    asset = Path(stack_artifact.assembly.directory, source["path"])
    script = (
        "import sys; sys.path = [p for p in sys.path if '/work/' not in p or 'site-packages' in p]\n"
        f"sys.path.insert(0, {str(asset)!r})\n"
        "import frontend_api.handler, frontend_api.webhook_handler, frontend_api\n"
        f"assert frontend_api.__file__.startswith({str(asset)!r}), frontend_api.__file__\n"
        "banned = {'requests', 'yaml', 'torch'} & set(sys.modules)\n"
        "assert not banned, banned\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
