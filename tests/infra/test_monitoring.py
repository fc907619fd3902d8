"""infra/monitoring.py: alarms to the right topic, metric filters on FinishRun's log line, the dashboard."""

import json

import pytest

from app import build_app
from lambdas.pipeline import run_metrics


def of_type(resources, kind):
    return {k: r for k, r in resources.items() if r["Type"] == kind}


def alarms(resources):
    return {
        k.removeprefix("Monitoring")[:-8]: r["Properties"]
        for k, r in of_type(resources, "AWS::CloudWatch::Alarm").items()
    }


def logical_id(resources, kind, prefix):
    (found,) = [k for k in of_type(resources, kind) if k.startswith(prefix)]
    return found


def test_four_alarms_watch_failures_the_dead_letter_queue_the_failure_rate_and_stuck_runs(resources):
    found = alarms(resources)
    assert set(found) == {"RunsFailed", "UploadEventsInDeadLetterQueue", "TrainingFailureRate", "RunStuck"}
    state_machine = logical_id(resources, "AWS::StepFunctions::StateMachine", "PipelineRunsStateMachine")
    failed = found["RunsFailed"]
    assert (failed["Namespace"], failed["MetricName"], failed["Threshold"]) == (
        "AWS/States",
        "ExecutionsFailed",
        1,
    )
    assert failed["Dimensions"] == [{"Name": "StateMachineArn", "Value": {"Ref": state_machine}}]

    dlq = found["UploadEventsInDeadLetterQueue"]
    assert dlq["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert (dlq["ComparisonOperator"], dlq["Threshold"]) == ("GreaterThanThreshold", 0)
    assert dlq["Dimensions"][0]["Value"]["Fn::GetAtt"][0].startswith("PipelineUploadEventsDLQ")

    rate = found["TrainingFailureRate"]
    (expression,) = [m for m in rate["Metrics"] if "Expression" in m]
    assert "100 * failed / (failed + succeeded)" in expression["Expression"]
    inputs = {m["Id"]: m["MetricStat"]["Metric"] for m in rate["Metrics"] if "MetricStat" in m}
    assert inputs["failed"]["MetricName"] == "TrainingJobsFailed"
    assert inputs["succeeded"]["MetricName"] == "RunsSucceeded"
    assert inputs["failed"]["Namespace"] == {"Fn::Join": ["", ["DreamBooth/", {"Ref": "AWS::StackName"}]]}
    assert rate["Threshold"] == 50

    stuck = {m["Id"]: m for m in found["RunStuck"]["Metrics"]}
    assert stuck["train"]["MetricStat"]["Metric"]["MetricName"] == "ServiceIntegrationsTimedOut"
    assert stuck["runs"]["MetricStat"]["Metric"]["MetricName"] == "ExecutionsTimedOut"
    assert stuck["steps"]["MetricStat"]["Metric"]["MetricName"] == "RunsTimedOut"
    assert "createTrainingJob.sync" in json.dumps(stuck["train"]["MetricStat"]["Metric"]["Dimensions"])
    assert all(a["TreatMissingData"] == "notBreaching" for a in found.values())


def test_by_default_alarms_go_to_the_notification_topic_which_cloudwatch_may_use(resources):
    topic = logical_id(resources, "AWS::SNS::Topic", "NotificationsJobEvents")
    for alarm in alarms(resources).values():
        assert alarm["AlarmActions"] == [{"Ref": topic}]
    policies = [
        p["Properties"]
        for p in of_type(resources, "AWS::SNS::TopicPolicy").values()
        if {"Ref": topic} in p["Properties"]["Topics"]
    ]
    statements = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    assert any(
        s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"} and s["Action"] == "sns:Publish"
        for s in statements
    )
    key = resources[topic]["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key_statements = resources[key]["Properties"]["KeyPolicy"]["Statement"]
    assert any(
        "cloudwatch.amazonaws.com" in json.dumps(s.get("Principal")) and "kms:GenerateDataKey*" in s["Action"]
        for s in key_statements
    )


def test_an_ops_email_gets_its_own_encrypted_alarm_topic():
    template = (
        build_app(
            {"stack_name": "Ops", "notification_email": "owner@example.com", "ops_email": "ops@example.com"}
        )
        .synth()
        .get_stack_by_name("Ops")
        .template
    )
    resources = template["Resources"]
    ops = logical_id(resources, "AWS::SNS::Topic", "MonitoringOpsAlarms")
    assert "KmsMasterKeyId" in resources[ops]["Properties"]
    subscriptions = {
        s["Properties"]["Endpoint"]: s["Properties"]["TopicArn"]
        for s in of_type(resources, "AWS::SNS::Subscription").values()
        if s["Properties"]["Protocol"] == "email"
    }
    assert subscriptions["ops@example.com"] == {"Ref": ops}
    for alarm in alarms(resources).values():
        assert alarm["AlarmActions"] == [{"Ref": ops}]
    assert template["Outputs"]["AlarmTopicArn"]["Value"] == {"Ref": ops}


def test_an_existing_alarm_topic_is_used_as_given():
    arn = "arn:aws:sns:eu-west-1:111122223333:platform-alarms"
    resources = (
        build_app({"stack_name": "Ext", "alarm_topic_arn": arn})
        .synth()
        .get_stack_by_name("Ext")
        .template["Resources"]
    )
    for alarm in alarms(resources).values():
        assert alarm["AlarmActions"] == [arn]


def test_metric_filters_read_finish_runs_log_line_by_the_names_the_handler_writes(resources):
    finish_run_logs = logical_id(resources, "AWS::Logs::LogGroup", "PipelineFinishRunLogs")
    filters = {
        r["Properties"]["MetricTransformations"][0]["MetricName"]: r["Properties"]
        for r in of_type(resources, "AWS::Logs::MetricFilter").values()
    }
    assert set(filters) == {
        "TrainingSeconds",
        "BillableSeconds",
        "RunsSucceeded",
        "TrainingJobsFailed",
        "RunsTimedOut",
    }
    for props in filters.values():
        assert props["LogGroupName"] == {"Ref": finish_run_logs}
        assert props["FilterPattern"].startswith(f'{{ ($.message = "{run_metrics.LOG_MESSAGE}") && (')
    for name, field in [
        ("TrainingSeconds", run_metrics.TRAINING_SECONDS),
        ("BillableSeconds", run_metrics.BILLABLE_SECONDS),
    ]:
        assert f"$.{field} >= 0" in filters[name]["FilterPattern"]
        assert filters[name]["MetricTransformations"][0]["MetricValue"] == f"$.{field}"
    assert '$.status = "SUCCEEDED"' in filters["RunsSucceeded"]["FilterPattern"]
    failed = filters["TrainingJobsFailed"]["FilterPattern"]
    assert '$.failure_kind = "training_failed" || $.failure_kind = "training_stopped"' in failed
    assert '$.failure_kind = "timed_out"' in filters["RunsTimedOut"]["FilterPattern"]
    for name in ["RunsSucceeded", "TrainingJobsFailed", "RunsTimedOut"]:
        assert filters[name]["MetricTransformations"][0]["MetricValue"] == "1"


@pytest.fixture(scope="module")
def dashboard_body(resources):
    (dashboard,) = of_type(resources, "AWS::CloudWatch::Dashboard").values()
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else "<ref>" for p in parts)


def test_dashboard_shows_runs_queues_minutes_and_spot_savings(dashboard_body):
    body = json.loads(dashboard_body.replace('"<ref>"', '"ref"').replace("<ref>", "ref"))
    titles = [w["properties"].get("title") for w in body["widgets"]]
    assert titles == [
        "Runs by status (per day)",
        "Upload queue depth",
        "Training and billable minutes (per day)",
        "Spot savings (%, per day)",
        "Training jobs (SageMaker via Step Functions)",
        "Alarms",
    ]
    for metric in [
        "ExecutionsStarted",
        "ExecutionsSucceeded",
        "ExecutionsFailed",
        "ExecutionsAborted",
        "ExecutionsTimedOut",
    ]:
        assert metric in dashboard_body
    assert "ApproximateNumberOfMessagesVisible" in dashboard_body
    assert "training / 60" in dashboard_body and "billable / 60" in dashboard_body
    assert "100 * (training - billable) / training" in dashboard_body
    assert '"period":86400' in dashboard_body


def test_outputs_name_the_dashboard(template):
    url = template.find_outputs("DashboardUrl")["DashboardUrl"]["Value"]
    assert "#dashboards:name=" in json.dumps(url)
