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


def test_strict_images_is_off_by_default_and_a_job_json_switch():
    assert resolve_job("rex", JobSpec(), JobDefaults()).strict_images is False
    assert resolve_job("rex", parse_job_spec('{"strict_images": true}'), JobDefaults()).strict_images is True
    assert resolve_job("rex", JobSpec(), JobDefaults(strict_images=True)).strict_images is True


# --- mapping onto the trainer's hyperparameters ---

from dreambooth_trainer.hyperparameters import parse_hyperparameters  # noqa: E402
from lambdas.jobs import s3_layout  # noqa: E402
from lambdas.jobs.spec import hyperparameter_strings, training_hyperparameters  # noqa: E402

OUTPUT = "s3://data-bucket/models/my dog/20261124-101500-ab12/"


def test_a_job_maps_onto_the_trainer_schema_and_reads_back_the_same():
    spec = parse_job_spec(
        {
            "token": "zwx",
            "class_word": "dog",
            "training_method": "lora",
            "max_train_steps": 300,
            "hyperparameters": {"learning_rate": 1e-4, "resolution": 768, "train_text_encoder": "true"},
        }
    )
    hp = training_hyperparameters(
        resolve_job("my dog", spec, JobDefaults()), model_output_s3_uri=OUTPUT, bucket="data-bucket"
    )
    assert (hp.instance_prompt, hp.class_prompt) == ("a photo of zwx dog", "a photo of dog")
    assert (hp.training_method, hp.max_train_steps, hp.resolution) == ("lora", 300, 768)
    assert hp.learning_rate == 1e-4 and hp.train_text_encoder is True
    assert hp.model_output_s3_uri == OUTPUT
    assert hp.pretrained_model_name_or_path == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert parse_hyperparameters(hyperparameter_strings(hp)) == hp


def test_the_request_always_states_the_run_defining_choices():
    hp = training_hyperparameters(
        resolve_job("rex", JobSpec(), JobDefaults()), model_output_s3_uri=OUTPUT, bucket="data-bucket"
    )
    strings = hyperparameter_strings(hp)
    for key in ["instance_prompt", "with_prior_preservation", "training_method", "max_train_steps"]:
        assert key in strings
    assert strings["model_output_s3_uri"] == OUTPUT
    assert all(isinstance(v, str) for v in strings.values())


def test_prior_preservation_shares_class_images_to_the_folder_keyed_by_the_trained_resolution():
    spec = JobSpec(class_word="dog", hyperparameters={"resolution": 768})
    job = resolve_job("rex", spec, JobDefaults())
    hp = training_hyperparameters(job, model_output_s3_uri=OUTPUT, bucket="data-bucket")
    expected = "s3://data-bucket/" + s3_layout.class_images_prefix("a photo of dog", job.base_model, 768)
    assert hp.class_images_output_s3_uri == expected
    assert hyperparameter_strings(hp)["class_images_output_s3_uri"] == expected
    no_prior = resolve_job("rex", JobSpec(with_prior_preservation=False), JobDefaults())
    hp = training_hyperparameters(no_prior, model_output_s3_uri=OUTPUT, bucket="data-bucket")
    assert hp.class_images_output_s3_uri is None
    assert "class_images_output_s3_uri" not in hyperparameter_strings(hp)


def test_an_s3_base_model_is_left_to_the_model_channel():
    spec = JobSpec(base_model="s3://data-bucket/base-models/sd15/")
    hp = training_hyperparameters(
        resolve_job("rex", spec, JobDefaults()), model_output_s3_uri=OUTPUT, bucket="data-bucket"
    )
    assert "pretrained_model_name_or_path" not in hyperparameter_strings(hp)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("model_output_s3_uri", "set by the service"),
        ("manul_upload_model_path", "set by the service"),
        ("instance_data_dir", "set by the service"),
        ("class_images_output_s3_uri", "set by the service"),
        ("max_train_steps", 'set "max_train_steps" instead'),
        ("pretrained_model_name_or_path", 'set "base_model" instead'),
    ],
)
def test_service_owned_and_field_owned_keys_cannot_be_overridden(key, message):
    with pytest.raises(JobSpecError, match=message) as caught:
        parse_job_spec({"hyperparameters": {key: "s3://elsewhere/x/"}})
    assert str(caught.value).startswith("job.json: hyperparameters:")


def test_trainer_schema_errors_name_the_key():
    spec = parse_job_spec({"hyperparameters": {"resolution": 500}})
    with pytest.raises(JobSpecError, match="job.json: hyperparameters: .*'resolution'.*multiple of 8"):
        training_hyperparameters(
            resolve_job("rex", spec, JobDefaults()), model_output_s3_uri=OUTPUT, bucket="data-bucket"
        )


def test_deployment_hyperparameters_apply_to_every_job_and_job_json_wins():
    defaults = JobDefaults(hyperparameters='{"resolution": 768, "learning_rate": 2e-6}')
    job = resolve_job("rex", JobSpec(hyperparameters={"learning_rate": 1e-5}), defaults)
    assert job.hyperparameters == {"resolution": 768, "learning_rate": 1e-5}


def test_deployment_hyperparameters_follow_the_same_rules_as_job_json():
    with pytest.raises(ValueError, match="set by the service"):
        JobDefaults(hyperparameters={"model_output_s3_uri": "s3://x/y/"})
    with pytest.raises(ValueError, match="not a JSON object"):
        JobDefaults(hyperparameters="{resolution: 768")


# --- The base model's family ---


OUTPUT = "s3://data-bucket/models/rex/r1/"


def sent(job):
    hp = training_hyperparameters(job, model_output_s3_uri=OUTPUT, bucket="data-bucket")
    return hyperparameter_strings(hp)


def test_an_sd_job_keeps_the_services_sd_defaults():
    job = resolve_job("rex", parse_job_spec(None), JobDefaults())
    assert (job.family, job.training_method, job.max_train_steps) == ("sd", "full", 800)
    strings = sent(job)
    assert strings["max_train_steps"] == "800" and strings["training_method"] == "full"
    assert strings["with_prior_preservation"] == "true"


@pytest.mark.parametrize(
    ("alias", "hub_id", "family", "instance_type"),
    [
        ("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "sdxl", "ml.g4dn.xlarge"),
        ("flux1-dev", "black-forest-labs/FLUX.1-dev", "flux", "ml.g6.xlarge"),
        ("z-image", "Tongyi-MAI/Z-Image", "zimage", "ml.g6.xlarge"),
    ],
)
def test_an_alias_resolves_to_its_hub_id_family_instance_and_lora(alias, hub_id, family, instance_type):
    job = resolve_job("rex", parse_job_spec({"base_model": alias}), JobDefaults())
    assert (job.base_model, job.family, job.instance_type) == (hub_id, family, instance_type)
    assert job.training_method == "lora"
    assert job.max_train_steps is None
    strings = sent(job)
    # The trainer fills the family's steps, resolution and learning rate: nothing SD-shaped overrides them.
    assert "max_train_steps" not in strings and "resolution" not in strings and "learning_rate" not in strings
    assert strings["training_method"] == "lora"
    assert strings["pretrained_model_name_or_path"] == hub_id


def test_the_deployments_explicit_defaults_win_over_the_familys():
    defaults = JobDefaults(instance_type="ml.g5.xlarge", max_train_steps=1200, training_method="full")
    job = resolve_job("rex", parse_job_spec({"base_model": "sdxl"}), defaults)
    assert (job.instance_type, job.max_train_steps) == ("ml.g5.xlarge", 1200)
    assert (
        job.training_method == "lora"
    )  # a deployment-wide full fine-tune cannot apply to a LoRA-only family
    job = resolve_job(
        "rex", parse_job_spec({"base_model": "sdxl", "instance_type": "ml.g6.xlarge"}), defaults
    )
    assert job.instance_type == "ml.g6.xlarge"


def test_a_deployment_whose_default_base_model_is_an_alias_trains_that_family():
    job = resolve_job("rex", parse_job_spec(None), JobDefaults(base_model="flux1-dev"))
    assert (job.family, job.instance_type, job.base_model) == (
        "flux",
        "ml.g6.xlarge",
        "black-forest-labs/FLUX.1-dev",
    )


# --- subject_type ---


def test_subject_type_leaves_steps_prior_preservation_and_class_prompt_to_the_trainer():
    job = resolve_job("rex", parse_job_spec({"subject_type": "pet", "class_word": "dog"}), JobDefaults())
    assert (job.max_train_steps, job.with_prior_preservation, job.class_prompt) == (None, None, None)
    strings = sent(job)
    assert strings["subject_type"] == "pet"
    assert not {"max_train_steps", "with_prior_preservation", "class_prompt"} & set(strings)
    # The trainer's pet profile preserves the prior with its class prompt: the shared class images follow it.
    assert job.effective_prior_preservation() == (True, "a photo of a pet")
    hp = training_hyperparameters(job, model_output_s3_uri=OUTPUT, bucket="data-bucket")
    assert hp.class_images_output_s3_uri and hp.class_images_output_s3_uri.startswith(
        "s3://data-bucket/class-images/"
    )


def test_subject_type_with_explicit_values_sends_exactly_those():
    spec = parse_job_spec(
        {
            "subject_type": "object",
            "max_train_steps": 300,
            "with_prior_preservation": True,
            "class_word": "toy",
        }
    )
    job = resolve_job("rex", spec, JobDefaults())
    strings = sent(job)
    assert (strings["max_train_steps"], strings["with_prior_preservation"]) == ("300", "true")
    # Prior preservation asked for without a class prompt: the job's class word writes it.
    assert strings["class_prompt"] == "a photo of toy"
    assert job.effective_prior_preservation() == (True, "a photo of toy")


def test_subject_type_is_a_job_json_field_not_a_hyperparameter():
    with pytest.raises(JobSpecError, match='set \\\\"subject_type\\\\" instead|set "subject_type" instead'):
        parse_job_spec({"hyperparameters": {"subject_type": "pet"}})
    with pytest.raises(JobSpecError, match="subject_type"):
        parse_job_spec({"subject_type": "car"})


def test_subject_type_person_on_a_lora_only_family_keeps_the_text_encoder_frozen():
    job = resolve_job("rex", parse_job_spec({"subject_type": "person", "base_model": "sdxl"}), JobDefaults())
    assert sent(job)["train_text_encoder"] == "false"
    sd_job = resolve_job("rex", parse_job_spec({"subject_type": "person"}), JobDefaults())
    assert "train_text_encoder" not in sent(sd_job)
