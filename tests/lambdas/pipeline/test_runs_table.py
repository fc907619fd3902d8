"""The jobs table's conditional writes: the only thing between one upload burst and two GPU bills."""

from datetime import UTC, datetime

import pytest

from lambdas.jobs import batch_state
from lambdas.pipeline.runs_table import AlreadySeen, Conflict, JobsTable

TOKEN = batch_state.object_token("uploads/rex/a.jpg", "etag", datetime(2026, 11, 24, tzinfo=UTC))


@pytest.fixture
def table(jobs_dynamodb):
    return JobsTable("jobs", jobs_dynamodb)


CONTENT = batch_state.content_token("uploads/rex/a.jpg", "etag")


def open_run(table, run_id, previous=None, token=TOKEN, now=1000, content=CONTENT):
    table.open_batch(
        "rex",
        run_id,
        previous_run_id=previous,
        token=token,
        key="uploads/rex/a.jpg",
        content=content,
        committed=False,
        now_ms=now,
        execution_name=f"rex-{run_id}",
    )


def test_only_one_of_two_concurrent_openers_wins(table):
    open_run(table, "r1")
    with pytest.raises(Conflict):
        open_run(table, "r2", token="other")
    assert table.get_batch("rex").run_id == "r1"


def test_a_seen_object_cannot_open_a_new_run_after_its_batch_sealed(table):
    open_run(table, "r1")
    assert table.seal("rex", "r1", last_activity_ms=1000, now_ms=2000)
    with pytest.raises(AlreadySeen):
        open_run(table, "r2", previous="r1")
    open_run(table, "r2", previous="r1", token="new-upload")
    assert table.get_batch("rex").run_id == "r2"


def test_an_upload_between_reading_and_sealing_keeps_the_batch_open(table):
    open_run(table, "r1")
    table.join_batch(
        "rex", "r1", token="t2", key="uploads/rex/b.jpg", content="c2", committed=True, now_ms=1500
    )
    assert not table.seal("rex", "r1", last_activity_ms=1000, now_ms=2000)
    batch = table.get_batch("rex")
    assert batch.collecting and batch.committed and batch.last_activity_ms == 1500
    assert table.seal("rex", "r1", last_activity_ms=1500, now_ms=2000)
    assert table.get_run("rex", "r1")["run_state"] == batch_state.RUN_SEALED


def test_a_sealed_batch_refuses_joins(table):
    open_run(table, "r1")
    table.seal("rex", "r1", last_activity_ms=1000, now_ms=2000)
    with pytest.raises(Conflict):
        table.join_batch(
            "rex", "r1", token="t2", key="uploads/rex/b.jpg", content="c2", committed=False, now_ms=3000
        )


def test_closing_after_a_failure_only_closes_the_runs_own_open_batch(table):
    open_run(table, "r1")
    assert table.close_batch("rex", "r1", 2000)
    assert not table.close_batch("rex", "r1", 2000)
    assert not table.get_batch("rex").collecting


def test_run_records_keep_details_as_json(table):
    open_run(table, "r1")
    table.record_run(
        "rex", "r1", batch_state.RUN_FAILED, 3000, details={"failure": {"kind": "x"}}, failure_kind="x"
    )
    run = table.get_run("rex", "r1")
    assert run["run_state"] == "failed" and run["details"] == {"failure": {"kind": "x"}}
    assert run["failure_kind"] == "x" and run["updated_at_ms"] == 3000


def test_content_a_run_in_progress_covers_is_recognised_until_the_run_ends(table):
    open_run(table, "r1")
    table.mark_seen("rex", "r1", [("t-job", "uploads/rex/job.json", "c-job")], now_ms=1500)
    assert table.seal("rex", "r1", last_activity_ms=1000, now_ms=2000)
    assert table.run_in_progress_covers("rex", "r1", CONTENT)
    assert table.run_in_progress_covers("rex", "r1", "c-job")
    assert not table.run_in_progress_covers("rex", "r1", "other content")
    table.record_run("rex", "r1", "succeeded", 3000)
    assert not table.run_in_progress_covers("rex", "r1", CONTENT)
