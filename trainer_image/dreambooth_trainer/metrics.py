"""The metrics log line and the MetricDefinitions that read it back.

Pure (stdlib only): the Lambdas put METRIC_DEFINITIONS into CreateTrainingJob, the trainer prints the line.
SageMaker takes the first capture group of each regex over CloudWatch log lines, so both sides live here and
are tested together.
"""

from __future__ import annotations

import math
import re

METRICS_TAG = "[metrics]"
SUMMARY_TAG = "[summary]"

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

# (metric name, line tag, key): the formatters below write exactly these keys, in this order.
_DEFINED = [
    ("train:step", METRICS_TAG, "step"),
    ("train:loss", METRICS_TAG, "loss"),
    ("train:instance_loss", METRICS_TAG, "instance_loss"),
    ("train:prior_loss", METRICS_TAG, "prior_loss"),
    ("train:learning_rate", METRICS_TAG, "lr"),
    ("train:steps_per_second", METRICS_TAG, "steps_per_sec"),
    ("train:memory_mb", METRICS_TAG, "memory_mb"),
    ("train:total_steps", SUMMARY_TAG, "total_steps"),
    ("train:train_seconds", SUMMARY_TAG, "train_seconds"),
    ("train:final_loss", SUMMARY_TAG, "final_loss"),
]

METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": name, "Regex": rf"{re.escape(tag)}.* {key}={_NUMBER}"} for name, tag, key in _DEFINED
]


def _number(value: float, spec: str) -> str:
    # SageMaker cannot read nan/inf as a metric value; a diverged loss still shows as a huge number.
    if math.isnan(value) or math.isinf(value):
        value = 3.4e38 if (math.isnan(value) or value > 0) else -3.4e38
    return format(value, spec)


def format_metrics_line(
    *,
    step: int,
    loss: float,
    instance_loss: float,
    prior_loss: float,
    learning_rate: float,
    steps_per_second: float,
    memory_mb: float,
) -> str:
    """One line per logging interval, keys in a fixed order (prior_loss is 0 without prior preservation)."""
    return (
        f"{METRICS_TAG} step={step} loss={_number(loss, '.6f')} instance_loss={_number(instance_loss, '.6f')}"
        f" prior_loss={_number(prior_loss, '.6f')} lr={_number(learning_rate, '.6e')}"
        f" steps_per_sec={_number(steps_per_second, '.3f')} memory_mb={_number(memory_mb, '.1f')}"
    )


def format_summary_line(*, total_steps: int, train_seconds: float, final_loss: float) -> str:
    """Printed once when the loop ends."""
    return (
        f"{SUMMARY_TAG} total_steps={total_steps} train_seconds={_number(train_seconds, '.2f')}"
        f" final_loss={_number(final_loss, '.6f')}"
    )


def parse_metrics(line: str) -> dict[str, float]:
    """What SageMaker would extract from one log line (used by tests and the benchmark)."""
    found = {}
    for definition in METRIC_DEFINITIONS:
        match = re.search(definition["Regex"], line)
        if match:
            found[definition["Name"]] = float(match.group(1))
    return found
