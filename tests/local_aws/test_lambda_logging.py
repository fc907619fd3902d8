"""Concurrent in-process Lambda invocations never mix each other's log keys."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from local_aws import LocalAws
from local_aws.lambda_logging import invocation_log_keys
from tests.local_aws import fixture_logging_handlers as fixture

ROLE = {"Fn::GetAtt": ["Role", "Arn"]}
FUNCTION = {
    "Type": "AWS::Lambda::Function",
    "Properties": {
        "Handler": "tests.local_aws.fixture_logging_handlers.handler",
        "Runtime": "python3.11",
        "Role": ROLE,
    },
}
TEMPLATE = {
    "Resources": {
        "Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {"AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": []}},
        },
        "Alpha": FUNCTION,
        "Beta": FUNCTION,
    }
}


@pytest.fixture(scope="module")
def aws():
    with LocalAws(TEMPLATE, stack_name="Logs") as emulator:
        yield emulator


def test_two_concurrent_invocations_log_their_own_function_and_job(aws):
    fixture.LOG.seek(0)
    fixture.LOG.truncate()
    fixture.together.reset()
    calls = {"Logs-Alpha": "job one", "Logs-Beta": "job two"}

    def invoke(function_name: str) -> dict:
        payload = json.dumps({"job_name": calls[function_name]}).encode()
        response = aws.boto3_client("lambda").invoke(FunctionName=function_name, Payload=payload)
        return json.loads(response["Payload"].read())

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(invoke, calls))
    assert results == [{"job_name": "job one"}, {"job_name": "job two"}]

    lines = [json.loads(line) for line in fixture.LOG.getvalue().splitlines()]
    assert sorted((line["function_name"], line["job_name"]) for line in lines) == sorted(calls.items())
    assert all(line["message"] == "working" for line in lines)


def test_keys_appended_in_an_invocation_stay_there():
    formatter = LambdaPowertoolsFormatter(service="outside")
    with invocation_log_keys():
        formatter.append_keys(job_name="inside")
        assert formatter.log_format["job_name"] == "inside"
    assert "job_name" not in formatter.log_format
    assert formatter.log_format["service"] == "outside"
