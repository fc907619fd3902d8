"""lambdas/jobs/limits.py: deployment cost limits, each named by the context key that raises it."""

import pytest
from pydantic import ValidationError

from lambdas.jobs.limits import DEFAULT_INSTANCE_TYPES, ServiceLimits, image_count_problem, limit_problems


def test_the_defaults_are_single_gpu_g4dn_g5_g6_g6e_four_hours_and_1024_px():
    limits = ServiceLimits()
    assert "ml.g4dn.xlarge" in limits.instance_types and "ml.g6e.16xlarge" in limits.instance_types
    assert len(DEFAULT_INSTANCE_TYPES) == 20
    assert not any(t.startswith(("ml.p", "ml.g5.12", "ml.g5.24", "ml.g5.48")) for t in limits.instance_types)
    assert (limits.max_runtime_seconds, limits.max_resolution) == (4 * 3600, 1024)


def test_context_strings_become_an_instance_list():
    assert ServiceLimits(instance_types="ml.g5.xlarge, ml.g5.2xlarge").instance_types == (
        "ml.g5.xlarge",
        "ml.g5.2xlarge",
    )
    assert ServiceLimits(instance_types='["ml.g5.xlarge"]').instance_types == ("ml.g5.xlarge",)
    with pytest.raises(ValidationError):
        ServiceLimits(instance_types="p5.48xlarge")


def test_a_job_within_the_limits_has_no_problems_and_each_excess_is_one_line():
    limits = ServiceLimits()
    within = {"instance_type": "ml.g5.2xlarge", "max_runtime_seconds": 14400, "max_train_steps": 5000}
    assert limit_problems(limits, **within, resolution=1024) == []
    over = limit_problems(
        limits,
        instance_type="ml.p5.48xlarge",
        max_runtime_seconds=14401,
        max_train_steps=5001,
        resolution=1025,
    )
    assert len(over) == 4
    keys = [
        "limit_instance_types",
        "limit_max_runtime_seconds",
        "limit_max_train_steps",
        "limit_max_resolution",
    ]
    for line, key in zip(over, keys, strict=True):
        assert f"'{key}'" in line
    assert image_count_problem(limits, 200) is None
    assert "'limit_max_images'" in image_count_problem(limits, 201)
