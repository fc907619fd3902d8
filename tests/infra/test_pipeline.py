"""infra/pipeline.py as synthesized: table, queues, rule, Lambdas and their exact permissions."""

import importlib
import json

import pytest
from aws_cdk.assertions import Match

from lambdas.handlers.events import SlotEvent
from lambdas.jobs.spec import JobDefaults
from lambdas.pipeline import config

HANDLERS = {
    "lambdas.handlers.upload_events.handler",
    "lambdas.handlers.check_batch.handler",
    "lambdas.handlers.validate_batch.handler",
    "lambdas.handlers.build_training_request.handler",
    "lambdas.handlers.finish_run.handler",
    "lambdas.handlers.training_slot.handler",
}


def of_type(resources, kind):
    """The pipeline's resources of a type (the HTTP API's own, ``Api*``, are tested in test_api.py)."""
    return {k: v for k, v in resources.items() if v["Type"] == kind and not k.startswith("Api")}


def only(resources, kind):
    found = of_type(resources, kind)
    assert len(found) == 1, found.keys()
    return next(iter(found.items()))


def functions_by_handler(resources):
    """The pipeline's functions (not the deploy-time image build's)."""
    return {
        f["Properties"]["Handler"]: (k, f)
        for k, f in of_type(resources, "AWS::Lambda::Function").items()
        if k.startswith("Pipeline")
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


def upload_rule(resources):
    ((rule_id, rule),) = [
        (k, r)
        for k, r in of_type(resources, "AWS::Events::Rule").items()
        if r["Properties"]["EventPattern"]["source"] == ["aws.s3"]
    ]
    return rule_id, rule


def test_rule_matches_objects_created_under_uploads_of_the_data_bucket_only(resources):
    rule_id, rule = upload_rule(resources)
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
    function = next(
        r
        for r in tpl["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] in HANDLERS
    )
    defaults = JobDefaults.model_validate_json(
        function["Properties"]["Environment"]["Variables"][config.JOB_DEFAULTS]
    )
    assert (defaults.quiet_period_seconds, defaults.max_train_steps) == (7, 321)


def test_an_execution_that_ends_without_cleanup_frees_its_training_slot(resources):
    ((rule_id, rule),) = [
        (k, r)
        for k, r in of_type(resources, "AWS::Events::Rule").items()
        if r["Properties"]["EventPattern"]["source"] == ["aws.states"]
    ]
    pattern = rule["Properties"]["EventPattern"]
    assert set(pattern["detail"]["status"]) == {"ABORTED", "TIMED_OUT", "FAILED"}
    (machine_id,) = [
        k for k in of_type(resources, "AWS::StepFunctions::StateMachine") if k.startswith("PipelineRuns")
    ]
    assert pattern["detail"]["stateMachineArn"] == [{"Ref": machine_id}]
    (target,) = rule["Properties"]["Targets"]
    slot_id, _ = functions_by_handler(resources)["lambdas.handlers.training_slot.handler"]
    assert target["Arn"] == {"Fn::GetAtt": [slot_id, "Arn"]}
    transformer = target["InputTransformer"]
    assert transformer["InputPathsMap"] == {"detail": "$.detail"}
    detail = {"status": "ABORTED", "input": json.dumps({"job_name": "rex", "run_id": "r1"})}
    event = SlotEvent.model_validate_json(
        transformer["InputTemplate"].replace("<detail>", json.dumps(detail))
    )
    assert (event.action, event.detail) == ("execution_ended", detail)


def test_the_training_slot_lambda_may_only_touch_the_jobs_table_items(resources):
    slot_id, function = functions_by_handler(resources)["lambdas.handlers.training_slot.handler"]
    statements = role_statements(resources, function["Properties"]["Role"]["Fn::GetAtt"][0])
    dynamodb = sorted(a for s in statements for a in actions(s) if a.startswith("dynamodb:"))
    assert dynamodb == sorted(
        [
            "dynamodb:" + a
            for a in ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "ConditionCheckItem")
        ]
    )
    assert not any(a.startswith("s3:") for s in statements for a in actions(s))


@pytest.mark.parametrize(
    ("handler", "readable", "listable", "writable"),
    [
        ("upload_events", ["uploads/*"], ["uploads/*"], []),
        ("check_batch", ["uploads/*"], ["uploads/*"], ["training-input/*"]),
        (
            "validate_batch",
            ["uploads/*", "training-input/*", "base-models/*"],
            ["uploads/*", "base-models/*"],
            ["training-input/*"],
        ),
        ("build_training_request", [], ["class-images/*"], []),
        ("finish_run", ["models/*"], ["models/*"], []),
    ],
)
def test_each_lambda_reads_and_writes_only_its_prefixes(resources, handler, readable, listable, writable):
    """No Lambda writes uploads or models; CheckBatch and Validate write only the run's frozen input."""
    _, function = functions_by_handler(resources)[f"lambdas.handlers.{handler}.handler"]
    statements = role_statements(resources, function["Properties"]["Role"]["Fn::GetAtt"][0])
    s3 = [s for s in statements if any(a.startswith("s3:") for a in actions(s))]
    assert not any(a in {"s3:DeleteObject", "s3:*"} for s in s3 for a in actions(s))
    gets = json.dumps([s["Resource"] for s in s3 if "s3:GetObject" in actions(s)])
    puts = json.dumps([s["Resource"] for s in s3 if "s3:PutObject" in actions(s)])
    for prefix in [
        "uploads/*",
        "models/*",
        "base-models/*",
        "class-images/*",
        "checkpoints/*",
        "training-input/*",
    ]:
        assert (f'"/{prefix}"' in gets) == (prefix in readable), prefix
        assert (f'"/{prefix}"' in puts) == (prefix in writable), prefix
    lists = [s for s in s3 if "s3:ListBucket" in actions(s)]
    prefixes = sorted(p for s in lists for p in s["Condition"]["StringLike"]["s3:prefix"])
    assert prefixes == sorted(listable)


def test_every_function_is_told_the_deployments_limits(resources):
    from lambdas.jobs.limits import ServiceLimits
    from lambdas.pipeline import config

    for _, function in functions_by_handler(resources).values():
        limits = ServiceLimits.model_validate_json(
            function["Properties"]["Environment"]["Variables"][config.SERVICE_LIMITS]
        )
        assert limits == ServiceLimits()


def test_validation_has_the_memory_to_decode_photos_in_full(resources):
    _, function = functions_by_handler(resources)["lambdas.handlers.validate_batch.handler"]
    assert function["Properties"]["MemorySize"] >= 2048
    assert function["Properties"]["Timeout"] < 300  # the state machine's task timeout


def test_lambda_roles_carry_no_managed_policies(resources):
    for _, function in functions_by_handler(resources).values():
        role = resources[function["Properties"]["Role"]["Fn::GetAtt"][0]]
        assert "ManagedPolicyArns" not in role["Properties"]


def test_intake_may_start_executions_of_the_run_state_machine_only(resources):
    intake_id, intake = functions_by_handler(resources)["lambdas.handlers.upload_events.handler"]
    (state_machine_id,) = [
        k for k in of_type(resources, "AWS::StepFunctions::StateMachine") if k.startswith("PipelineRuns")
    ]
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


def test_intake_gets_only_the_table_actions_it_calls(resources):
    _, intake = functions_by_handler(resources)["lambdas.handlers.upload_events.handler"]
    table_id, _ = only(resources, "AWS::DynamoDB::Table")
    statements = role_statements(resources, intake["Properties"]["Role"]["Fn::GetAtt"][0])
    granted = sorted(a for s in statements for a in actions(s) if a.startswith("dynamodb:"))
    assert granted == ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]
    (statement,) = [s for s in statements if any(a.startswith("dynamodb:") for a in actions(s))]
    assert statement["Resource"] == {"Fn::GetAtt": [table_id, "Arn"]}
