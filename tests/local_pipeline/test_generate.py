import json

import pytest

from local_pipeline.generate import ModelNotUsable, locate_model


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
