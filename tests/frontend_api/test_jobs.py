"""frontend_api.jobs' pure parts: status from the pipeline's run record, progress from the training job."""

import pytest

from frontend_api.jobs import job_status, progress_of
from frontend_api.store import ApiJob

JOB = ApiJob(
    id="job-0123456789abcdef", job_name="dog", owner="account", created_at_ms=0, spec={}, fingerprint="f"
)


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (None, ("awaiting_upload", "no run yet")),
        ({"run_state": "collecting"}, ("collecting", "collecting")),
        ({"run_state": "sealed"}, ("validating", "sealed")),
        ({"run_state": "validated"}, ("validating", "validated")),
        ({"run_state": "training"}, ("training", "training")),
        ({"run_state": "succeeded"}, ("succeeded", "succeeded")),
        ({"run_state": "failed", "failure_kind": "invalid_batch"}, ("failed", "failed")),
        ({"run_state": "failed", "failure_kind": "training_stopped"}, ("stopped", "failed")),
    ],
)
def test_status_follows_the_runs_state(run, expected):
    assert job_status(JOB, run) == expected


def test_a_job_stopped_before_any_upload_is_cancelled():
    stopped = ApiJob(**{**JOB.__dict__, "stopped_at_ms": 5})
    assert job_status(stopped, None)[0] == "cancelled"


def test_progress_reads_the_trainers_metrics():
    described = {
        "SecondaryStatus": "Training",
        "HyperParameters": {"max_train_steps": "800"},
        "FinalMetricDataList": [
            {"MetricName": "train:step", "Value": 120.0},
            {"MetricName": "train:loss", "Value": 0.125},
            {"MetricName": "train:steps_per_second", "Value": 1.5},
        ],
    }
    progress = progress_of(described)
    assert (progress.step, progress.loss, progress.steps_per_second, progress.max_train_steps) == (
        120,
        0.125,
        1.5,
        800,
    )
    assert progress_of({"HyperParameters": {"max_train_steps": '"12"'}}).max_train_steps == 12
    assert progress_of({}).step is None
