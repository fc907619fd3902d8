"""The message that ends every run, for people and for machines. Pure.

Published with ``MessageStructure=json``: e-mail subscribers get readable text, every other protocol
(SQS, Lambda, HTTP, e-mail-json, ...) gets the same structured JSON, whose ``schema`` names its shape.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from lambdas.jobs.failures import Failure
from lambdas.jobs.families import family_label
from lambdas.jobs.model_files import ModelFiles

SCHEMA = "dreambooth.run-result/1"
SUCCEEDED, FAILED = "SUCCEEDED", "FAILED"
SUBJECT_LIMIT = 99
# Skipped and ignored files named in a notification (the run's batch.json lists them all).
FILES_LISTED = 50
# SNS gives every protocol not named in the message (sqs, lambda, http(s), email-json, ...) "default".


@dataclass(frozen=True)
class RunFacts:
    """What is known about a run when it ends, successful or not."""

    job_name: str
    run_id: str
    upload_prefix_uri: str
    training_job_name: str | None = None
    prompt: str | None = None
    training_method: str | None = None
    max_train_steps: int | None = None
    family: str | None = None  # the base model's (lambdas/jobs/families.py)
    instance_type: str | None = None
    use_spot: bool | None = None
    image_count: int | None = None
    # Unusable files left out of the batch ({"file", "reason"}) and clutter ignored (names).
    skipped: tuple[dict[str, str], ...] = ()
    skipped_count: int = 0
    ignored: tuple[str, ...] = ()
    ignored_count: int = 0
    input_listing: str | None = None
    total_seconds: int | None = None
    training_seconds: int | None = None
    billable_seconds: int | None = None
    # Time spent waiting for a training slot (max_concurrent_training_jobs) or for quota.
    queued_seconds: int | None = None


@dataclass(frozen=True)
class Notification:
    subject: str
    text: str
    payload: dict[str, Any]

    def sns_message(self) -> str:
        """The ``Message`` for ``Publish(MessageStructure="json")``."""
        structured = json.dumps(self.payload, ensure_ascii=False, sort_keys=True)
        return json.dumps({"default": structured, "email": self.text}, ensure_ascii=False)


def success(facts: RunFacts, model: ModelFiles) -> Notification:
    lines = [f'Your DreamBooth model "{facts.job_name}" is ready.', ""]
    family = model.family or facts.family
    # Every LoRA file the family wrote, each named once (the two usual ones have their own rows).
    lora_rows = [("LoRA", uri) for uri in model.lora_files if uri not in (model.lora, model.kohya_lora)]
    lines += _labelled(
        [
            ("Model", model.prefix_uri),
            ("Family", family_label(family) if family else None),
            ("Diffusers", model.diffusers_folder),
            ("Checkpoint", model.checkpoint),
            ("LoRA", model.lora),
            ("WebUI LoRA", model.kohya_lora),
            *lora_rows,
            (
                "Samples",
                f"{len(model.samples)} image(s) under {model.prefix_uri}samples/" if model.samples else None,
            ),
            ("Prompt", facts.prompt),
        ]
    )
    if not model.complete:
        lines += ["", "Warning: the upload is not marked complete (no _SUCCESS): some files may be missing."]
    if not model.manifest_found:
        lines += ["", "Note: the trainer left no manifest.json; the files above are from the folder listing."]
    lines += _left_out_lines(facts)
    lines += ["", _run_line(facts)]
    timing = _timing_line(facts)
    if timing:
        lines.append(timing)
    lines += ["", f'Download: aws s3 sync "{model.prefix_uri}" "./{_folder_name(facts.job_name)}"']
    payload = _payload(facts, SUCCEEDED) | {"model": model.as_dict() | {"family": family}, "failure": None}
    return Notification(_subject(f"DreamBooth model ready: {facts.job_name}"), "\n".join(lines), payload)


def failure(facts: RunFacts, why: Failure) -> Notification:
    lines = [
        f'Your DreamBooth job "{facts.job_name}" (run {facts.run_id}) failed: {why.kind}.',
        "",
        why.reason,
    ]
    if why.advice:
        lines += ["", "What to do:", *(f"- {line}" for line in why.advice)]
    lines += ["", f"Uploads: {facts.upload_prefix_uri}", _run_line(facts)]
    timing = _timing_line(facts)
    if timing:
        lines.append(timing)
    payload = _payload(facts, FAILED) | {"model": None, "failure": why.as_dict()}
    return Notification(_subject(f"DreamBooth job failed: {facts.job_name}"), "\n".join(lines), payload)


def _payload(facts: RunFacts, status: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "status": status,
        "job_name": facts.job_name,
        "run_id": facts.run_id,
        "training_job_name": facts.training_job_name,
        "uploads": facts.upload_prefix_uri,
        "prompt": facts.prompt,
        "training": {
            "family": facts.family,
            "method": facts.training_method,
            "max_train_steps": facts.max_train_steps,
            "instance_type": facts.instance_type,
            "spot": facts.use_spot,
            "images": facts.image_count,
            "skipped": [dict(item) for item in facts.skipped],
            "skipped_count": facts.skipped_count,
            "ignored": list(facts.ignored),
            "ignored_count": facts.ignored_count,
            "input_listing": facts.input_listing,
        },
        "durations": {
            "total_seconds": facts.total_seconds,
            "training_seconds": facts.training_seconds,
            "billable_seconds": facts.billable_seconds,
            "queued_seconds": facts.queued_seconds,
        },
    }


def _left_out_lines(facts: RunFacts) -> list[str]:
    """The files the run did not train on, each with its reason: nothing is dropped silently."""
    lines = []
    if facts.skipped_count:
        lines += ["", f"Skipped {facts.skipped_count} file(s) that cannot be used:"]
        lines += [f"- {item['file']}: {item['reason']}" for item in facts.skipped]
        if facts.skipped_count > len(facts.skipped):
            lines.append(
                f"- ... and {facts.skipped_count - len(facts.skipped)} more (see {facts.input_listing})"
            )
    if facts.ignored_count:
        more = (
            f" and {facts.ignored_count - len(facts.ignored)} more"
            if facts.ignored_count > len(facts.ignored)
            else ""
        )
        lines += ["", f"Ignored {facts.ignored_count} non-photo file(s): {', '.join(facts.ignored)}{more}"]
    return lines


def _run_line(facts: RunFacts) -> str:
    parts = [f"Run {facts.run_id}"]
    if facts.training_job_name:
        parts.append(f"(training job {facts.training_job_name})")
    details = []
    if facts.image_count is not None:
        details.append(f"{facts.image_count} image(s)")
    if facts.training_method:
        details.append("LoRA" if facts.training_method == "lora" else "full fine-tune")
    if facts.max_train_steps:
        details.append(f"{facts.max_train_steps} steps")
    if facts.instance_type:
        details.append(f"on {facts.instance_type}" + (" (spot)" if facts.use_spot else ""))
    return " ".join(parts) + (": " + ", ".join(details) if details else "") + "."


def _timing_line(facts: RunFacts) -> str | None:
    parts = []
    if facts.total_seconds is not None:
        parts.append(f"took {_duration(facts.total_seconds)} from first upload to now")
    if facts.queued_seconds:
        parts.append(f"waited {_duration(facts.queued_seconds)} for a training slot")
    if facts.training_seconds is not None:
        parts.append(f"trained {_duration(facts.training_seconds)}")
    if facts.billable_seconds is not None:
        billed = f"billed {_duration(facts.billable_seconds)}"
        if facts.use_spot and facts.training_seconds:
            saved = 100 * (1 - facts.billable_seconds / facts.training_seconds)
            billed += f" (spot saved {saved:.0f}%)"
        parts.append(billed)
    if not parts:
        return None
    line = "; ".join(parts) + "."
    return line[0].upper() + line[1:]


def _labelled(rows: list[tuple[str, str | None]]) -> list[str]:
    width = max(len(label) for label, _ in rows) + 1
    return [f"{label + ':':<{width}} {value}" for label, value in rows if value]


def _duration(seconds: int) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def _subject(text: str) -> str:
    """SNS subjects: no line breaks or control characters, under 100 characters."""
    cleaned = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= SUBJECT_LIMIT else cleaned[: SUBJECT_LIMIT - 3] + "..."


def _folder_name(job_name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in job_name).strip("-") or "model"
