"""One batch, one run: quiet periods, job.json commits, duplicate, late and concurrent deliveries."""

import json
import threading
import time

import pytest

from .support import (
    Subscriber,
    fake_trainer,
    jpeg,
    photos,
    requests_for,
    start_emulator,
    states_entered,
    upload,
    upload_one_by_one,
    upload_photos,
)

QUIET = 6  # long enough to tell a job.json commit (noticed within a second) from a quiet period


@pytest.fixture(scope="module")
def aws():
    emulator = start_emulator(default_quiet_period_seconds=QUIET)
    emulator.set_training_runner(fake_trainer(emulator))
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def subscriber(aws):
    return Subscriber(aws)


def images_trained(subscriber, job: str, count: int = 1) -> list[int]:
    return [m["payload"]["training"]["images"] for m in subscriber.messages(job, count)]


def test_uploads_closer_together_than_the_quiet_period_make_one_run(aws, subscriber):
    for i in range(3):
        upload(aws, "quiet", f"{i}.jpg", jpeg(i))
        time.sleep(0.5)
    last_upload = time.monotonic()
    (execution,) = aws.wait_for_runs("quiet", timeout=60)
    assert execution["status"] == "SUCCEEDED"
    assert time.monotonic() - last_upload >= QUIET - 0.6
    assert "WaitForUploads" in states_entered(aws, execution["executionArn"])
    assert len(requests_for(aws, "quiet")) == 1
    assert images_trained(subscriber, "quiet") == [3]


def test_job_json_commits_the_batch_without_waiting_out_the_quiet_period(aws, subscriber):
    upload_photos(aws, "committed", 3)
    upload(aws, "committed", "job.json", json.dumps({"token": "zwx", "class_word": "dog"}).encode())
    committed_at = time.monotonic()
    aws.wait_for_training_job(len(aws.training_job_requests()) + 1, timeout=30)
    assert time.monotonic() - committed_at < QUIET - 2
    (execution,) = aws.wait_for_runs("committed")
    assert execution["status"] == "SUCCEEDED"
    assert subscriber.messages("committed")[0]["payload"]["prompt"] == "a photo of zwx dog"


def test_duplicate_deliveries_before_and_after_sealing_start_one_run(aws, subscriber):
    with aws.held_upload_events() as release:
        keys = upload_one_by_one(aws, "duplicates", photos(3))
        release(lambda events: [e for e in events for _ in range(2)])
    assert len(aws.runs("duplicates")) == 1
    keys.append(upload(aws, "duplicates", "job.json", b"{}"))
    aws.wait_for_training_job(len(aws.training_job_requests()) + 1, timeout=30)  # sealed by now
    for key in keys:
        aws.redeliver_upload_event(key)
    assert len(aws.runs("duplicates")) == 1
    (execution,) = aws.wait_for_runs("duplicates")
    assert execution["status"] == "SUCCEEDED"
    assert len(aws.runs("duplicates")) == 1
    assert images_trained(subscriber, "duplicates") == [3]


def test_photo_events_arriving_after_their_job_json_neither_split_nor_restart_the_batch(aws, subscriber):
    with aws.held_upload_events() as release:
        keys = upload_one_by_one(aws, "reordered", photos(3))
        upload(aws, "reordered", "job.json", b"{}")
        release(lambda events: [e for e in events if e.object_key.endswith("job.json")])
    aws.wait_for_training_job(len(aws.training_job_requests()) + 1, timeout=30)
    for key in reversed(keys):  # late, and in reverse order
        aws.redeliver_upload_event(key)
    (execution,) = aws.wait_for_runs("reordered")
    assert execution["status"] == "SUCCEEDED"
    assert len(aws.runs("reordered")) == 1
    assert images_trained(subscriber, "reordered") == [3]


def test_concurrent_uploads_join_one_run(aws, subscriber):
    threads = [
        threading.Thread(target=upload_one_by_one, args=(aws, "concurrent", photos(2, start)))
        for start in (0, 2, 4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(aws.runs("concurrent")) == 1
    upload(aws, "concurrent", "job.json", b"{}")
    (execution,) = aws.wait_for_runs("concurrent")
    assert execution["status"] == "SUCCEEDED"
    assert images_trained(subscriber, "concurrent") == [6]


def test_an_upload_after_a_run_started_is_a_new_run_of_the_whole_folder(aws, subscriber):
    first_photos = upload_photos(aws, "again", 3)
    upload(aws, "again", "job.json", b"{}")
    (first,) = aws.wait_for_runs("again")
    upload_photos(aws, "again", 1, start=3)
    upload(aws, "again", "job.json", b"{}")  # the same file, uploaded again: a new commit
    first, second = aws.wait_for_runs("again", 2)
    assert first["status"] == second["status"] == "SUCCEEDED"
    for key in first_photos:  # a late duplicate of the first batch starts nothing
        aws.redeliver_upload_event(key)
    assert len(aws.runs("again")) == 2

    runs = [json.loads(e["input"])["run_id"] for e in (first, second)]
    assert runs[0] != runs[1]
    messages = subscriber.messages("again", 2)
    prefixes = [m["payload"]["model"]["s3_prefix"] for m in messages]
    assert prefixes == [f"s3://{aws.bucket}/models/again/{run}/" for run in runs]
    assert [m["payload"]["training"]["images"] for m in messages] == [3, 4]
    assert len(requests_for(aws, "again")) == 2
