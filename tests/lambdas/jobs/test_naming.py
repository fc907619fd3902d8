from datetime import UTC, datetime

import pytest

from lambdas.jobs import naming

RUN = "20261124-101500-ab12"


def is_valid_training_job_name(name: str) -> bool:
    return bool(naming.TRAINING_JOB_NAME_PATTERN.match(name)) and len(name) <= 63


@pytest.mark.parametrize(
    "job_name",
    [
        "rex",
        "my dog",
        "my_dog",
        "Café Müller ☕",
        "日本の猫",
        "---",
        "x" * 200,
        "a" * 30 + " " + "b" * 30,
        "UPPER lower 123",
    ],
)
def test_training_job_names_are_always_valid_for_sagemaker(job_name):
    name = naming.training_job_name(job_name, RUN)
    assert is_valid_training_job_name(name), name
    assert name.endswith(RUN)


def test_names_stay_readable():
    assert naming.training_job_name("rex", RUN) == f"rex-{RUN}"
    assert naming.training_job_name("Café Müller", RUN).startswith("cafe-muller-")


def test_names_that_slug_alike_do_not_collide():
    variants = ["my dog", "my_dog", "My Dog", "my-dog", "my--dog", "my  dog"]
    names = {naming.training_job_name(v, RUN) for v in variants}
    assert len(names) == len(variants)


def test_long_names_that_share_a_prefix_do_not_collide():
    a = naming.training_job_name("x" * 200 + "a", RUN)
    b = naming.training_job_name("x" * 200 + "b", RUN)
    assert a != b
    assert is_valid_training_job_name(a) and is_valid_training_job_name(b)


def test_names_without_any_ascii_still_get_a_unique_readable_prefix():
    a, b = naming.training_job_name("日本の猫", RUN), naming.training_job_name("日本の犬", RUN)
    assert a != b and a.startswith("job-") and b.startswith("job-")


def test_same_job_and_run_always_give_the_same_name_so_a_retry_is_idempotent():
    assert naming.training_job_name("my dog", RUN) == naming.training_job_name("my dog", RUN)
    assert naming.training_job_name("my dog", RUN) != naming.training_job_name(
        "my dog", "20261124-101500-ab13"
    )


def test_run_ids_sort_by_time_and_are_validated():
    run = naming.new_run_id(datetime(2026, 11, 24, 10, 15, 0, tzinfo=UTC), token="ab12")
    assert run == RUN
    assert naming.RUN_ID_PATTERN.match(naming.new_run_id())
    with pytest.raises(ValueError, match="run id"):
        naming.new_run_id(token="XYZ!")
    with pytest.raises(ValueError, match="run id"):
        naming.training_job_name("rex", "not-a-run")


@pytest.mark.parametrize(
    ("job_name", "problem"),
    [
        ("", "empty"),
        ("   ", "blank"),
        (".", "not a folder name"),
        ("..", "not a folder name"),
        ("a/b", "'/'"),
        ("a\x00b", "control"),
        ("é" * 150, "300 bytes long, over the 200-byte limit"),
    ],
)
def test_bad_job_names_are_explained_with_what_to_rename(job_name, problem):
    with pytest.raises(ValueError, match=problem) as raised:
        naming.validate_job_name(job_name)
    assert "\x00" not in str(raised.value)  # control characters are shown escaped
    if job_name and "/" not in job_name:
        assert "upload the photos again under a folder with a plain name" in str(raised.value)


def test_good_job_names_pass_validation_unchanged():
    for job_name in ["my dog", "Café", "日本の猫", "x" * 200]:
        assert naming.validate_job_name(job_name) == job_name
