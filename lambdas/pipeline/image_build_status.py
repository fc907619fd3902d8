"""What a CodeBuild build of the trainer image means for the deploy waiting on it (pure: no AWS calls).

The deploy's custom resource starts one build per ``trainer_image/`` hash and polls it; this module
turns a ``BatchGetBuilds`` build record (and its log's last lines) into "wait", "done" or a failure
message short enough for CloudFormation's status reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IN_PROGRESS = "IN_PROGRESS"
SUCCEEDED = "SUCCEEDED"
# CloudFormation shows a failed resource's reason in the console and `cdk deploy` output; keep the whole
# message well under its limit so the log tail is not cut off by CloudFormation instead.
MAX_MESSAGE_CHARS = 3000
LOG_TAIL_LINES = 30


class ImageBuildFailed(Exception):
    """The build ended without pushing the image: the message says why, with the build log's tail."""


@dataclass(frozen=True)
class BuildProgress:
    complete: bool
    failure: str | None = None


def image_uri(repository_uri: str, tag: str) -> str:
    return f"{repository_uri}:{tag}"


def physical_id(repository_name: str, tag: str) -> str:
    """One custom-resource id per image: a new ``trainer_image/`` hash replaces the resource."""
    return f"{repository_name}:{tag}"


def progress(build: dict[str, Any], log_lines: list[str] | None = None) -> BuildProgress:
    """``build``: one entry of BatchGetBuilds' ``builds``; ``log_lines``: the end of its log, if read."""
    status = build.get("buildStatus")
    if status == IN_PROGRESS:
        return BuildProgress(complete=False)
    if status == SUCCEEDED:
        return BuildProgress(complete=True)
    return BuildProgress(complete=True, failure=failure_message(build, log_lines or []))


def failed_phase(build: dict[str, Any]) -> dict[str, Any] | None:
    return next(
        (p for p in build.get("phases") or [] if p.get("phaseStatus") not in (None, SUCCEEDED)),
        None,
    )


def failure_message(build: dict[str, Any], log_lines: list[str]) -> str:
    """``Trainer image build <id> FAILED in phase BUILD: <context>. Last log lines: ...``."""
    status = build.get("buildStatus") or "UNKNOWN"
    head = f"Trainer image build {build.get('id', '?')} ended {status}"
    phase = failed_phase(build)
    if phase:
        head += f" in phase {phase.get('phaseType', '?')}"
        contexts = [c.get("message") for c in phase.get("contexts") or [] if c.get("message")]
        if contexts:
            head += f": {'; '.join(contexts)}"
    advice = "Fix trainer_image/ (or the build's cause) and deploy again."
    link = (build.get("logs") or {}).get("deepLink")
    if link:
        advice += f" Full log: {link}"
    tail = [line.rstrip() for line in log_lines if line.strip()][-LOG_TAIL_LINES:]
    budget = MAX_MESSAGE_CHARS - len(head) - len(advice) - 40
    kept: list[str] = []
    for line in reversed(tail):  # the last lines matter most: drop from the top when over budget
        if len(line) + 1 > budget:
            break
        kept.insert(0, line)
        budget -= len(line) + 1
    body = "\n".join(kept) if kept else "(no build log was written)"
    return f"{head}. {advice}\nLast log lines:\n{body}"
