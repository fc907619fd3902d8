"""The real trainer with network isolation (context training_network_isolation): the local runner takes its
credentials away as SageMaker does, so the model can only come back through SageMaker's model.tar.gz, which
the UnpackModel step unpacks into the run's model prefix."""

import json

import pytest

from dreambooth_trainer.offline_fixtures import build_tiny_base_model, write_sample_subject_images
from lambdas.jobs import s3_layout
from local_pipeline.cli import TINY_MODEL_HYPERPARAMETERS
from local_pipeline.service import (
    EmbeddedService,
    NotificationInbox,
    parse_notification,
    submit_batch,
    upload_base_model,
)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the service writes local-output/ where it runs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def test_the_real_trainer_without_network_hands_its_lora_over_through_model_tar_gz(in_tmp):
    model = build_tiny_base_model(in_tmp / "tiny-sd")
    images = in_tmp / "photos"
    write_sample_subject_images(images, 4, 80, 3)
    spec = {
        "class_word": "toy",
        "training_method": "lora",
        "max_train_steps": 4,
        "hyperparameters": {**TINY_MODEL_HYPERPARAMETERS, "num_class_images": "2", "num_samples": "1"},
    }
    with EmbeddedService(context={"training_network_isolation": True}) as service:
        endpoint = service.endpoint
        spec["base_model"] = upload_base_model(endpoint, model)
        inbox = NotificationInbox(endpoint)
        try:
            submit_batch(endpoint, images, "quiet toy", spec)
            notification = parse_notification(inbox.wait_for_job("quiet toy", 600))
        finally:
            inbox.close()
        assert notification["status"] == "SUCCEEDED", json.dumps(notification)[-2000:]
        assert notification["model"]["complete"] is True
        s3 = endpoint.client("s3")
        bucket, prefix = s3_layout.split_s3_uri(notification["model"]["s3_prefix"])
        objects = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
        listed = {o["Key"][len(prefix) :] for o in objects}
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read())
        shared = s3.list_objects_v2(Bucket=bucket, Prefix=s3_layout.CLASS_IMAGES_ROOT).get("KeyCount", 0)
    assert {f["key"] for f in manifest["files"]} | {"manifest.json", "_SUCCESS"} == listed
    assert "pytorch_lora_weights.safetensors" in listed and manifest["kind"] == "lora"
    assert shared == 0  # an isolated job shares no generated class images
    log_name = f"training-{notification['training_job_name']}.log"
    log = (in_tmp / "local-output" / "logs" / log_name).read_text()
    assert "SageMaker's model.tar.gz hands it over" in log
