"""LocalAws builds the synthesized stack in moto: every resource from its template properties."""

import json

import pytest

from lambdas.pipeline import config
from lambdas.pipeline.runs_table import JobsTable
from local_aws import FAST_CONTEXT, LocalAws, synthesize


@pytest.fixture(scope="module")
def template():
    return synthesize(FAST_CONTEXT)


@pytest.fixture(scope="module")
def aws(template):
    with LocalAws(template) as emulator:
        yield emulator


def of_type(template, kind):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_outputs_resolve_to_resources_that_exist(aws):
    assert aws.outputs["BucketName"] == aws.bucket
    aws.boto3_client("s3").head_bucket(Bucket=aws.bucket)
    assert aws.topic_arn in [t["TopicArn"] for t in aws.boto3_client("sns").list_topics()["Topics"]]
    aws.boto3_client("dynamodb").describe_table(TableName=aws.table_name)
    aws.boto3_client("sqs").get_queue_attributes(QueueUrl=aws.queue_url, AttributeNames=["All"])
    assert aws.outputs["TrainerImageUri"].startswith("123456789012.dkr.ecr.us-east-1.amazonaws.com/")


def test_the_state_machine_runs_the_definition_cdk_synthesized(aws, template):
    ((logical_id, resource),) = of_type(template, "AWS::StepFunctions::StateMachine").items()
    deployed = aws.boto3_client("stepfunctions").describe_state_machine(stateMachineArn=aws.state_machine_arn)
    assert deployed["definition"] == aws.resolver.resolve(resource["Properties"]["DefinitionString"])
    states = json.loads(deployed["definition"])["States"]
    assert states["Train"]["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    assert states["CheckBatch"]["Resource"].startswith("arn:aws:lambda:us-east-1:123456789012:function:")


def test_bucket_sends_events_to_eventbridge_and_the_rule_targets_the_upload_queue(aws, template):
    # moto stores EventBridgeConfiguration but leaves it out of GetBucketNotificationConfiguration.
    from moto.s3.models import s3_backends

    bucket = s3_backends["123456789012"]["aws"].get_bucket(aws.bucket)
    assert bucket.notification_configuration.event_bridge is not None
    ((rule_id, rule),) = [
        (k, r)
        for k, r in of_type(template, "AWS::Events::Rule").items()
        if r["Properties"]["EventPattern"]["source"] == ["aws.s3"]
    ]
    events = aws.boto3_client("events")
    deployed = events.describe_rule(Name=aws.resolver.ref(rule_id))
    assert json.loads(deployed["EventPattern"]) == aws.resolver.resolve(rule["Properties"]["EventPattern"])
    (target,) = events.list_targets_by_rule(Rule=aws.resolver.ref(rule_id))["Targets"]
    queue_arn = aws.boto3_client("sqs").get_queue_attributes(
        QueueUrl=aws.queue_url, AttributeNames=["QueueArn"]
    )
    assert target["Arn"] == queue_arn["Attributes"]["QueueArn"]


def test_upload_queue_redrives_to_its_dead_letter_queue(aws):
    attributes = aws.boto3_client("sqs").get_queue_attributes(QueueUrl=aws.queue_url, AttributeNames=["All"])
    redrive = json.loads(attributes["Attributes"]["RedrivePolicy"])
    assert redrive["maxReceiveCount"] == 5 and redrive["deadLetterTargetArn"].endswith("DLQ503DE357")


def test_functions_get_the_templates_environment_and_the_queue_feeds_the_intake(aws, template):
    lambda_ = aws.boto3_client("lambda")
    functions = of_type(template, "AWS::Lambda::Function")
    for logical_id, resource in functions.items():
        deployed = lambda_.get_function_configuration(FunctionName=aws.resolver.ref(logical_id))
        variables = deployed["Environment"]["Variables"]
        assert variables[config.BUCKET_NAME] == aws.bucket
        assert variables[config.JOBS_TABLE_NAME] == aws.table_name
        assert deployed["Handler"] == resource["Properties"]["Handler"]
    intake = next(
        aws.resolver.ref(k)
        for k, r in functions.items()
        if r["Properties"]["Handler"].endswith("upload_events.handler")
    )
    mappings = lambda_.list_event_source_mappings()[
        "EventSourceMappings"
    ]  # the intake's, the webhook sender's
    assert len([m for m in mappings if m["FunctionArn"].endswith(intake)]) == 1


def test_an_upload_travels_s3_eventbridge_sqs_to_the_intake_lambda(aws):
    """moto delivers each link synchronously: the batch exists when put_object returns."""
    aws.boto3_client("s3").put_object(Bucket=aws.bucket, Key="uploads/chain test/a b.jpg", Body=b"x")
    batch = JobsTable(aws.table_name, aws.boto3_client("dynamodb")).get_batch("chain test")
    # Only its existence is timing-free: with a 1 s quiet period a loaded machine may have sealed it.
    assert batch is not None
    (execution,) = aws.runs("chain test")
    assert execution["name"].endswith(batch.run_id)


def test_client_environment_points_subprocesses_at_the_emulator(aws):
    environment = aws.client_environment
    assert environment["AWS_ENDPOINT_URL"] == aws.endpoint_url
    assert environment["AWS_ACCESS_KEY_ID"] and environment["AWS_DEFAULT_REGION"] == "us-east-1"


def test_a_taken_port_is_refused_at_once_rather_than_hanging(aws):
    taken = int(aws.endpoint_url.rsplit(":", 1)[1])
    with pytest.raises(OSError, match=f"port {taken} on 127.0.0.1 is in use"):
        LocalAws({"Resources": {}}, port=taken).start()
