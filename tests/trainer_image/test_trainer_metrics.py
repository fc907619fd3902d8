"""MetricDefinitions read back exactly what the trainer's formatter writes."""

from __future__ import annotations

import re

import pytest

from dreambooth_trainer.metrics import (
    METRIC_DEFINITIONS,
    format_metrics_line,
    format_summary_line,
    parse_metrics,
)


def test_definitions_fit_sagemaker_limits() -> None:
    assert 0 < len(METRIC_DEFINITIONS) <= 40
    names = [definition["Name"] for definition in METRIC_DEFINITIONS]
    assert len(names) == len(set(names))
    for definition in METRIC_DEFINITIONS:
        assert set(definition) == {"Name", "Regex"}
        assert re.compile(definition["Regex"]).groups >= 1


def test_regexes_read_the_formatted_line() -> None:
    line = format_metrics_line(
        step=120,
        loss=0.123456789,
        instance_loss=0.1,
        prior_loss=0.023456789,
        learning_rate=5e-6,
        steps_per_second=3.21,
        memory_mb=10240.5,
    )
    # As CloudWatch sees it, behind the logger's prefix.
    values = parse_metrics(f"2026-11-24 10:00:00,000 INFO x: {line}")
    assert values == {
        "train:step": 120,
        "train:loss": pytest.approx(0.123457),
        "train:instance_loss": pytest.approx(0.1),
        "train:prior_loss": pytest.approx(0.023457),
        "train:learning_rate": pytest.approx(5e-6),
        "train:steps_per_second": pytest.approx(3.21),
        "train:memory_mb": pytest.approx(10240.5),
    }


def test_summary_line_is_read_and_lines_do_not_cross_talk() -> None:
    summary = format_summary_line(total_steps=400, train_seconds=812.5, final_loss=0.08)
    assert parse_metrics(summary) == {
        "train:total_steps": 400,
        "train:train_seconds": pytest.approx(812.5),
        "train:final_loss": pytest.approx(0.08),
    }
    assert parse_metrics("INFO loading base model: folder /opt/ml/input/data/model step=3 loss=1") == {}


def test_diverged_loss_still_yields_a_number() -> None:
    line = format_metrics_line(
        step=1,
        loss=float("nan"),
        instance_loss=float("inf"),
        prior_loss=0.0,
        learning_rate=1e-4,
        steps_per_second=1.0,
        memory_mb=1.0,
    )
    values = parse_metrics(line)
    assert values["train:loss"] > 1e30 and values["train:instance_loss"] > 1e30
