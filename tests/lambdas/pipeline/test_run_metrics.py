"""lambdas/pipeline/run_metrics.py: the metric fields of FinishRun's log line, from its real result."""

import json

from lambdas.jobs import notification
from lambdas.jobs.failures import Failure
from lambdas.pipeline.run_metrics import log_fields


def result_with(payload: dict) -> dict:
    return {
        "status": payload.get("status"),
        "subject": "s",
        "message": json.dumps({"default": json.dumps(payload), "email": "text"}),
    }


def test_a_trained_run_carries_its_training_and_billable_seconds():
    payload = {
        "status": notification.SUCCEEDED,
        "durations": {"total_seconds": 900, "training_seconds": 600, "billable_seconds": 180},
    }
    assert log_fields(result_with(payload)) == {"training_seconds": 600, "billable_seconds": 180}


def test_a_failure_carries_its_kind_and_only_the_durations_it_has():
    payload = {
        "status": notification.FAILED,
        "durations": {"total_seconds": 5, "training_seconds": None, "billable_seconds": None},
        "failure": {"kind": "quota_exceeded"},
    }
    assert log_fields(result_with(payload)) == {"failure_kind": "quota_exceeded"}


def test_a_result_without_a_readable_message_gives_no_fields():
    assert log_fields({"status": "FAILED", "subject": "s", "message": "plain text"}) == {}
    assert log_fields({}) == {}


def test_the_fields_come_from_a_real_failure_notification():
    facts = notification.RunFacts(
        job_name="dog",
        run_id="20261205-120000-ab12",
        upload_prefix_uri="s3://b/uploads/dog/",
        use_spot=True,
        training_seconds=1200,
        billable_seconds=400,
    )
    message = notification.failure(facts, Failure(kind="training_failed", reason="CUDA out of memory"))
    result = {"status": notification.FAILED, "subject": message.subject, "message": message.sns_message()}
    assert log_fields(result) == {
        "training_seconds": 1200,
        "billable_seconds": 400,
        "failure_kind": "training_failed",
    }
