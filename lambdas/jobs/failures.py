"""Why a run failed, in words a user can act on. Pure.

Step Functions hands every failure over as ``{"Error": ..., "Cause": ...}``: a Lambda's error JSON, a
SageMaker API error ("... (Service: AmazonSageMaker; ...; Error Code: ResourceLimitExceeded; ...)"),
or for a training job that ended badly, its DescribeTrainingJob JSON. This turns each into a kind
(for machines), a reason and advice (for people).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# Failure kinds: stable strings that machine subscribers can switch on.
INVALID_BATCH = "invalid_batch"
INVALID_JOB_NAME = "invalid_job_name"
QUOTA = "quota_exceeded"
THROTTLED = "throttled"
REJECTED = "request_rejected"
TRAINING_FAILED = "training_failed"
TRAINING_STOPPED = "training_stopped"
TIMED_OUT = "timed_out"
INTERNAL = "internal_error"

THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException"})
RETRY_HINT = "Fix what is named above, then upload job.json again: that starts a new run."
_ERROR_CODE = re.compile(r"Error Code: ([A-Za-z0-9]+)")
_REASON_LIMIT = 1500
# A notification stays far below SNS's 256 KB even for a folder of 200 unusable photos.
PROBLEMS_LISTED = 30
PROBLEMS_KEPT = 50


@dataclass(frozen=True)
class Failure:
    kind: str
    reason: str
    advice: tuple[str, ...] = ()
    problems: tuple[dict[str, str], ...] = field(default=())
    problem_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "advice": list(self.advice),
            "problems": list(self.problems),
            "problem_count": self.problem_count,
        }


def invalid_batch(upload_prefix: str, problems: list[dict[str, str]]) -> Failure:
    lines = [f"- {p['file']}: {p['problem']}" for p in problems[:PROBLEMS_LISTED]]
    if len(problems) > PROBLEMS_LISTED:
        lines.append(f"- ... and {len(problems) - PROBLEMS_LISTED} more")
    reason = f"The batch under {upload_prefix} cannot be trained on ({len(problems)} problem(s)):\n"
    reason += "\n".join(lines)
    return Failure(INVALID_BATCH, reason, (RETRY_HINT,), tuple(problems[:PROBLEMS_KEPT]), len(problems))


def explain_error(
    error: dict[str, Any] | None,
    *,
    stage: str,
    instance_type: str | None = None,
    use_spot: bool | None = None,
) -> Failure:
    """Classify a caught Step Functions error from the state named ``stage``."""
    error = error or {}
    name = str(error.get("Error") or "UnknownError")
    cause = str(error.get("Cause") or "")
    parsed = _json_or_none(cause)

    if isinstance(parsed, dict) and "TrainingJobStatus" in parsed:
        return _training_ended(parsed)
    code = _error_code(name, cause)
    if code == "ResourceLimitExceeded":
        return _quota(cause, instance_type, use_spot)
    if code in THROTTLING_CODES:
        return Failure(
            THROTTLED,
            f"SageMaker kept throttling CreateTrainingJob during {stage}: {_short(cause)}",
            ("This is transient: upload job.json again in a few minutes to start a new run.",),
        )
    if name.startswith("SageMaker.") or code:
        return Failure(
            REJECTED,
            f"SageMaker rejected the training job ({code or name}): {_short(_message_of(cause))}",
            (RETRY_HINT,),
        )
    if name == "States.Timeout":
        return Failure(TIMED_OUT, f"The {stage} step timed out.", (RETRY_HINT,))
    if isinstance(parsed, dict) and parsed.get("errorType") == "InvalidJobName":
        return Failure(
            INVALID_JOB_NAME,
            f"The upload folder cannot be used as a job: {_short(str(parsed.get('errorMessage')))}",
            ("Nothing was trained. The photos in that folder stay where they are.",),
        )
    if isinstance(parsed, dict) and "errorMessage" in parsed:
        kind = str(parsed.get("errorType") or name)
        return Failure(INTERNAL, f"The {stage} step failed: {kind}: {_short(str(parsed['errorMessage']))}")
    return Failure(INTERNAL, f"The {stage} step failed: {name}: {_short(cause)}".rstrip(": "))


def _training_ended(described: dict[str, Any]) -> Failure:
    status = described.get("TrainingJobStatus")
    name = described.get("TrainingJobName", "the training job")
    reason = str(described.get("FailureReason") or "").strip()
    if status == "Stopped":
        runtime = (described.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
        detail = reason or (
            "it was stopped before it finished: StopTrainingJob, its MaxRuntime"
            + (f" of {runtime} s" if runtime else "")
            + ", or no spot capacity within MaxWait"
        )
        return Failure(
            TRAINING_STOPPED,
            f"Training job {name} stopped: {detail}",
            (
                "Its checkpoints stay under checkpoints/<job>/<run>/ until checkpoints_retention_days.",
                RETRY_HINT,
            ),
        )
    advice = [RETRY_HINT]
    if "MaxWaitTimeInSeconds" in reason or "spot" in reason.lower():
        advice.insert(0, 'No spot capacity in time: set "use_spot": false in job.json, or try later.')
    return Failure(
        TRAINING_FAILED,
        f"Training job {name} failed: {reason or 'SageMaker gave no reason; see its CloudWatch logs'}",
        tuple(advice),
    )


def _quota(cause: str, instance_type: str | None, use_spot: bool | None) -> Failure:
    instance = instance_type or "the instance type"
    quota = f"{instance} for {'spot ' if use_spot else ''}training job usage"
    advice = (
        "New AWS accounts start with a GPU training quota of 0. Ask for more: Service Quotas console > "
        f"AWS services > Amazon SageMaker > '{quota}' > Request increase (1 instance is enough).",
        "From a shell: aws service-quotas list-service-quotas --service-code sagemaker "
        f"--query \"Quotas[?QuotaName=='{quota}'].QuotaCode\", then "
        "aws service-quotas request-service-quota-increase --service-code sagemaker "
        "--quota-code <code> --desired-value 1",
        'Or use an instance type you have quota for ("instance_type" in job.json), '
        'or set "use_spot" to the other value.',
        "Once the quota is granted, upload job.json again to start a new run.",
    )
    return Failure(
        QUOTA,
        f"Your account's SageMaker quota '{quota}' is too low to start the training job: "
        f"{_short(_message_of(cause))}",
        advice,
    )


def _error_code(name: str, cause: str) -> str | None:
    match = _ERROR_CODE.search(cause)
    if match:
        return match.group(1)
    if name.startswith("SageMaker."):
        code = name.removeprefix("SageMaker.")
        for known in ("ResourceLimitExceeded", *THROTTLING_CODES):
            if code.startswith(known):
                return known
    return None


def _message_of(cause: str) -> str:
    """The human part of an AWS error cause, without the '(Service: ...)' trailer."""
    return cause.split(" (Service:", 1)[0].strip()


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 3] + "..."


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None
