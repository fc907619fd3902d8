import json

import pytest

from lambdas.jobs.spec import JobDefaults, JobSpec, JobSpecError, parse_job_spec, resolve_job


def test_no_job_json_means_all_defaults():
    job = resolve_job("rex", parse_job_spec(None), JobDefaults())
    assert job.instance_prompt == "a photo of sks person"
    assert job.class_prompt == "a photo of person"
    assert job.training_method == "full"
    assert job.max_train_steps == 800
    assert job.instance_type == "ml.g4dn.xlarge"
    assert job.use_spot is True


def test_token_and_class_word_write_the_prompts():
    spec = parse_job_spec(json.dumps({"token": "zwx", "class_word": "dog"}))
    job = resolve_job("rex", spec, JobDefaults())
    assert job.instance_prompt == "a photo of zwx dog"
    assert job.class_prompt == "a photo of dog"


def test_explicit_fields_win_over_defaults():
    spec = parse_job_spec(
        {
            "instance_prompt": "photo of zwx toy",
            "class_prompt": "photo of a toy",
            "training_method": "lora",
            "max_train_steps": 400,
            "instance_type": "ml.g5.2xlarge",
            "use_spot": False,
            "hyperparameters": {"learning_rate": 1e-4, "train_text_encoder": "False"},
        }
    )
    job = resolve_job("toy", spec, JobDefaults(max_train_steps=1200))
    assert (job.instance_prompt, job.class_prompt) == ("photo of zwx toy", "photo of a toy")
    assert (job.training_method, job.max_train_steps, job.instance_type) == ("lora", 400, "ml.g5.2xlarge")
    assert job.use_spot is False
    assert job.hyperparameters == {"learning_rate": 1e-4, "train_text_encoder": "False"}


def test_without_prior_preservation_there_is_no_class_prompt():
    job = resolve_job("rex", JobSpec(with_prior_preservation=False), JobDefaults())
    assert job.with_prior_preservation is False and job.class_prompt is None


def test_false_switches_stay_false():
    job = resolve_job("rex", JobSpec(use_spot=False), JobDefaults(use_spot=True))
    assert job.use_spot is False


def test_every_problem_in_job_json_is_named_with_its_field():
    with pytest.raises(JobSpecError) as caught:
        parse_job_spec({"training_method": "dreams", "max_train_steps": 0, "colour": "red"})
    message = str(caught.value)
    assert "job.json: training_method:" in message and "'full' or 'lora'" in message
    assert "job.json: max_train_steps:" in message
    assert "job.json: colour: unknown field; valid fields are:" in message and "class_word" in message


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"token": "two words"}', "single word"),
        ('{"instance_type": "g4dn.xlarge"}', "instance_type"),
    ],
)
def test_malformed_job_json_is_explained(raw, problem):
    with pytest.raises(JobSpecError, match=problem):
        parse_job_spec(raw)


def test_defaults_reject_impossible_bounds():
    with pytest.raises(ValueError, match="min_images"):
        JobDefaults(min_images=10, max_images=5)
