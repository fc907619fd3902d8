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


def test_limits_are_context_keys_with_safe_defaults():
    settings = settings_from_context({})
    assert settings.limits.max_runtime_seconds == 4 * 3600 and settings.limits.max_resolution == 1024
    raised = settings_from_context(
        {"limit_max_runtime_seconds": "28800", "limit_instance_types": "ml.g4dn.xlarge,ml.p5.48xlarge"}
    )
    assert raised.limits.max_runtime_seconds == 28800
    assert raised.limits.instance_types == ("ml.g4dn.xlarge", "ml.p5.48xlarge")
    with pytest.raises(ValueError, match="limit_max_resolution"):
        settings_from_context({"limit_max_resolution": "huge"})
    with pytest.raises(ValueError, match="limit_colour"):
        settings_from_context({"limit_colour": "red"})


def test_defaults_outside_the_limits_stop_the_synth_naming_both_keys():
    with pytest.raises(
        ValueError,
        match=r"^invalid CDK context: default_instance_type ml.g4dn.xlarge \(the default for sd base models\)"
        " is not in",
    ):
        settings_from_context({"limit_instance_types": "ml.g5.xlarge"})
    with pytest.raises(
        ValueError, match="default_max_runtime_seconds 28800 is over limit_max_runtime_seconds"
    ):
        settings_from_context({"default_max_runtime_seconds": 28800})
    with pytest.raises(ValueError, match="default_min_images 10 is over limit_max_images 5"):
        settings_from_context({"default_min_images": 10, "limit_max_images": 5})
    with pytest.raises(ValueError, match="default_max_images is now a limit: set limit_max_images"):
        settings_from_context({"default_max_images": 50})


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


def test_infra_keys_have_defaults_and_are_checked():
    infra = settings_from_context({}).infra
    assert (infra.image_build, infra.uploads_retention_days, infra.checkpoints_retention_days) == (
        "codebuild",
        30,
        7,
    )
    assert not infra.training_vpc
    vpc = settings_from_context(
        {"training_subnet_ids": "subnet-0a1, subnet-0b2", "training_security_group_ids": ["sg-0c3"]}
    ).infra
    assert vpc.training_subnet_ids == ("subnet-0a1", "subnet-0b2") and vpc.training_vpc
    with pytest.raises(ValueError, match="image_build"):
        settings_from_context({"image_build": "docker"})
    with pytest.raises(ValueError, match="uploads_retention_days"):
        settings_from_context({"uploads_retention_days": "0"})
    with pytest.raises(ValueError, match="go together"):
        settings_from_context({"training_subnet_ids": "subnet-0a1"})
    with pytest.raises(ValueError, match="training_security_group_ids"):
        settings_from_context({"training_subnet_ids": "subnet-0a1", "training_security_group_ids": "default"})
    with pytest.raises(ValueError, match="ops_email"):
        settings_from_context({"ops_email": "ops"})


def test_without_a_default_instance_type_the_default_base_models_family_must_fit_the_limits():
    with pytest.raises(
        ValueError, match=r"default_instance_type ml.g6.xlarge \(the default for flux base models\)"
    ):
        settings_from_context({"default_base_model": "flux1-dev", "limit_instance_types": "ml.g4dn.xlarge"})
    settings = settings_from_context({"default_base_model": "flux1-dev"})
    assert settings.job_defaults.instance_type is None  # each job's family picks its instance
    assert settings.job_defaults.max_train_steps is None and settings.job_defaults.training_method is None
