import pytest

from infra.settings import settings_from_context


def test_context_strings_become_typed_defaults():
    settings = settings_from_context(
        {
            "notification_email": "me@example.com",
            "default_max_train_steps": "1200",
            "default_use_spot": "false",
            "retain_data_on_delete": "false",
        }
    )
    assert settings.notification_email == "me@example.com"
    assert settings.job_defaults.max_train_steps == 1200
    assert settings.job_defaults.use_spot is False
    assert settings.retain_data_on_delete is False


def test_unknown_default_keys_and_bad_values_are_errors():
    with pytest.raises(ValueError, match="default_colour"):
        settings_from_context({"default_colour": "red"})
    with pytest.raises(ValueError, match="default_instance_type"):
        settings_from_context({"default_instance_type": "p3.2xlarge"})
    with pytest.raises(ValueError, match="not an e-mail address"):
        settings_from_context({"notification_email": "nobody"})
    with pytest.raises(ValueError, match="true or false"):
        settings_from_context({"retain_data_on_delete": "maybe"})


def test_other_context_keys_such_as_feature_flags_are_left_to_cdk():
    assert settings_from_context({"@aws-cdk/core:foo": True, "stack_name": "x"}).notification_email is None


def test_throttling_retry_interval_is_a_context_setting():
    assert settings_from_context({}).training_retry_seconds == 20
    assert settings_from_context({"training_retry_seconds": "3"}).training_retry_seconds == 3
    with pytest.raises(ValueError, match="training_retry_seconds"):
        settings_from_context({"training_retry_seconds": 0})


def test_the_training_queue_is_set_by_its_own_context_keys():
    queue = settings_from_context({}).training_queue
    assert (queue.max_concurrent_training_jobs, queue.poll_seconds) == (2, 60)
    queue = settings_from_context(
        {"max_concurrent_training_jobs": "4", "training_slot_poll_seconds": 30, "quota_retry_attempts": 0}
    ).training_queue
    assert (queue.max_concurrent_training_jobs, queue.poll_seconds, queue.quota_retry_attempts) == (4, 30, 0)
    with pytest.raises(ValueError, match="max_concurrent_training_jobs"):
        settings_from_context({"max_concurrent_training_jobs": 0})
    with pytest.raises(ValueError, match="training_slot_poll_seconds"):
        settings_from_context({"training_slot_poll_seconds": -1})
