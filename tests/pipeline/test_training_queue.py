"""The queue in front of the GPU quota (emulator): at most N training jobs at once, the rest in order."""

from __future__ import annotations

import json
import time

import pytest

from lambdas.jobs import batch_state, failures
from local_aws import TrainingOutcome

from .support import Subscriber, requests_for, run_record, start_emulator, states_entered, upload_photos

LIMIT = 2


@pytest.fixture(scope="module")
def aws():
    emulator = start_emulator(max_concurrent_training_jobs=LIMIT)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def subscriber(aws):
    return Subscriber(aws)


def run_id_of(aws, job: str) -> str:
    aws._poll(lambda: len(aws.runs(job)) == 1, 30, f"the run of {job!r}")
    execution = aws.boto3_client("stepfunctions").describe_execution(
        executionArn=aws.runs(job)[0]["executionArn"]
    )
    return json.loads(execution["input"])["run_id"]


def wait_for_state(aws, job: str, state: str, timeout: float = 30) -> None:
    run_id = run_id_of(aws, job)
    aws._poll(
        lambda: (run_record(aws, job, run_id) or {}).get("run_state") == state, timeout, f"{job} {state}"
    )


def test_runs_beyond_the_limit_wait_in_arrival_order_and_a_failed_run_frees_its_slot(
    aws, subscriber, no_runner
):
    jobs = ["queue a", "queue b", "queue c", "queue d"]
    for job in jobs[:LIMIT]:
        upload_photos(aws, job, 3)
    first, second = aws.wait_for_training_job(1), aws.wait_for_training_job(2)
    for job in jobs[LIMIT:]:  # one after the other: their arrival order is the queue's order
        upload_photos(aws, job, 3)
        wait_for_state(aws, job, batch_state.RUN_QUEUED)

    time.sleep(3)  # several polls of the waiting runs: still only LIMIT jobs
    assert len(aws.training_job_requests()) == LIMIT
    assert {r.name for r in (first, second)} == {requests_for(aws, j)[0].name for j in jobs[:LIMIT]}

    aws.finish_training_job(requests_for(aws, "queue a")[0].name, TrainingOutcome("Failed", "CUDA error"))
    third = aws.wait_for_training_job(3)
    assert third.name == requests_for(aws, "queue c")[0].name  # c arrived before d
    time.sleep(2)
    assert len(aws.training_job_requests()) == 3  # b and c hold the two slots

    aws.finish_training_job(requests_for(aws, "queue b")[0].name)
    fourth = aws.wait_for_training_job(4)
    assert fourth.name == requests_for(aws, "queue d")[0].name
    for job in ("queue c", "queue d"):
        aws.finish_training_job(requests_for(aws, job)[0].name)

    results = {job: aws.wait_for_runs(job)[0] for job in jobs}
    assert results["queue a"]["status"] == "FAILED"
    assert subscriber.messages("queue a")[0]["payload"]["failure"]["kind"] == failures.TRAINING_FAILED
    for job in jobs[1:]:
        assert results[job]["status"] == "SUCCEEDED", job
    entered = states_entered(aws, results["queue d"]["executionArn"])
    assert "WaitForTrainingSlot" in entered
    waited = subscriber.messages("queue d")[0]["payload"]["durations"]["queued_seconds"]
    assert waited >= 3
    assert subscriber.messages("queue b")[0]["payload"]["durations"]["queued_seconds"] == 0
