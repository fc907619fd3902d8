import pytest

from dreambooth_trainer.hyperparameters import parse_hyperparameters
from lambdas.jobs import naming
from lambdas.jobs.spec import JobDefaults, JobSpec, class_images_prefix, resolve_job, training_hyperparameters
from lambdas.jobs.training_request import build_training_request, model_output_s3_uri, tag_value

RUN = "20261124-101500-ab12"
BUCKET = "data-bucket"


def request_for(spec: JobSpec | None = None, job_name: str = "my dog", class_images: bool = False):
    job = resolve_job(job_name, spec or JobSpec(), JobDefaults())
    hp = training_hyperparameters(
        job, model_output_s3_uri=model_output_s3_uri(BUCKET, job_name, RUN), bucket=BUCKET
    )
    return (
        job,
        hp,
        build_training_request(
            job, run_id=RUN, bucket=BUCKET, hyperparameters=hp, class_images_available=class_images
        ),
    )


def channels(request):
    return {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}


def test_the_request_trains_the_runs_frozen_input_and_writes_to_the_run_model_prefix():
    _, _, request = request_for()
    assert request["TrainingJobName"] == naming.training_job_name("my dog", RUN)
    assert channels(request) == {"images": f"s3://data-bucket/training-input/my dog/{RUN}/images/"}
    output = "s3://data-bucket/models/my dog/20261124-101500-ab12/"
    assert parse_hyperparameters(request["HyperParameters"]).model_output_s3_uri == output
    # SageMaker's own model.tar.gz never lands in the model folder users download.
    assert request["OutputDataConfig"] == {"S3OutputPath": f"s3://data-bucket/sagemaker-output/my dog/{RUN}/"}
    assert not request["OutputDataConfig"]["S3OutputPath"].startswith(output)
    assert request["ResourceConfig"] == {
        "InstanceType": "ml.g4dn.xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 50,
    }


def test_spot_by_default_with_checkpoints_and_a_max_wait_no_shorter_than_the_runtime():
    _, _, request = request_for()
    assert request["EnableManagedSpotTraining"] is True
    stopping = request["StoppingCondition"]
    assert stopping["MaxWaitTimeInSeconds"] >= stopping["MaxRuntimeInSeconds"] == 4 * 3600
    assert request["CheckpointConfig"] == {
        "S3Uri": "s3://data-bucket/checkpoints/my dog/20261124-101500-ab12/",
        "LocalPath": "/opt/ml/checkpoints",
    }


def test_without_spot_there_is_no_max_wait():
    _, _, request = request_for(JobSpec(use_spot=False))
    assert request["EnableManagedSpotTraining"] is False
    assert "MaxWaitTimeInSeconds" not in request["StoppingCondition"]


def test_class_images_channel_only_when_shared_images_exist_for_a_prior_preservation_job():
    job, hp, request = request_for(class_images=True)
    assert channels(request)["class_images"] == f"s3://data-bucket/{class_images_prefix(job, hp)}"
    assert "class_images" not in channels(request_for(class_images=False)[2])
    no_prior = JobSpec(with_prior_preservation=False)
    assert "class_images" not in channels(request_for(no_prior, class_images=True)[2])


@pytest.mark.parametrize("class_images", [True, False])
def test_the_trainer_shares_generated_class_images_to_the_folder_the_channel_reads(class_images):
    job, hp, request = request_for(class_images=class_images)
    shared = parse_hyperparameters(request["HyperParameters"]).class_images_output_s3_uri
    assert shared == f"s3://data-bucket/{class_images_prefix(job, hp)}"  # even before any exist
    if class_images:
        assert channels(request)["class_images"] == shared
    _, _, no_prior = request_for(JobSpec(with_prior_preservation=False))
    assert "class_images_output_s3_uri" not in no_prior["HyperParameters"]


def test_class_images_are_keyed_by_the_resolution_actually_trained():
    job_512, hp_512, _ = request_for()
    job_768, hp_768, _ = request_for(JobSpec(hyperparameters={"resolution": 768}))
    assert class_images_prefix(job_512, hp_512) != class_images_prefix(job_768, hp_768)


def test_an_s3_base_model_becomes_the_model_channel():
    _, _, request = request_for(JobSpec(base_model="s3://data-bucket/base-models/sd15/"))
    assert channels(request)["model"] == "s3://data-bucket/base-models/sd15/"


def test_tags_name_the_job_and_run_in_characters_sagemaker_accepts():
    _, _, request = request_for(job_name="Café & Co #1")
    assert request["Tags"] == [
        {"Key": "dreambooth:job", "Value": "Café _ Co _1"},
        {"Key": "dreambooth:run", "Value": RUN},
    ]


@pytest.mark.parametrize("text", ["a/b:c=d+e-f@g h_i.j", "日本の猫"])
def test_allowed_tag_characters_pass_unchanged(text):
    assert tag_value(text) == text


@pytest.mark.parametrize(
    ("base_model", "volume_gb", "instance_type"),
    [
        (None, 50, "ml.g4dn.xlarge"),
        ("sdxl", 50, "ml.g4dn.xlarge"),
        ("flux1-dev", 100, "ml.g6.xlarge"),
        ("z-image", 100, "ml.g6.xlarge"),
    ],
)
def test_volume_and_instance_follow_the_base_models_family(base_model, volume_gb, instance_type):
    _, _, request = request_for(JobSpec(base_model=base_model))
    assert request["ResourceConfig"]["VolumeSizeInGB"] == volume_gb
    assert request["ResourceConfig"]["InstanceType"] == instance_type


def test_a_family_job_sends_no_sd_step_count_and_trains_lora():
    _, _, request = request_for(JobSpec(base_model="sdxl"))
    sent = request["HyperParameters"]
    assert "max_train_steps" not in sent and sent["training_method"] == "lora"
    assert (
        parse_hyperparameters(sent).pretrained_model_name_or_path
        == "stabilityai/stable-diffusion-xl-base-1.0"
    )


S3_BASE = "s3://data-bucket/base-models/tiny-sd/"


@pytest.mark.parametrize(
    ("deployment", "base_model", "isolated"),
    [
        (True, S3_BASE, True),
        (True, "sd15", False),  # a Hub base model needs the network to download
        (False, S3_BASE, False),
    ],
    ids=["asked, s3 base", "asked, hub base", "not asked"],
)
def test_network_isolation_where_asked_and_the_base_model_comes_from_s3(deployment, base_model, isolated):
    job = resolve_job("my dog", JobSpec(base_model=base_model), JobDefaults())
    output = model_output_s3_uri(BUCKET, "my dog", RUN)
    hp = training_hyperparameters(job, model_output_s3_uri=output, bucket=BUCKET)
    request = build_training_request(
        job,
        run_id=RUN,
        bucket=BUCKET,
        hyperparameters=hp,
        class_images_available=False,
        network_isolation=deployment,
    )
    assert request["EnableNetworkIsolation"] is isolated
    sent = parse_hyperparameters(request["HyperParameters"])
    # Isolated: the trainer cannot upload, so the model comes back in model.tar.gz for the pipeline.
    assert sent.model_hand_over == ("sagemaker" if isolated else "upload")
    assert sent.model_output_s3_uri == output  # where the model lands either way (the manifest says so)
    assert ("model_hand_over" in request["HyperParameters"]) is isolated
