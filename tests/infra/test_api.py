"""The HTTP API's template: auth on every method, throttling, access logs, the gateway's body schema."""

import pytest

from app import build_app
from frontend_api.openapi import gateway_schema
from infra.api import api_asset_files


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


def test_gateway_errors_use_the_api_error_shape(resources):
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in of_type(resources, "AWS::ApiGateway::GatewayResponse").values()
    }
    assert responses["BAD_REQUEST_BODY"]["StatusCode"] == "422"
    assert (
        '"code": "validation_failed"'
        in responses["BAD_REQUEST_BODY"]["ResponseTemplates"]["application/json"]
    )
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
