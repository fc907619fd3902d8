"""The template LocalAws emulates: the same synth as ``cdk synth`` (cdk-nag included), in-process."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

from local_aws.node_runtime import quiet_jsii_environment

DEFAULT_STACK_NAME = "DreamBoothService"
# Seconds instead of minutes, for tests and demos: a batch is quiet after 1 s, job.json commits at
# once, a throttled CreateTrainingJob is retried after 1 s, a queued run asks for a slot every second
# and a quota error requeues after 1 s (then 2 s, 4 s).
FAST_CONTEXT = {
    "default_quiet_period_seconds": 1,
    "default_commit_settle_seconds": 0,
    "training_retry_seconds": 1,
    "training_slot_poll_seconds": 1,
    "quota_retry_seconds": 1,
}


def synthesize(
    context: dict[str, Any] | None = None, *, stack_name: str = DEFAULT_STACK_NAME
) -> dict[str, Any]:
    """cdk.json's context plus ``context`` (e.g. ``{"default_quiet_period_seconds": 1}``) -> template.

    Cached per context in this process (a synth takes seconds); every caller gets its own copy.
    """
    return copy.deepcopy(_synthesize(json.dumps(context or {}, sort_keys=True), stack_name))


@lru_cache(maxsize=8)
def _synthesize(context_json: str, stack_name: str) -> dict[str, Any]:
    quiet_jsii_environment()  # before jsii starts Node for the first time
    from app import build_app  # the repository root's CDK app

    # The trainer image is a deploy-time artifact: the emulation runs the trainer as a subprocess, so it
    # synthesizes the plain image asset rather than the CodeBuild project and its build-wait resource.
    context = {"image_build": "local", **json.loads(context_json), "stack_name": stack_name}
    assembly = build_app(context).synth()
    return assembly.get_stack_by_name(stack_name).template
