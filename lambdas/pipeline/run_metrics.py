"""The numbers a finished run's log line carries, for the stack's CloudWatch Logs metric filters.

FinishRun logs one ``run finished`` line per run (Powertools' JSON logger puts ``extra`` keys at the top
level); infra/monitoring.py turns its fields into the dashboard's training and billable minutes, spot
savings and runs by outcome. This module names the fields, so both sides spell them once.
"""

from __future__ import annotations

import json
from typing import Any

LOG_MESSAGE = "run finished"
STATUS = "status"
TRAINING_SECONDS = "training_seconds"
BILLABLE_SECONDS = "billable_seconds"
FAILURE_KIND = "failure_kind"


def log_fields(result: dict[str, Any]) -> dict[str, Any]:
    """FinishRun's result (``status``, ``subject``, ``message``) -> the metric fields of its log line."""
    try:
        payload = json.loads(json.loads(result["message"])["default"])
    except (KeyError, TypeError, ValueError):
        return {}
    durations = payload.get("durations") or {}
    fields = {
        name: durations[name]
        for name in (TRAINING_SECONDS, BILLABLE_SECONDS)
        if isinstance(durations.get(name), int) and not isinstance(durations.get(name), bool)
    }
    kind = (payload.get("failure") or {}).get("kind")
    if kind:
        fields[FAILURE_KIND] = kind
    return fields
