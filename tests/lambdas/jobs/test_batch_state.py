from datetime import UTC, datetime, timedelta

import pytest

from lambdas.jobs.batch_state import batch_readiness, object_token


def readiness(idle_s: float, committed: bool = False, quiet: int = 60, settle: int = 5, held_s=None):
    return batch_readiness(
        now_ms=int(1_000_000 + idle_s * 1000),
        last_activity_ms=1_000_000,
        committed=committed,
        quiet_period_seconds=quiet,
        commit_settle_seconds=settle,
        held_until_ms=None if held_s is None else 1_000_000 + held_s * 1000,
    )


def test_an_uncommitted_batch_waits_out_the_quiet_period():
    assert readiness(0).ready is False
    assert readiness(59.2).wait_seconds == 1
    assert readiness(60).ready is True


def test_a_waiting_batch_is_looked_at_often_enough_to_notice_a_commit_soon():
    assert readiness(0).wait_seconds == 10
    assert readiness(0, quiet=3).wait_seconds == 1


def test_job_json_commits_after_uploads_settle_not_after_the_quiet_period():
    assert readiness(0, committed=True).wait_seconds == 5
    assert readiness(5, committed=True).ready is True
    assert readiness(0, committed=True, settle=0).ready is True


def test_a_hold_keeps_an_uncommitted_batch_open_past_the_quiet_period_until_it_ends():
    assert readiness(60, held_s=900).ready is False
    assert readiness(60, held_s=900).wait_seconds == 10  # still polled, so a commit is noticed soon
    assert readiness(895, held_s=900).wait_seconds == 5
    assert readiness(900, held_s=900).ready is True  # quiet for 60 s and the hold is over
    assert readiness(30, held_s=20).ready is False  # after the hold, the quiet period still applies
    assert readiness(5, committed=True, held_s=900).ready is True  # job.json (/start) commits at once


def test_settling_never_waits_longer_than_the_quiet_period():
    assert readiness(2, committed=True, quiet=2, settle=30).ready is True


def test_object_tokens_agree_between_head_and_list_and_change_with_a_new_upload():
    written = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
    head = object_token("uploads/rex/a.jpg", '"abc"', written)
    listed = object_token("uploads/rex/a.jpg", "abc", written + timedelta(microseconds=400_000))
    assert head == listed
    assert object_token("uploads/rex/a.jpg", "abc", written + timedelta(seconds=3)) != head
    assert object_token("uploads/rex/b.jpg", "abc", written) != head
    assert object_token("uploads/rex/a.jpg", "abd", written) != head


@pytest.mark.parametrize("key", ["uploads/my dog/é.jpg", "uploads/" + "x" * 900 + "/a.jpg"])
def test_tokens_fit_a_sort_key_whatever_the_object_key(key):
    assert len(object_token(key, "e", datetime.now(UTC))) == 32
