"""infra/workflow.py as synthesized: the run state machine's graph, Train state and permissions."""

import json
import re

import pytest

from dreambooth_trainer.metrics import METRIC_DEFINITIONS
from infra.workflow import REQUEST_FIELDS, THROTTLING_ERRORS

FAILURE_SINKS = {"NotifyFailure", "NotifyFailureFallback"}


def render(value) -> str:
    """A DefinitionString with references as readable placeholders, e.g. <TrainingRole.Arn>."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return value["Fn::Join"][0].join(render(part) for part in value["Fn::Join"][1])
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    if "Ref" in value:
        return "<{}>".format(value["Ref"])
    if "Fn::Sub" in value:
        return value["Fn::Sub"]
    if "Fn::Select" in value:  # e.g. the account and region parts of the ECR repository's ARN
        index, split = value["Fn::Select"]
        separator, source = split["Fn::Split"]
        return f"<{render(source)}{separator}[{index}]>"
    raise AssertionError(f"unexpected intrinsic {value}")


@pytest.fixture(scope="module")
def state_machine(resources):
    ((logical_id, resource),) = [
        (k, v)
        for k, v in resources.items()
        if v["Type"] == "AWS::StepFunctions::StateMachine" and k.startswith("PipelineRuns")
    ]
    return logical_id, resource


@pytest.fixture(scope="module")
def states(state_machine):
    return json.loads(render(state_machine[1]["Properties"]["DefinitionString"]))["States"]


def reaches(states, start: str, targets: set[str]) -> bool:
    """Whether every path from ``start`` (following Next and Choice branches) meets one of ``targets``."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in targets:
            continue
        if name in seen:
            continue
        seen.add(name)
        state = states[name]
        following = [state["Next"]] if "Next" in state else []
        following += [c["Next"] for c in state.get("Choices", [])]
        following += [state["Default"]] if "Default" in state else []
        if not following:
            return False  # an end state reached without passing a target
        todo.extend(following)
    return True


def test_standard_workflow_logs_everything_encrypted_and_traces(resources, state_machine):
    props = state_machine[1]["Properties"]
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    logging = props["LoggingConfiguration"]
    assert logging["Level"] == "ALL" and logging["IncludeExecutionData"] is True
    log_group = resources[
        logging["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    ]
    assert "KmsKeyId" in log_group["Properties"]
    assert log_group["Properties"]["LogGroupName"].startswith("/aws/vendedlogs/states/")


def test_train_is_create_training_job_sync_with_spot_fields_and_a_fixed_image_and_role(states):
    train = states["Train"]
    assert train["Resource"] == "arn:<AWS::Partition>:states:::sagemaker:createTrainingJob.sync"
    params = train["Parameters"]
    for field in REQUEST_FIELDS:
        assert params[f"{field}.$"] == f"$.request.{field}"
    assert {"CheckpointConfig.$", "StoppingCondition.$", "EnableManagedSpotTraining.$"} <= set(params)
    assert params["RoleArn"] == "<TrainingExecutionRole0CBEB7FB.Arn>"
    # The image the deploy built in CodeBuild, by its trainer_image/ hash tag (never a mutable "latest").
    assert re.search(
        r"<TrainingTrainerImageBuildRepository\w+>:[0-9a-f]{64}$",
        params["AlgorithmSpecification"]["TrainingImage"],
    )
    assert params["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS


def test_train_keeps_datetimes_out_of_the_state(states):
    selected = states["Train"]["ResultSelector"]
    assert set(selected) == {"TrainingJobName.$", "TrainingJobArn.$", "TrainingJobStatus.$"}


def test_only_throttling_is_retried_so_a_retry_cannot_collide_on_the_job_name(states):
    (retry,) = states["Train"]["Retry"]
    assert retry["ErrorEquals"] == THROTTLING_ERRORS
    assert all("Throttl" in error for error in retry["ErrorEquals"])


def test_every_task_catches_everything_and_every_failure_reaches_a_notification(states):
    tasks = [name for name, s in states.items() if s["Type"] == "Task"]
    assert {"CheckBatch", "Validate", "BuildTrainingRequest", "Train", "Summarize", "RecordFailure"} <= set(
        tasks
    )
    for name in tasks:
        if name in FAILURE_SINKS:
            continue
        catches = states[name]["Catch"]
        assert catches and catches[0]["ErrorEquals"] == ["States.ALL"], name
        if name == "Train":  # requeued on a quota error, else to the failure notification
            assert catches[0]["Next"] == "TrainingError"
            assert reaches(states, states["Requeue?"]["Default"], FAILURE_SINKS)
        elif name != "NotifySuccess":
            assert reaches(states, catches[0]["Next"], FAILURE_SINKS), name
    assert reaches(states, states["BatchValid?"]["Default"], FAILURE_SINKS)
    for sink in FAILURE_SINKS:
        assert states[sink]["Next"] == "RunFailed"
    assert states["RunFailed"]["Type"] == "Fail"


def test_the_batch_loop_waits_as_long_as_check_batch_says(states):
    assert states["WaitForUploads"] == {
        "Type": "Wait",
        "SecondsPath": "$.batch.wait_seconds",
        "Next": "CheckBatch",
    }
    assert states["BatchReady?"]["Default"] == "WaitForUploads"


def test_a_validated_run_waits_for_a_training_slot_before_any_request_is_built(states):
    assert states["BatchValid?"]["Choices"][0]["Next"] == "EnterQueue"
    assert states["EnterQueue"]["Result"] == {"quota_attempts": 0, "queued_ms": 0}
    assert states["EnterQueue"]["Next"] == "AcquireTrainingSlot"
    acquired = states["SlotAcquired?"]
    assert acquired["Choices"][0]["Next"] == "BuildTrainingRequest"
    assert acquired["Default"] == "WaitForTrainingSlot"
    assert states["WaitForTrainingSlot"] == {
        "Type": "Wait",
        "SecondsPath": "$.slot.wait_seconds",
        "Next": "AcquireTrainingSlot",
    }


def test_a_training_error_frees_the_slot_and_only_the_slot_step_decides_a_requeue(states):
    requeue = states["Requeue?"]
    assert requeue["Choices"][0]["Variable"] == "$.slot.requeue"
    assert requeue["Choices"][0]["Next"] == "WaitBeforeRequeue"
    assert states["WaitBeforeRequeue"]["Next"] == "AcquireTrainingSlot"
    assert requeue["Default"] == "TrainFailed"
    assert states["TrainFailed"]["Next"] == "RecordFailure"


def test_notifications_are_published_per_protocol(states):
    for name in ("NotifySuccess", "NotifyFailure"):
        params = states[name]["Parameters"]
        assert params["MessageStructure"] == "json"
        assert params["Message.$"] == "$.notification.message"


def statements(resources, state_machine):
    role_id = state_machine[1]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    return [
        s
        for p in resources.values()
        if p["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def as_list(action):
    return [action] if isinstance(action, str) else action


def test_state_machine_has_exactly_the_iam_create_training_job_sync_needs(resources, state_machine):
    found = statements(resources, state_machine)
    sagemaker = [s for s in found if any(a.startswith("sagemaker:") for a in as_list(s["Action"]))]
    assert sorted(a for s in sagemaker for a in as_list(s["Action"])) == [
        "sagemaker:AddTags",
        "sagemaker:CreateTrainingJob",
        "sagemaker:DescribeTrainingJob",
        "sagemaker:ListTags",
        "sagemaker:StopTrainingJob",
    ]
    assert all(render(s["Resource"]).endswith(":training-job/*") for s in sagemaker)
    pass_role = next(s for s in found if s["Action"] == "iam:PassRole")
    assert pass_role["Resource"] == {"Fn::GetAtt": ["TrainingExecutionRole0CBEB7FB", "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    events = next(s for s in found if "events:PutRule" in s["Action"])
    assert render(events["Resource"]).endswith(":rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule")
    kms = next(s for s in found if "kms:GenerateDataKey" in s["Action"])
    assert kms["Resource"] == {"Fn::GetAtt": ["NotificationsTopicKey847416DA", "Arn"]}


def test_training_jobs_can_be_created_only_on_the_allowed_instance_types(resources, state_machine):
    from lambdas.jobs.limits import DEFAULT_INSTANCE_TYPES

    found = statements(resources, state_machine)
    (create,) = [s for s in found if "sagemaker:CreateTrainingJob" in as_list(s["Action"])]
    assert as_list(create["Action"]) == ["sagemaker:CreateTrainingJob"]
    assert create["Condition"] == {
        "ForAllValues:StringEquals": {"sagemaker:InstanceTypes": list(DEFAULT_INSTANCE_TYPES)},
        "Null": {"sagemaker:InstanceTypes": "false"},
    }
    assert "ml.p5.48xlarge" not in json.dumps(create)


def test_the_instance_allow_list_in_iam_follows_the_limit_context_key():
    from local_aws import synthesize

    context = {
        "limit_instance_types": "ml.g5.xlarge,ml.p4d.24xlarge",
        "default_instance_type": "ml.g5.xlarge",
    }
    template = synthesize(context, stack_name="LimitCtx")
    policies = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"]
    conditions = [
        s["Condition"]
        for p in policies
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if "sagemaker:CreateTrainingJob" in as_list(s["Action"])
    ]
    assert conditions == [
        {
            "ForAllValues:StringEquals": {"sagemaker:InstanceTypes": ["ml.g5.xlarge", "ml.p4d.24xlarge"]},
            "Null": {"sagemaker:InstanceTypes": "false"},
        }
    ]


def test_the_fallback_failure_message_is_the_documented_json(states):
    payload = states["DescribeFailureFallback"]["Parameters"]
    assert payload["schema"] == "dreambooth.run-result/1" and payload["status"] == "FAILED"
    assert payload["job_name.$"] == "$.job_name" and payload["failure"]["kind"] == "internal_error"
    message = states["NotifyFailureFallback"]["Parameters"]["Message.$"]
    assert message == "States.JsonToString($.fallback_payload)"


def test_the_fallback_closes_the_batch_and_fails_the_run_before_notifying(states):
    assert states["DescribeFailureFallback"]["Next"] == "CloseBatchFallback"
    close, mark = states["CloseBatchFallback"], states["MarkRunFailedFallback"]
    assert close["Resource"].endswith(":states:::aws-sdk:dynamodb:updateItem")
    assert close["Parameters"]["ConditionExpression"] == "run_id = :run AND batch_state = :collecting"
    assert close["Next"] == "MarkRunFailedFallback" and close["Catch"][0]["Next"] == "MarkRunFailedFallback"
    assert mark["Parameters"]["ExpressionAttributeValues"] == {":failed": {"S": "failed"}}
    assert mark["Next"] == mark["Catch"][0]["Next"] == "NotifyFailureFallback"
