"""lambdas/jobs/training_slots.py: who may take a training slot, and the quota backoff."""

import pytest
from pydantic import ValidationError

from lambdas.jobs import training_slots as ts


def test_tickets_sort_by_arrival_whatever_the_job_name():
    early = ts.ticket(1_000, "zebra", "r1")
    late = ts.ticket(20_000, "aardvark", "r2")
    assert sorted([late, early]) == [early, late]
    assert ts.ticket(1_000, "zebra", "r1") == early  # the same run, the same ticket


def test_holder_ids_are_distinct_per_run_and_safe_as_map_keys():
    ids = {ts.holder_id(j, r) for j in ("a", "a b", "ä/..") for r in ("1", "2")}
    assert len(ids) == 6
    assert all(i.isalnum() for i in ids)


@pytest.mark.parametrize(
    ("mine", "waiting", "holders", "limit", "acquire", "position"),
    [
        ("T1", ["T1"], 0, 2, True, 0),  # empty queue, free slot
        ("T1", ["T1"], 2, 2, False, 0),  # next in line, but no free slot
        ("T2", ["T1", "T2"], 1, 2, False, 1),  # one free slot goes to the older T1
        ("T1", ["T1", "T2"], 1, 2, True, 0),
        ("T2", ["T1", "T2", "T3"], 0, 2, True, 1),  # two free slots: T1 and T2
        ("T3", ["T1", "T2", "T3"], 0, 2, False, 2),
        ("T3", ["T1", "T2"], 0, 3, True, 2),  # not yet listed (first ask): counted in
        ("T1", ["T1"], 5, 2, False, 0),  # more holders than the limit (limit lowered): wait
    ],
)
def test_free_slots_go_to_the_oldest_waiting_runs(mine, waiting, holders, limit, acquire, position):
    decision = ts.decide(my_ticket=mine, waiting=waiting, holders=holders, limit=limit)
    assert (decision.acquire, decision.position) == (acquire, position)


def test_expired_holders_no_longer_count():
    assert ts.live_holders({"a": 100, "b": 99, "c": 101}, now_s=100) == {"c": 101}


def test_a_slot_is_held_at_most_the_longest_the_training_job_can_run_plus_a_margin():
    assert ts.hold_seconds(3600, None) == 3600 + 3600
    assert ts.hold_seconds(3600, 7200) == 7200 + 3600


def test_quota_errors_back_off_doubling_then_give_up():
    waits = [ts.quota_retry_wait(n, max_attempts=3, base_seconds=300) for n in (1, 2, 3, 4)]
    assert waits == [300, 600, 1200, None]
    assert ts.quota_retry_wait(1, max_attempts=0, base_seconds=300) is None


def test_a_stale_ticket_is_one_nobody_refreshed_for_several_polls():
    assert ts.stale_ticket_seconds(60) == 300
    assert ts.stale_ticket_seconds(120) == 600
    assert ts.stale_ticket_seconds(1) == ts.MIN_STALE_TICKET_SECONDS


def test_queue_settings_reject_nonsense():
    assert ts.QueueSettings().max_concurrent_training_jobs == 2
    with pytest.raises(ValidationError):
        ts.QueueSettings(max_concurrent_training_jobs=0)
    with pytest.raises(ValidationError):
        ts.QueueSettings(unknown=1)
