"""A run from photos to notification, in the CDK-synthesized state machine, with the real handlers."""

import json
import re
import time

import pytest

from dreambooth_trainer.hyperparameters import parse_hyperparameters
from dreambooth_trainer.metrics import METRIC_DEFINITIONS
from lambdas.jobs import failures, naming, s3_layout
from local_aws import TrainingOutcome

from .support import (
    Subscriber,
    fake_trainer,
    jpeg,
    photos,
    requests_for,
    run_record,
    start_emulator,
    states_entered,
    upload,
    upload_all,
    upload_photos,
)

# moto's SageMaker model has no ThrottlingException shape; the error still reaches the client intact.
pytestmark = pytest.mark.filterwarnings("ignore:Exception\\(SageMakerApiError\\):UserWarning")


@pytest.fixture(scope="module")
def aws():
    emulator = start_emulator()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def subscriber(aws):
    return Subscriber(aws)


@pytest.fixture
def trainer(aws):
    aws.set_training_runner(fake_trainer(aws))
    yield
    aws.set_training_runner(None)


def test_photos_become_a_model_and_the_notification_names_the_prefix_the_trainer_wrote_to(
    aws, subscriber, trainer
):
    upload_photos(aws, "my dog", 3)
    (execution,) = aws.wait_for_runs("my dog")
    assert execution["status"] == "SUCCEEDED"

    (request,) = requests_for(aws, "my dog")
    run_id = json.loads(execution["input"])["run_id"]
    assert request.name == execution["name"] == naming.training_job_name("my dog", run_id)
    model_prefix = f"s3://{aws.bucket}/models/my dog/{run_id}/"
    assert request.model_output_s3_uri == model_prefix
    assert parse_hyperparameters(request.hyperparameters).instance_prompt == "a photo of sks person"

    (message,) = subscriber.messages("my dog")
    payload = message["payload"]
    assert payload["status"] == "SUCCEEDED"
    assert payload["model"]["s3_prefix"] == request.model_output_s3_uri
    assert payload["model"]["diffusers_folder"] == model_prefix
    assert payload["model"]["samples"] == [model_prefix + "samples/0.png"]
    assert payload["model"]["complete"] is True  # the runner wrote _SUCCESS last, as the trainer does
    assert payload["prompt"] == "a photo of sks person"
    assert payload["training"]["images"] == 3
    assert payload["durations"]["billable_seconds"] == 400
    assert message["Subject"] == "DreamBooth model ready: my dog"

    record = run_record(aws, "my dog", run_id)
    assert record["run_state"] == "succeeded"
    assert record["details"]["model"]["s3_prefix"] == model_prefix


def test_the_training_job_request_is_complete_and_spot_by_default(aws, subscriber, trainer):
    upload_photos(aws, "request check", 3)
    aws.wait_for_runs("request check")
    (job,) = requests_for(aws, "request check")
    request = job.request
    assert job.image == aws.outputs["TrainerImageUri"]
    assert request["RoleArn"].endswith("TrainingExecutionRole0CBEB7FB")
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    assert request["EnableManagedSpotTraining"] is True
    assert (
        request["StoppingCondition"]["MaxWaitTimeInSeconds"]
        >= request["StoppingCondition"]["MaxRuntimeInSeconds"]
    )
    run_id = job.name.removeprefix(naming.job_slug("request check") + "-")
    assert job.checkpoint_s3_uri == f"s3://{aws.bucket}/checkpoints/request check/{run_id}/"
    assert request["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert {"Key": "dreambooth:job", "Value": "request check"} in request["Tags"]
    assert {"Key": "dreambooth:run", "Value": run_id} in request["Tags"]
    # Prior preservation is on by default: the trainer is told where to share the class images it
    # generates; nothing is shared yet, so there is no class_images channel.
    shared = parse_hyperparameters(job.hyperparameters).class_images_output_s3_uri
    assert re.fullmatch(rf"s3://{aws.bucket}/class-images/[0-9a-f]{{16}}/", shared)
    assert "class_images" not in job.channels


def test_class_images_one_run_shares_are_the_next_runs_class_images_channel(aws, subscriber, no_runner):
    finish = fake_trainer(aws)

    def sharing_trainer(job):
        """What the trainer does after generating class images: put them under class_images_output_s3_uri."""
        bucket, prefix = s3_layout.split_s3_uri(
            parse_hyperparameters(job.hyperparameters).class_images_output_s3_uri
        )
        aws.boto3_client("s3").put_object(Bucket=bucket, Key=f"{prefix}{job.name}-0.png", Body=_png(8, 8))
        return finish(job)

    aws.set_training_runner(sharing_trainer)
    otter = {"job.json": json.dumps({"class_word": "otter"}).encode()}
    upload_all(aws, "otter one", {**photos(3), **otter})
    (first_run,) = aws.wait_for_runs("otter one")
    upload_all(aws, "otter two", {**photos(3), **otter})
    (second_run,) = aws.wait_for_runs("otter two")
    assert first_run["status"] == second_run["status"] == "SUCCEEDED"

    (first,) = requests_for(aws, "otter one")
    (second,) = requests_for(aws, "otter two")
    shared = parse_hyperparameters(first.hyperparameters).class_images_output_s3_uri
    assert parse_hyperparameters(second.hyperparameters).class_images_output_s3_uri == shared
    assert "class_images" not in first.channels
    assert second.channels["class_images"] == shared


def test_a_failed_training_job_is_reported_with_its_reason(aws, subscriber, no_runner):
    aws.set_training_runner(
        lambda job: TrainingOutcome(
            "Failed", "CUDA out of memory", training_seconds=300, billable_seconds=120
        )
    )
    upload_photos(aws, "oom", 3)
    (execution,) = aws.wait_for_runs("oom")
    assert execution["status"] == "FAILED"
    (message,) = subscriber.messages("oom")
    failure = message["payload"]["failure"]
    assert failure["kind"] == failures.TRAINING_FAILED
    assert "CUDA out of memory" in failure["reason"]
    assert message["payload"]["durations"]["billable_seconds"] == 120
    run_id = json.loads(execution["input"])["run_id"]
    assert run_record(aws, "oom", run_id)["run_state"] == "failed"


def test_an_invalid_batch_is_reported_file_by_file_and_no_job_is_created(aws, subscriber, no_runner):
    files = {
        "good.jpg": jpeg(1),
        "tiny.png": _png(16, 16),
        "IMG_0001.HEIC": b"\x00\x00\x00\x18ftypheic" + b"\0" * 64,
        "good.jpg.txt": b"a caption is fine",
        "job.json": b'{"class_word": "dog", "colour": "red"}',
    }
    upload_all(aws, "bad batch", files)
    (execution,) = aws.wait_for_runs("bad batch")
    assert execution["status"] == "FAILED"
    assert requests_for(aws, "bad batch") == []
    assert "Train" not in states_entered(aws, execution["executionArn"])

    (message,) = subscriber.messages("bad batch")
    failure = message["payload"]["failure"]
    assert failure["kind"] == failures.INVALID_BATCH
    problems = {p["file"]: p["problem"] for p in failure["problems"]}
    assert set(problems) == {"tiny.png", "IMG_0001.HEIC", "(batch)", "job.json"}
    assert "16x16 px is too small" in problems["tiny.png"]
    assert "HEIC" in problems["IMG_0001.HEIC"]
    assert "colour: unknown field" in problems["job.json"]


def test_a_zero_gpu_quota_is_requeued_a_bounded_number_of_times_then_says_how_to_raise_it(
    aws, subscriber, no_runner
):
    # FAST_CONTEXT: 3 requeues (the emulator's default), waiting 1 s, 2 s, 4 s.
    aws.reject_create_training_job(
        "ResourceLimitExceeded",
        "The account-level service limit 'ml.g4dn.xlarge for spot training job usage' is 0 Instances, with "
        "current utilization of 0 Instances and a request delta of 1 Instances.",
        times=4,
    )
    upload_photos(aws, "no quota", 3)
    (execution,) = aws.wait_for_runs("no quota", timeout=90)
    assert execution["status"] == "FAILED"
    assert requests_for(aws, "no quota") == []
    (message,) = subscriber.messages("no quota")
    failure = message["payload"]["failure"]
    assert failure["kind"] == failures.QUOTA
    assert "'ml.g4dn.xlarge for spot training job usage'" in failure["reason"]
    assert any("Service Quotas" in line for line in failure["advice"])
    entered = states_entered(aws, execution["executionArn"])
    assert [n for n in entered if n == "Train"] == ["Train"] * 4
    assert [n for n in entered if n == "WaitBeforeRequeue"] == ["WaitBeforeRequeue"] * 3


def test_a_quota_error_that_clears_while_requeued_ends_in_one_trained_model(aws, subscriber, trainer):
    aws.reject_create_training_job(
        "ResourceLimitExceeded", "limit 'ml.g4dn.xlarge for training' is 0", times=2
    )
    upload_photos(aws, "quota later", 3)
    (execution,) = aws.wait_for_runs("quota later", timeout=90)
    assert execution["status"] == "SUCCEEDED"
    assert len(requests_for(aws, "quota later")) == 1
    assert subscriber.messages("quota later")[0]["payload"]["status"] == "SUCCEEDED"


def test_throttled_creates_are_retried_into_exactly_one_job(aws, subscriber, trainer):
    aws.reject_create_training_job("ThrottlingException", "Rate exceeded", times=2)
    upload_photos(aws, "throttled", 3)
    (execution,) = aws.wait_for_runs("throttled")
    assert execution["status"] == "SUCCEEDED"
    assert len(requests_for(aws, "throttled")) == 1
    failed_attempts = [
        e for e in aws.execution_history(execution["executionArn"]) if e["type"] == "TaskFailed"
    ]
    assert len(failed_attempts) == 2
    assert subscriber.messages("throttled")[0]["payload"]["status"] == "SUCCEEDED"


def test_a_lambda_error_reaches_the_failure_notification_and_frees_the_job_for_a_new_run(
    aws, subscriber, trainer, monkeypatch
):
    import lambdas.handlers.build_training_request as handler

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(handler, "training_request", broken)
    upload_photos(aws, "lambda error", 3)
    (execution,) = aws.wait_for_runs("lambda error")
    assert execution["status"] == "FAILED"
    (message,) = subscriber.messages("lambda error")
    failure = message["payload"]["failure"]
    assert failure["kind"] == failures.INTERNAL
    assert failure["reason"] == "The building the training request step failed: RuntimeError: disk full"

    monkeypatch.undo()
    upload(aws, "lambda error", "job.json", b"{}")
    first, second = aws.wait_for_runs("lambda error", 2)
    assert second["status"] == "SUCCEEDED"


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_same_batch_uploaded_again_while_its_run_trains_starts_no_second_job(aws, subscriber, no_runner):
    files = {**photos(3), "job.json": b"{}"}
    upload_all(aws, "twice", files)
    first = aws.wait_for_training_job(count=len(aws.training_job_requests()) + 1)
    upload_all(aws, "twice", files)  # a retried client or a second `run`: new versions, same content
    time.sleep(3)  # several quiet periods and commit settles of the fast settings
    assert len(aws.runs("twice")) == 1
    assert len(requests_for(aws, "twice")) == 1
    aws.finish_training_job(first.name)
    (execution,) = aws.wait_for_runs("twice")
    assert execution["status"] == "SUCCEEDED"
    assert len(subscriber.messages("twice")) == 1
