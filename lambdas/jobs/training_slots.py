"""A queue in front of the account's GPU quota: at most N training jobs at once, the rest wait in order. Pure.

The jobs table holds one semaphore for the whole deployment (partition ``SLOTS#training``):

- ``HOLDERS``: a map ``{holder id: expires at (epoch s)}`` of the runs that hold a training slot. A run
  takes a slot with a conditional write (``size(holders) < limit``), so two runs can never take the
  last slot together. A holder whose execution vanished without releasing (aborted by hand) expires
  after the longest its training job could run, so a slot is never lost for good.
- ``QUEUE#<queued at ms>#…``: one ticket per waiting run, sorted by arrival. Only the oldest waiting
  tickets may take the free slots, so runs start in arrival order. A waiting run refreshes its
  ticket each time it asks; a ticket nobody refreshed for :data:`STALE_TICKET_SECONDS` belongs to a
  run that is gone and no longer blocks the ones behind it.

The state machine asks (AcquireTrainingSlot), and while the answer is "wait" it sleeps in a Wait state
and asks again: no Lambda runs between two asks, so a queued run costs a few state transitions a minute.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

SLOTS_PK = "SLOTS#training"
HOLDERS_SK = "HOLDERS"
QUEUE_PREFIX = "QUEUE#"
# A waiting run asks again every poll interval; one that stopped asking for this long is gone.
STALE_TICKET_FACTOR = 5
MIN_STALE_TICKET_SECONDS = 300
# A holder outlives its training job's longest possible run by this much before it is reclaimed.
HOLD_MARGIN_SECONDS = 3600


class QueueSettings(BaseModel):
    """Per deployment (CDK context keys of the same names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Runs beyond this many wait in line instead of failing on the account's GPU quota.
    max_concurrent_training_jobs: Annotated[int, Field(ge=1, le=100)] = 2
    # How often a waiting run asks for a slot (a Wait state between two asks).
    poll_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    # ResourceLimitExceeded from CreateTrainingJob: requeue this many times, waiting base, 2x base, ...
    quota_retry_attempts: Annotated[int, Field(ge=0, le=20)] = 3
    quota_retry_seconds: Annotated[int, Field(ge=1, le=86_400)] = 300


def holder_id(job_name: str, run_id: str) -> str:
    """A short, fixed-alphabet name for one run, usable as a DynamoDB map key."""
    return "r" + hashlib.sha256(f"{job_name}\n{run_id}".encode()).hexdigest()[:24]


def ticket(queued_at_ms: int, job_name: str, run_id: str) -> str:
    """The sort key of a waiting run: arrival time first, so a query returns the queue in order."""
    return f"{QUEUE_PREFIX}{queued_at_ms:015d}#{holder_id(job_name, run_id)}"


def stale_ticket_seconds(poll_seconds: int) -> int:
    return max(MIN_STALE_TICKET_SECONDS, STALE_TICKET_FACTOR * poll_seconds)


def hold_seconds(max_runtime_seconds: int, max_wait_seconds: int | None) -> int:
    """How long a slot may be held: the training job's MaxWait (spot) or MaxRuntime, plus a margin."""
    return max(max_runtime_seconds, max_wait_seconds or 0) + HOLD_MARGIN_SECONDS


def live_holders(holders: dict[str, int], now_s: int) -> dict[str, int]:
    return {holder: expires for holder, expires in holders.items() if expires > now_s}


@dataclass(frozen=True)
class Decision:
    acquire: bool
    # 0 = next in line; how many waiting runs are ahead of this one.
    position: int


def decide(*, my_ticket: str, waiting: list[str], holders: int, limit: int) -> Decision:
    """May the run with ``my_ticket`` take a slot now?

    ``waiting`` are the live tickets (this one included), ``holders`` the live slot holders. The free
    slots go to the oldest waiting tickets, so a newer run never overtakes an older one.
    """
    ordered = sorted(set(waiting) | {my_ticket})
    position = ordered.index(my_ticket)
    free = max(0, limit - holders)
    return Decision(acquire=position < free, position=position)


def quota_retry_wait(attempt: int, *, max_attempts: int, base_seconds: int) -> int | None:
    """After the ``attempt``-th (1-based) ResourceLimitExceeded: seconds to wait before queueing again,
    or None when the run has tried often enough and should fail with the quota advice."""
    if attempt > max_attempts:
        return None
    return base_seconds * 2 ** (attempt - 1)
