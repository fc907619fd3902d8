"""Each shim in local_aws/moto_shims.py: still needed (moto alone falls short) and still working.

Runs against a small hand-written template so every failure points at one shim, not at the stack.
"""

import json
import time
from contextlib import contextmanager
from urllib.parse import unquote_plus

import pytest
import requests
from botocore.exceptions import ClientError
from moto.awslambda_simple.models import lambda_simple_backends
from moto.s3 import notifications as s3_notifications
from moto.s3.responses import S3Response
from moto.sagemaker.models import sagemaker_backends
from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory

from local_aws import LocalAws, TrainingOutcome, moto_shims
from local_aws.template import ACCOUNT_ID

REGION = "us-east-1"
ROLE = {"Fn::GetAtt": ["Role", "Arn"]}
TRAIN_DEFINITION = {
    "StartAt": "Train",
    "States": {
        "Train": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sagemaker:createTrainingJob.sync",
            "Parameters": {
                "TrainingJobName.$": "$.name",
                "RoleArn": "arn:aws:iam::123456789012:role/Shims-Role",
                "AlgorithmSpecification": {
                    "TrainingImage": "image:latest",
                    "TrainingInputMode": "File",
                    "MetricDefinitions": [{"Name": "train:loss", "Regex": "loss=(\\S+)"}],
                },
                "OutputDataConfig": {"S3OutputPath": "s3://bucket/out/"},
                "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
                "StoppingCondition": {"MaxRuntimeInSeconds": 600},
            },
            "ResultSelector": {"Status.$": "$.TrainingJobStatus"},
            "ResultPath": "$.training",
            "Retry": [
                {"ErrorEquals": ["SageMaker.ThrottlingException"], "IntervalSeconds": 1, "MaxAttempts": 2}
            ],
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
            "End": True,
        },
        "Caught": {"Type": "Pass", "End": True},
    },
}
TEMPLATE = {
    "Resources": {
        "Bucket": {
            "Type": "AWS::S3::Bucket",
            "Properties": {
                "NotificationConfiguration": {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
            },
        },
        "Events": {"Type": "AWS::SQS::Queue", "Properties": {}},
        "Rule": {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "EventPattern": {
                    "source": ["aws.s3"],
                    "detail-type": ["Object Created"],
                    "detail": {"bucket": {"name": [{"Ref": "Bucket"}]}},
                },
                "State": "ENABLED",
                "Targets": [{"Arn": {"Fn::GetAtt": ["Events", "Arn"]}, "Id": "queue"}],
            },
        },
        "Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {"AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": []}},
        },
        "Echo": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Handler": "tests.local_aws.fixture_handlers.echo",
                "Runtime": "python3.11",
                "Role": ROLE,
                "Environment": {"Variables": {"GREETING": {"Fn::Sub": "hello from ${AWS::Region}"}}},
            },
        },
        "Train": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {"RoleArn": ROLE, "DefinitionString": json.dumps(TRAIN_DEFINITION)},
        },
        "Invoke": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "RoleArn": ROLE,
                "DefinitionString": {
                    "Fn::Join": [
                        "",
                        [
                            '{"StartAt":"Echo","States":{"Echo":{"Type":"Task","Resource":"',
                            {"Fn::GetAtt": ["Echo", "Arn"]},
                            '","Catch":[{"ErrorEquals":["ValueError"],"ResultPath":"$.error","Next":"Caught"}],'
                            '"End":true},"Caught":{"Type":"Pass","End":true}}}',
                        ],
                    ]
                },
            },
        },
    },
    "Outputs": {"BucketName": {"Value": {"Ref": "Bucket"}}},
}


@pytest.fixture(scope="module")
def aws():
    with LocalAws(TEMPLATE, stack_name="Shims") as emulator:
        yield emulator


@contextmanager
def patched(target, name, value):
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


def run(aws, machine: str, payload: dict) -> dict:
    sfn = aws.boto3_client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=aws.resolver.ref(machine), name=f"e{time.monotonic_ns()}", input=json.dumps(payload)
    )["executionArn"]
    return arn


def finished(aws, arn) -> dict:
    described = aws.wait_for_execution(arn, timeout=30)
    return {**described, "output": json.loads(described.get("output") or "null")}


def s3_event_keys(aws, count: int, timeout: float = 10) -> list[str]:
    """Keys of the S3 events on the rule's queue (moto delivers them before put_object returns)."""
    sqs = aws.boto3_client("sqs")
    url = aws.resolver.ref("Events")
    keys = []
    deadline = time.monotonic() + timeout
    while len(keys) < count and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            keys.append(json.loads(message["Body"])["detail"]["object"]["key"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return keys


# --- 1. Lambda ---


def test_moto_alone_echoes_lambda_payloads_instead_of_running_code():
    backend = lambda_simple_backends[ACCOUNT_ID][REGION]
    assert moto_shims._original_invoke(backend, "any", None, '{"x": 1}', {}, {}) == b'{"x": 1}'


def test_invocations_run_the_templates_handler_with_the_functions_environment(aws):
    response = aws.boto3_client("lambda").invoke(FunctionName=aws.resolver.ref("Echo"), Payload=b'{"x": 1}')
    payload = json.loads(response["Payload"].read())
    assert payload == {"echo": {"x": 1}, "greeting": "hello from us-east-1", "function": "Shims-Echo"}
    assert "FunctionError" not in response


def test_handler_errors_come_back_as_lambda_errors_and_reach_catch(aws):
    response = aws.boto3_client("lambda").invoke(FunctionName="Shims-Echo", Payload=b'{"fail": "please"}')
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read())["errorType"] == "ValueError"
    output = finished(aws, run(aws, "Invoke", {"fail": "please"}))["output"]
    assert output["error"]["Error"] == "ValueError"
    assert "asked to fail: please" in output["error"]["Cause"]


# --- 2. Step Functions createTrainingJob.sync ---


def test_moto_alone_cannot_run_create_training_job_sync(aws):
    with patched(state_task_factory, "state_task_service_for", moto_shims._original_state_task_service_for):
        described = finished(aws, run(aws, "Train", {"name": "unsupported-1"}))
    assert described["status"] == "FAILED"
    assert "Unsupported sync callback procedure" in described["cause"]


def test_sync_waits_for_the_job_and_returns_its_description(aws):
    arn = run(aws, "Train", {"name": "sync-completed"})
    job = aws.wait_for_training_job(len(aws.training_job_requests()) + 1)
    assert job.name == "sync-completed"
    time.sleep(1.2)  # two polls of the resolver
    assert aws.boto3_client("stepfunctions").describe_execution(executionArn=arn)["status"] == "RUNNING"
    aws.finish_training_job(job.name, TrainingOutcome("Completed"))
    assert finished(aws, arn)["output"]["training"] == {"Status": "Completed"}


def test_failed_jobs_fail_the_task_with_the_description_as_cause(aws):
    arn = run(aws, "Train", {"name": "sync-failed"})
    aws.wait_for_training_job(len(aws.training_job_requests()) + 1)
    aws.finish_training_job("sync-failed", TrainingOutcome("Failed", "CUDA out of memory"))
    error = finished(aws, arn)["output"]["error"]
    assert error["Error"] == "States.TaskFailed"
    described = json.loads(error["Cause"])
    assert (described["TrainingJobStatus"], described["FailureReason"]) == ("Failed", "CUDA out of memory")


def test_api_errors_are_named_as_step_functions_names_them_and_throttling_is_retried(aws):
    before = len(aws.training_job_requests())
    aws.reject_create_training_job("ResourceLimitExceeded", "The account-level service limit is 0 Instances")
    error = finished(aws, run(aws, "Train", {"name": "quota"}))["output"]["error"]
    assert error["Error"] == "SageMaker.ResourceLimitExceededException"
    assert "Error Code: ResourceLimitExceeded" in error["Cause"]

    aws.reject_create_training_job("ThrottlingException", "Rate exceeded")
    aws.set_training_runner(lambda job: TrainingOutcome("Completed"))
    try:
        output = finished(aws, run(aws, "Train", {"name": "throttled-once"}))["output"]
    finally:
        aws.set_training_runner(None)
    assert output["training"] == {"Status": "Completed"}
    assert [r.name for r in aws.training_job_requests()[before:]] == ["throttled-once"]


# --- 3. SageMaker training jobs ---


def create_args(name: str) -> dict:
    return {
        "training_job_name": name,
        "hyper_parameters": {},
        "algorithm_specification": {"TrainingImage": "image", "TrainingInputMode": "File"},
        "role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/r",
        "input_data_config": [],
        "output_data_config": {"S3OutputPath": "s3://bucket/out/"},
        "resource_config": {},
        "vpc_config": None,
        "stopping_condition": {},
        "tags": [],
        "enable_network_isolation": False,
        "enable_inter_container_traffic_encryption": False,
        "enable_managed_spot_training": False,
        "checkpoint_config": None,
        "debug_hook_config": None,
        "debug_rule_configurations": None,
        "tensor_board_output_config": None,
        "experiment_config": None,
    }


def test_moto_alone_completes_jobs_at_once_and_lets_a_duplicate_name_overwrite(aws):
    backend = sagemaker_backends[ACCOUNT_ID][REGION]
    try:
        first = backend.create_training_job(**create_args("moto-alone"))
        assert first.training_job_status == "Completed"
        backend.create_training_job(**create_args("moto-alone"))  # no ResourceInUse
        assert first.algorithm_specification["MetricDefinitions"][0]["Name"] == "test:dcg"
    finally:
        backend.training_jobs.pop("moto-alone", None)


def test_created_jobs_start_in_progress_keep_their_request_and_names_are_unique(aws):
    sagemaker = aws.boto3_client("sagemaker")
    params = TRAIN_DEFINITION["States"]["Train"]["Parameters"]
    request = {k: v for k, v in params.items() if not k.endswith(".$")} | {"TrainingJobName": "direct-1"}
    sagemaker.create_training_job(**request)
    described = sagemaker.describe_training_job(TrainingJobName="direct-1")
    assert described["TrainingJobStatus"] == "InProgress"
    assert (
        described["AlgorithmSpecification"]["MetricDefinitions"]
        == params["AlgorithmSpecification"]["MetricDefinitions"]
    )
    assert aws.training_job_requests()[-1].request == request
    with pytest.raises(ClientError) as caught:
        sagemaker.create_training_job(**request)
    assert caught.value.response["Error"]["Code"] == "ResourceInUse"


def test_a_runner_decides_how_a_job_ends(aws):
    seen = []
    aws.set_training_runner(
        lambda job: seen.append(job.name) or TrainingOutcome("Stopped", "spot reclaimed", 10, 4)
    )
    try:
        arn = run(aws, "Train", {"name": "runner-stopped"})
        error = finished(aws, arn)["output"]["error"]
    finally:
        aws.set_training_runner(None)
    described = json.loads(error["Cause"])
    assert seen == ["runner-stopped"]
    assert (described["TrainingJobStatus"], described["FailureReason"]) == ("Stopped", "spot reclaimed")
    assert (described["TrainingTimeInSeconds"], described["BillableTimeInSeconds"]) == (10, 4)


# --- 4. S3 -> EventBridge ---

KEY = "uploads/my dog/a+b é.jpg"


def test_moto_alone_sends_event_keys_unencoded(aws):
    with patched(
        s3_notifications, "_send_event_bridge_message", moto_shims._original_send_event_bridge_message
    ):
        aws.boto3_client("s3").put_object(Bucket=aws.bucket, Key=KEY, Body=b"x")
    assert s3_event_keys(aws, 1) == [KEY]


def test_event_keys_are_url_encoded_as_s3_encodes_them(aws):
    aws.boto3_client("s3").put_object(Bucket=aws.bucket, Key=KEY, Body=b"x")
    (key,) = s3_event_keys(aws, 1)
    assert key == "uploads/my+dog/a%2Bb+%C3%A9.jpg"
    assert unquote_plus(key) == KEY


def test_held_events_are_released_late_reordered_or_twice(aws):
    s3 = aws.boto3_client("s3")
    with aws.held_upload_events() as release:
        s3.put_object(Bucket=aws.bucket, Key="uploads/held/1.jpg", Body=b"1")
        s3.put_object(Bucket=aws.bucket, Key="uploads/held/2.jpg", Body=b"2")
        assert s3_event_keys(aws, 1, timeout=0.3) == []
        assert release(lambda events: [*reversed(events), events[0]]) == 3
    assert s3_event_keys(aws, 3) == ["uploads/held/2.jpg", "uploads/held/1.jpg", "uploads/held/1.jpg"]


# --- 5. S3 POST uploads ---


def presigned_post(aws, key: str, largest: int) -> dict:
    return aws.boto3_client("s3").generate_presigned_post(
        Bucket=aws.bucket,
        Key=key,
        Fields={"Content-Type": "image/jpeg"},
        Conditions=[{"Content-Type": "image/jpeg"}, ["content-length-range", 1, largest]],
        ExpiresIn=60,
    )


def post_file(post: dict, body: bytes) -> requests.Response:
    return requests.post(post["url"], data=post["fields"], files={"file": ("a.jpg", body)}, timeout=30)


def stored(aws, key: str) -> bool:
    return aws.boto3_client("s3").list_objects_v2(Bucket=aws.bucket, Prefix=key)["KeyCount"] == 1


def test_moto_alone_stores_a_post_upload_its_policy_forbids(aws):
    with patched(S3Response, "_bucket_response_post", moto_shims._original_bucket_response_post):
        assert post_file(presigned_post(aws, "posts/too-big-alone.jpg", 4), b"12345").status_code == 204
    assert stored(aws, "posts/too-big-alone.jpg")


def test_a_post_upload_is_checked_against_its_policy_before_it_is_stored(aws):
    refused = post_file(presigned_post(aws, "posts/too-big.jpg", 4), b"12345")
    assert refused.status_code == 400 and "<Code>EntityTooLarge</Code>" in refused.text
    assert not stored(aws, "posts/too-big.jpg")
    assert post_file(presigned_post(aws, "posts/fits.jpg", 5), b"12345").status_code == 204
    assert stored(aws, "posts/fits.jpg")
