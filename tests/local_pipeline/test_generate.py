import json

import boto3
import pytest
from moto import mock_aws

from local_pipeline.generate import ModelNotUsable, fetch_model, locate_model


def test_a_diffusers_folder_loads_as_one(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    assert locate_model(tmp_path, None).kind == "diffusers"


def test_a_lora_folder_takes_its_base_from_the_training_record_or_the_flag(tmp_path):
    (tmp_path / "dreambooth.json").write_text(
        json.dumps({"kind": "lora", "base_model": "org/base", "lora_weight_name": "w.safetensors"})
    )
    found = locate_model(tmp_path, None)
    assert (found.kind, found.base_model, found.lora_weight_name) == ("lora", "org/base", "w.safetensors")
    assert locate_model(tmp_path, "/models/other").base_model == "/models/other"


def test_a_lora_trained_on_a_container_path_asks_for_the_base_model(tmp_path):
    (tmp_path / "dreambooth.json").write_text(
        json.dumps({"kind": "lora", "base_model": "/opt/ml/input/data/model"})
    )
    with pytest.raises(ModelNotUsable, match="--base-model"):
        locate_model(tmp_path, None)


def test_single_files_are_found_alone_or_in_a_folder(tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"x")
    assert locate_model(checkpoint, None).kind == "single_file"
    assert locate_model(tmp_path, "/cfg").path == checkpoint


def test_anything_else_is_explained(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(ModelNotUsable, match="not a .safetensors or .ckpt"):
        locate_model(notes, None)
    with pytest.raises(ModelNotUsable, match="does not exist"):
        locate_model(tmp_path / "missing", None)
    with pytest.raises(ModelNotUsable, match="holds no model"):
        locate_model(tmp_path, None)


def test_an_s3_model_with_a_key_that_leaves_the_folder_is_refused_by_name(tmp_path):
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="bkt")
        s3.put_object(Bucket="bkt", Key="models/rex/r1/model_index.json", Body=b"{}")
        s3.put_object(Bucket="bkt", Key="models/rex/r1/../../../../../escaped.txt", Body=b"evil")
        with pytest.raises(ModelNotUsable, match=r"refused S3 key 'models/rex/r1/\.\./"):
            fetch_model(s3, "s3://bkt/models/rex/r1/", tmp_path / "deep" / "model")
    assert not list(tmp_path.rglob("escaped.txt"))
