"""infra/pipeline.py as synthesized: table, queues, rule, Lambdas and their exact permissions."""

import importlib
import json

import pytest
from aws_cdk.assertions import Match

from lambdas.jobs.spec import JobDefaults
from lambdas.pipeline import config

HANDLERS = {
    "lambdas.handlers.upload_events.handler",
    "lambdas.handlers.check_batch.handler",
    "lambdas.handlers.validate_batch.handler",
    "lambdas.handlers.build_training_request.handler",
    "lambdas.handlers.finish_run.handler",
}


def of_type(resources, kind):
    """The pipeline's resources of a type (the HTTP API's own, ``Api*``, are tested in test_api.py)."""
    return {k: v for k, v in resources.items() if v["Type"] == kind and not k.startswith("Api")}


def only(resources, kind):
    found = of_type(resources, kind)
    assert len(found) == 1, found.keys()
    return next(iter(found.items()))


def functions_by_handler(resources):
    return {
        f["Properties"]["Handler"]: (k, f) for k, f in of_type(resources, "AWS::Lambda::Function").items()
    }


def role_statements(resources, role_id):
    return [
        s
        for p in of_type(resources, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def actions(statement):
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def test_jobs_table_keys_billing_recovery_and_expiry(template):
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        },
    )


def test_upload_events_reach_an_encrypted_queue_with_a_dead_letter_queue(resources):
    queues = of_type(resources, "AWS::SQS::Queue")
    assert len(queues) == 2
    main = next(q for q in queues.values() if "RedrivePolicy" in q["Properties"])
    dlq_id = main["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert main["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 5
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queues[dlq_id]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    intake_timeout = functions_by_handler(resources)["lambdas.handlers.upload_events.handler"][1][
        "Properties"
    ]["Timeout"]
    assert main["Properties"]["VisibilityTimeout"] >= 6 * intake_timeout


def test_rule_matches_objects_created_under_uploads_of_the_data_bucket_only(resources):
    rule_id, rule = only(resources, "AWS::Events::Rule")
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": "uploads/"}]
    assert pattern["detail"]["bucket"]["name"] == [{"Ref": "StorageData6BB23F4E"}]
    queue_id = rule["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0]
    policy = next(
        p
        for p in of_type(resources, "AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": queue_id}]
    )
    allow = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allow[0]["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow[0]["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [rule_id, "Arn"]}}}


def test_intake_reads_the_queue_with_partial_batch_failures(resources):
    _, mapping = only(resources, "AWS::Lambda::EventSourceMapping")
    intake_id, _ = functions_by_handler(resources)["lambdas.handlers.upload_events.handler"]
    assert mapping["Properties"]["FunctionName"] == {"Ref": intake_id}
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_every_handler_named_in_the_template_exists(resources):
    assert set(functions_by_handler(resources)) == HANDLERS
    for handler in HANDLERS:
        module, _, name = handler.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name))


def test_lambdas_get_the_deployment_defaults_and_only_intake_may_start_runs(resources, stack_artifact):
    for handler, (_, function) in functions_by_handler(resources).items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert JobDefaults.model_validate_json(variables[config.JOB_DEFAULTS]) == JobDefaults()
        assert variables[config.BUCKET_NAME] == {"Ref": "StorageData6BB23F4E"}
        assert (config.STATE_MACHINE_ARN in variables) == handler.endswith("upload_events.handler")


def test_context_defaults_reach_the_lambdas():
    from local_aws import synthesize

    tpl = synthesize(
        {"default_quiet_period_seconds": 7, "default_max_train_steps": 321}, stack_name="CtxDefaults"
    )
    function = next(r for r in tpl["Resources"].values() if r["Type"] == "AWS::Lambda::Function")
    defaults = JobDefaults.model_validate_json(
        function["Properties"]["Environment"]["Variables"][config.JOB_DEFAULTS]
    )
    assert (defaults.quiet_period_seconds, defaults.max_train_steps) == (7, 321)


@pytest.mark.parametrize(
    ("handler", "readable", "listable"),
    [
        ("upload_events", ["uploads/*"], ["uploads/*"]),
        ("check_batch", ["uploads/*"], ["uploads/*"]),
        ("validate_batch", ["uploads/*", "base-models/*"], ["uploads/*", "base-models/*"]),
        ("build_training_request", [], ["class-images/*"]),
        ("finish_run", ["models/*"], ["models/*"]),
    ],
)
def test_each_lambda_reads_only_its_prefixes_and_writes_no_objects(resources, handler, readable, listable):
    _, function = functions_by_handler(resources)[f"lambdas.handlers.{handler}.handler"]
    statements = role_statements(resources, function["Properties"]["Role"]["Fn::GetAtt"][0])
    s3 = [s for s in statements if any(a.startswith("s3:") for a in actions(s))]
    assert not any(a in {"s3:PutObject", "s3:DeleteObject", "s3:*"} for s in s3 for a in actions(s))
    gets = json.dumps([s["Resource"] for s in s3 if "s3:GetObject" in actions(s)])
    for prefix in ["uploads/*", "models/*", "base-models/*", "class-images/*", "checkpoints/*"]:
        assert (f'"/{prefix}"' in gets) == (prefix in readable), prefix
    lists = [s for s in s3 if "s3:ListBucket" in actions(s)]
    prefixes = sorted(p for s in lists for p in s["Condition"]["StringLike"]["s3:prefix"])
    assert prefixes == sorted(listable)


def test_lambda_roles_carry_no_managed_policies(resources):
    for _, function in functions_by_handler(resources).values():
        role = resources[function["Properties"]["Role"]["Fn::GetAtt"][0]]
        assert "ManagedPolicyArns" not in role["Properties"]


def test_intake_may_start_executions_of_the_run_state_machine_only(resources):
    intake_id, intake = functions_by_handler(resources)["lambdas.handlers.upload_events.handler"]
    state_machine_id, _ = only(resources, "AWS::StepFunctions::StateMachine")
    statements = role_statements(resources, intake["Properties"]["Role"]["Fn::GetAtt"][0])
    starts = [s for s in statements if "states:StartExecution" in actions(s)]
    assert [s["Resource"] for s in starts] == [{"Ref": state_machine_id}]


def test_upload_events_go_through_eventbridge_not_bucket_notification_lambdas(template):
    template.resource_count_is("Custom::S3BucketNotifications", 0)
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "NotificationConfiguration": Match.object_like(
                {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
            )
        },
    )
