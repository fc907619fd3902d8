"""Intake you can trust, in the synthesized state machine with the real handlers: what is checked is what
is trained, every file is accounted for, unusable names are reported, and limits hold."""

import io
import json

import pytest
from PIL import Image

from lambdas.jobs import failures, notification, s3_layout

from .support import (
    Subscriber,
    fake_trainer,
    jpeg,
    photos,
    requests_for,
    run_record,
    start_emulator,
    training_input,
    upload,
    upload_all,
)


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


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((300, 200), 60).convert("RGB").save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    return data[: len(data) // 2]  # the header is whole: only a full decode finds the cut


def test_late_uploads_after_the_seal_never_reach_the_runs_input_and_start_one_more_run(
    aws, subscriber, no_runner
):
    batch = {**photos(3), "job.json": b"{}"}
    upload_all(aws, "late", batch)
    first = aws.wait_for_training_job(len(aws.training_job_requests()) + 1)  # sealed and validated
    late = {"late 1.jpg": jpeg(41), "late 2.jpg": jpeg(42), "late.png": b"a text file named .png"}
    # Together, as one `aws s3 cp` would land them: one by one, a loaded machine can let the 1 s quiet
    # period pass between two of them and rightly make two more batches.
    upload_all(aws, "late", late)

    # Run 1 trains on exactly the sealed photos, byte for byte, whatever landed later.
    assert training_input(aws, first) == photos(3)
    aws.finish_training_job(first.name)
    second = aws.wait_for_training_job(len(aws.training_job_requests()) + 1)
    aws.finish_training_job(second.name)
    runs = aws.wait_for_runs("late", 2)
    assert [r["status"] for r in runs] == ["SUCCEEDED", "SUCCEEDED"]
    assert len(aws.runs("late")) == 2 and len(requests_for(aws, "late")) == 2

    # The late files are the next batch (the whole folder again, by the usual rules), checked as such.
    assert training_input(aws, second) == {**photos(3), "late 1.jpg": jpeg(41), "late 2.jpg": jpeg(42)}
    first_message, second_message = subscriber.messages("late", 2)
    assert first_message["payload"]["training"]["images"] == 3
    assert second_message["payload"]["training"]["images"] == 5
    assert second_message["payload"]["training"]["skipped"] == [
        {"file": "late.png", "reason": "not a JPEG, PNG, WebP, GIF or BMP image (looks like text)"}
    ]
    # The accepted listing names what run 1 trained on, with the ETags the seal saw.
    run_id = json.loads(runs[0]["input"])["run_id"]
    body = aws.boto3_client("s3").get_object(
        Bucket=aws.bucket, Key=s3_layout.accepted_listing_key("late", run_id)
    )["Body"]
    accepted = json.loads(body.read())["accepted"]
    assert [a["key"] for a in accepted] == [f"uploads/late/photo {i}.jpg" for i in range(3)]
    assert all(a["etag"] and a["size"] > 0 for a in accepted)


def test_unusable_files_among_good_photos_are_skipped_named_and_the_rest_trains(aws, subscriber, trainer):
    files = {
        **photos(4),
        "notes.png": b"I am a text file with the wrong name\n",
        "cut.jpg": truncated_jpeg(),
        ".DS_Store": b"\0\0\0\1Bud1",
        "../../../escape.jpg": jpeg(9),
        "photo 0.jpg.txt": b"a caption",
    }
    upload_all(aws, "mixed", files)
    (execution,) = aws.wait_for_runs("mixed")
    assert execution["status"] == "SUCCEEDED"
    (request,) = requests_for(aws, "mixed")
    assert training_input(aws, request) == {**photos(4), "photo 0.jpg.txt": b"a caption"}

    (message,) = subscriber.messages("mixed")
    training = message["payload"]["training"]
    assert training["images"] == 4
    skipped = {item["file"]: item["reason"] for item in training["skipped"]}
    assert set(skipped) == {"notes.png", "cut.jpg", "../../../escape.jpg"}
    assert "looks like text" in skipped["notes.png"]
    assert "image file is truncated" in skipped["cut.jpg"]
    assert "'..' folder" in skipped["../../../escape.jpg"]
    assert training["ignored"] == [".DS_Store"]


def test_strict_images_keeps_all_or_nothing(aws, subscriber, no_runner):
    upload_all(
        aws, "strict", {**photos(3), "bad.jpg": truncated_jpeg(), "job.json": b'{"strict_images": true}'}
    )
    (execution,) = aws.wait_for_runs("strict")
    assert execution["status"] == "FAILED"
    assert requests_for(aws, "strict") == []
    failure = subscriber.messages("strict")[0]["payload"]["failure"]
    assert failure["kind"] == failures.INVALID_BATCH
    assert {p["file"] for p in failure["problems"]} == {"(batch)", "bad.jpg"}


@pytest.mark.parametrize(
    ("folder", "says"),
    [("..", "is not a folder name"), ("é" * 101, "202 bytes long, over the 200-byte limit")],
)
def test_an_unusable_job_folder_gets_one_json_failure_saying_what_to_rename(
    aws, subscriber, no_runner, folder, says
):
    s3 = aws.boto3_client("s3")
    with aws.held_upload_events():
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            s3.put_object(Bucket=aws.bucket, Key=f"uploads/{folder}/{name}", Body=jpeg(1))
    (execution,) = aws.wait_for_runs(folder)
    assert execution["status"] == "FAILED"
    (message,) = subscriber.messages(folder)  # one notification for the whole folder
    payload = message["payload"]
    assert payload["schema"] == notification.SCHEMA and payload["status"] == "FAILED"
    assert payload["failure"]["kind"] == failures.INVALID_JOB_NAME
    assert says in payload["failure"]["reason"]
    assert "upload the photos again under a folder with a plain name" in payload["failure"]["reason"]
    assert "Traceback" not in message["Message"] and "/work/" not in message["Message"]
    run_id = json.loads(execution["input"])["run_id"]
    assert run_record(aws, folder, run_id)["run_state"] == "failed"  # never left collecting
    assert requests_for(aws, folder) == []


def test_photos_without_a_job_folder_get_a_failure_saying_where_photos_go(aws, subscriber, no_runner):
    s3 = aws.boto3_client("s3")
    with aws.held_upload_events():
        s3.put_object(Bucket=aws.bucket, Key="uploads//a.jpg", Body=jpeg(1))  # an empty folder name
        s3.put_object(Bucket=aws.bucket, Key="uploads/b.jpg", Body=jpeg(2))  # no folder at all
    (execution,) = aws.wait_for_runs("")
    assert execution["status"] == "FAILED"
    (message,) = subscriber.messages("")
    failure = message["payload"]["failure"]
    assert failure["kind"] == failures.INVALID_JOB_NAME
    assert "is empty or blank" in failure["reason"] and "uploads/my-dog/" in failure["reason"]
    assert requests_for(aws, "") == []


def test_jobs_over_the_deployment_limits_are_refused_naming_each_limit(aws, subscriber, no_runner):
    spec = {
        "instance_type": "ml.p5.48xlarge",
        "max_runtime_seconds": 28 * 24 * 3600,
        "hyperparameters": {"resolution": 2048},
    }
    upload_all(aws, "greedy", {**photos(3), "job.json": json.dumps(spec).encode()})
    (execution,) = aws.wait_for_runs("greedy")
    assert execution["status"] == "FAILED"
    assert requests_for(aws, "greedy") == []
    failure = subscriber.messages("greedy")[0]["payload"]["failure"]
    assert failure["kind"] == failures.INVALID_BATCH
    reasons = " ".join(p["problem"] for p in failure["problems"])
    for key in ("limit_instance_types", "limit_max_runtime_seconds", "limit_max_resolution"):
        assert f"'{key}'" in reasons
    assert "ml.p5.48xlarge is not allowed" in reasons


def test_a_local_path_as_base_model_is_refused(aws, subscriber, no_runner):
    upload_all(aws, "escape model", {**photos(3), "job.json": b'{"base_model": "../../etc"}'})
    (execution,) = aws.wait_for_runs("escape model")
    assert execution["status"] == "FAILED"
    (problem,) = subscriber.messages("escape model")[0]["payload"]["failure"]["problems"]
    assert problem["file"] == "job.json"
    assert "paths on the training machine are not accepted" in problem["problem"]


def test_sagemakers_own_output_stays_out_of_the_model_folder(aws, subscriber, trainer):
    upload_all(aws, "tidy", photos(3))
    (execution,) = aws.wait_for_runs("tidy")
    (request,) = requests_for(aws, "tidy")
    run_id = json.loads(execution["input"])["run_id"]
    assert request.output_s3_path == f"s3://{aws.bucket}/sagemaker-output/tidy/{run_id}/"
    assert not request.output_s3_path.startswith(request.model_output_s3_uri)


def test_a_photo_overwritten_after_the_seal_is_not_trained_in_its_new_version(
    aws, subscriber, trainer, monkeypatch
):
    import lambdas.pipeline.batch_validation as validation

    sort_batch = validation.sort_batch

    def overwrite_after_seal(job_name, objects):
        if job_name == "swapped":
            upload(aws, "swapped", "photo 0.jpg", b"not a photo any more")
        return sort_batch(job_name, objects)

    monkeypatch.setattr(validation, "sort_batch", overwrite_after_seal)
    upload_all(aws, "swapped", photos(4))
    first = aws.wait_for_runs("swapped")[0]
    monkeypatch.undo()
    assert first["status"] == "SUCCEEDED"
    request = requests_for(aws, "swapped")[0]
    assert set(training_input(aws, request)) == {"photo 1.jpg", "photo 2.jpg", "photo 3.jpg"}
    message = subscriber.messages("swapped")[0]["payload"]
    assert message["training"]["skipped"] == [
        {
            "file": "photo 0.jpg",
            "reason": "changed or deleted after the batch was sealed; "
            "the new version belongs to the next batch",
        }
    ]
    # The new version's event opened the next batch, which judges it on its own.
    assert len(aws.wait_for_runs("swapped", 2)) == 2


def test_when_describing_a_failure_fails_the_notification_is_still_the_documented_json(
    aws, subscriber, no_runner, monkeypatch
):
    import lambdas.pipeline.runs as runs

    def broken(*args, **kwargs):
        raise KeyError("something nobody expected")

    monkeypatch.setattr(runs, "_failure_of", broken)
    upload_all(aws, "undescribable", {**photos(3), "job.json": b'{"colour": "red"}'})
    (execution,) = aws.wait_for_runs("undescribable")
    assert execution["status"] == "FAILED"
    payload = subscriber.messages("undescribable")[0]["payload"]
    assert payload["schema"] == notification.SCHEMA and payload["status"] == "FAILED"
    assert payload["failure"]["kind"] == failures.INTERNAL
    assert payload["failure"]["reason"] == (
        "The run failed, and describing the failure failed as well (KeyError)."
    )
    run_id = json.loads(execution["input"])["run_id"]
    assert run_record(aws, "undescribable", run_id)["run_state"] == "failed"


def test_when_the_failure_step_itself_fails_the_state_machine_publishes_the_documented_json(
    aws, subscriber, no_runner, monkeypatch
):
    import lambdas.handlers.check_batch as check
    import lambdas.handlers.finish_run as handler

    def broken(*args, **kwargs):
        raise RuntimeError("table unavailable")

    monkeypatch.setattr(check, "check_batch", broken)  # fails while the batch is still collecting
    monkeypatch.setattr(handler, "finish_failed", broken)
    # One upload: a run that fails before its seal closes the batch, so further uploads would each open
    # (and fail) a run of their own.
    upload(aws, "fallback", "a.jpg", jpeg(1))
    (execution,) = aws.wait_for_runs("fallback")
    assert execution["status"] == "FAILED"
    (message,) = subscriber.messages("fallback")
    payload = message["payload"]
    assert payload["schema"] == notification.SCHEMA and payload["status"] == "FAILED"
    assert payload["job_name"] == "fallback" and payload["run_id"] == json.loads(execution["input"])["run_id"]
    assert payload["failure"]["kind"] == failures.INTERNAL
    assert "table unavailable" not in message["Message"]  # no internals, no stack trace
    # The state machine itself closed the batch and marked the run: nothing stays collecting.
    from lambdas.pipeline.runs_table import JobsTable

    run_id = payload["run_id"]
    assert run_record(aws, "fallback", run_id)["run_state"] == "failed"
    batch = JobsTable(aws.table_name, aws.boto3_client("dynamodb")).get_batch("fallback")
    assert batch.run_id == run_id and not batch.collecting
