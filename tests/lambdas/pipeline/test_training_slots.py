"""lambdas/pipeline/training_slots.py + queue.py against a (moto) jobs table: the semaphore's writes."""

import json

import pytest

from lambdas.jobs import training_slots as ts
from lambdas.pipeline.training_slots import TrainingSlots

LIMIT = 2
HOLD = 3600
STALE = 300
NOW = 1_800_000_000_000  # ms


@pytest.fixture
def slots(jobs_dynamodb):
    return TrainingSlots("jobs", jobs_dynamodb)


def ask(slots, run, now=NOW, ticket=None, limit=LIMIT):
    return slots.acquire(
        "job", run, ticket=ticket, limit=limit, hold_seconds=HOLD, stale_seconds=STALE, now_ms=now
    )


def test_at_most_limit_runs_hold_a_slot_and_a_release_lets_the_next_one_in(slots):
    assert ask(slots, "r1").acquired
    assert ask(slots, "r2", NOW + 1).acquired
    third = ask(slots, "r3", NOW + 2)
    assert not third.acquired and third.position == 0
    assert not ask(slots, "r3", NOW + 1000, ticket=third.ticket).acquired
    slots.release("job", "r1")
    slots.release("job", "r1")  # idempotent
    again = ask(slots, "r3", NOW + 2000, ticket=third.ticket)
    assert again.acquired and again.queued_at_ms == NOW + 2
    assert len(slots.holders(NOW + 2000)) == LIMIT


def test_a_newer_run_never_overtakes_an_older_one(slots):
    ask(slots, "r1")
    ask(slots, "r2")
    older = ask(slots, "r3", NOW + 10)
    newer = ask(slots, "r4", NOW + 20)
    assert (older.position, newer.position) == (0, 1)
    slots.release("job", "r1")
    assert not ask(slots, "r4", NOW + 30, ticket=newer.ticket).acquired  # asks first, still waits
    assert ask(slots, "r3", NOW + 40, ticket=older.ticket).acquired


def test_a_run_that_stopped_asking_does_not_block_the_queue(slots):
    ask(slots, "r1", limit=1)
    ask(slots, "r2", NOW + 1, limit=1)  # then never asks again
    behind = ask(slots, "r3", NOW + 2, limit=1)
    slots.release("job", "r1")
    later = NOW + (STALE + 10) * 1000  # r2's ticket went stale; r3 kept asking
    assert ask(slots, "r3", later, ticket=behind.ticket, limit=1).acquired


def test_an_expired_holder_is_reclaimed(slots):
    ask(slots, "r1", limit=1)
    assert not ask(slots, "r2", NOW + 1, limit=1).acquired
    assert ask(slots, "r2", NOW + (HOLD + 1) * 1000, limit=1).acquired


def test_asking_again_after_the_slot_was_taken_keeps_it(slots):
    assert ask(slots, "r1").acquired
    assert ask(slots, "r1", NOW + 5).acquired
    assert len(slots.holders(NOW + 5)) == 1


def test_an_aborted_execution_frees_its_slot_and_its_place_in_line(slots, monkeypatch):
    from lambdas.jobs.spec import JobDefaults
    from lambdas.pipeline import queue
    from lambdas.pipeline.config import PipelineSettings

    monkeypatch.setattr(queue, "TrainingSlots", lambda name: slots)
    settings = PipelineSettings(bucket="b", table_name="jobs", defaults=JobDefaults())
    ask(slots, "r1", limit=1)
    waiting = ask(slots, "r2", NOW + 1, limit=1)
    for run in ("r1", "r2"):
        detail = {"status": "ABORTED", "input": json.dumps({"job_name": "job", "run_id": run})}
        assert queue.release_ended_execution(detail, settings)
    assert slots.holders(NOW + 2) == {}
    assert waiting.ticket not in slots._tickets()
    assert not queue.release_ended_execution({"input": "not json"}, settings)
    assert not queue.release_ended_execution({"input": json.dumps({"job_name": "job"})}, settings)
    assert ts.holder_id("job", "r1") not in slots.holders(NOW + 2)
