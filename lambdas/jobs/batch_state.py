"""How the jobs table records batches and runs, and when a batch is ready to train. Pure: no AWS calls.

One partition per job (``JOB#<job name>``) holds:

- ``BATCH``: the job's current batch — which run it belongs to, whether it is still ``collecting``
  uploads or ``sealed``, when the last upload was seen, and whether job.json committed it. Every
  decision about "join the open batch or open a new run" is a conditional write on this one item.
- ``RUN#<run id>``: one item per run: its state and, at the end, its result or failure.
- ``SEEN#<object token>``: one item per object version a run has covered, so a duplicate or late
  event for a photo that already belongs to a run never opens another one.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime

JOB_PREFIX = "JOB#"
BATCH_SK = "BATCH"
# Set by the HTTP API for a job whose client uploads through presigned targets and commits with /start:
# until it expires, the quiet period alone does not start the batch (a slow client is not cut short).
HOLD_SK = "HOLD"
RUN_PREFIX = "RUN#"
SEEN_PREFIX = "SEEN#"

COLLECTING = "collecting"
SEALED = "sealed"

# Run states, in order; the last two are final.
RUN_COLLECTING = "collecting"
RUN_SEALED = "sealed"
RUN_VALIDATED = "validated"
# Waiting for a training slot (max_concurrent_training_jobs) or for quota after ResourceLimitExceeded.
RUN_QUEUED = "queued"
RUN_TRAINING = "training"
RUN_SUCCEEDED = "succeeded"
RUN_FAILED = "failed"
FINAL_RUN_STATES = frozenset({RUN_SUCCEEDED, RUN_FAILED})

# SEEN items only need to outlive late deliveries (SQS keeps messages 4 days by default).
SEEN_TTL_SECONDS = 30 * 24 * 3600


def job_pk(job_name: str) -> str:
    return f"{JOB_PREFIX}{job_name}"


def run_sk(run_id: str) -> str:
    return f"{RUN_PREFIX}{run_id}"


def object_token(key: str, etag: str, last_modified: datetime) -> str:
    """Names one version of one object: same key, content and write time -> same token.

    Computed alike from a HeadObject (upload events) and from ListObjectsV2 (sealing), so a late event
    for an object a sealed run listed is recognised. Whole seconds: the two APIs differ below that.
    """
    identity = f"{key}\n{etag.strip(chr(34))}\n{int(last_modified.timestamp())}"
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def content_token(key: str, etag: str) -> str:
    """Names one object's content, whatever its write time: an identical re-upload has the same one.

    While a run is still in progress, a new version with content that run already covers is the same
    batch uploaded again (a retried client, a second ``run``), not a new batch.
    """
    identity = f"{key}\n{etag.strip(chr(34))}"
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def seen_sk(token: str) -> str:
    return f"{SEEN_PREFIX}{token}"


# A waiting batch is looked at this often per quiet period (60 s -> every 10 s).
POLLS_PER_QUIET_PERIOD = 6


@dataclass(frozen=True)
class Readiness:
    ready: bool
    wait_seconds: int


def batch_readiness(
    *,
    now_ms: int,
    last_activity_ms: int,
    committed: bool,
    quiet_period_seconds: int,
    commit_settle_seconds: int,
    held_until_ms: int | None = None,
) -> Readiness:
    """A batch is ready when job.json committed it and uploads settled, or when it has been quiet (and no
    hold keeps it open: an uncommitted batch under a hold waits until the hold's end, then for quiet).

    ``wait_seconds`` is how long the state machine should sleep before asking again: at most a sixth
    of the quiet period, so a job.json that arrives meanwhile is noticed soon, and at least 1 s.
    """
    idle_ms = now_ms - last_activity_ms
    needed_s = min(commit_settle_seconds, quiet_period_seconds) if committed else quiet_period_seconds
    remaining_ms = needed_s * 1000 - idle_ms
    if not committed and held_until_ms is not None:
        remaining_ms = max(remaining_ms, held_until_ms - now_ms)
    if remaining_ms <= 0:
        return Readiness(ready=True, wait_seconds=0)
    poll_s = max(1, quiet_period_seconds // POLLS_PER_QUIET_PERIOD)
    return Readiness(ready=False, wait_seconds=max(1, min(poll_s, math.ceil(remaining_ms / 1000))))
