from lambdas.jobs.model_files import describe_model_files, parse_json_object

PREFIX = "s3://b/models/rex/r1/"


def manifest(*keys, **fields):
    return {
        "manifest_version": 1,
        "files": [{"key": k, "size": 10} for k in keys],
        "total_bytes": 10 * len(keys),
        **fields,
    }


def test_a_full_fine_tune_lists_the_diffusers_folder_checkpoint_and_samples():
    files = describe_model_files(
        PREFIX,
        manifest(
            "model_index.json",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
            "rex.safetensors",
            "samples/0.png",
            "samples/1.png",
            "dreambooth.json",
            kind="full",
        ),
    )
    assert files.diffusers_folder == PREFIX
    assert files.checkpoint == PREFIX + "rex.safetensors"
    assert files.lora is None
    assert files.samples == (PREFIX + "samples/0.png", PREFIX + "samples/1.png")
    assert files.total_bytes == 70
    assert files.as_dict()["manifest"] == PREFIX + "manifest.json"


def test_a_diffusers_folder_below_the_prefix_is_named_as_such():
    files = describe_model_files(
        PREFIX, manifest("diffusers/model_index.json", "diffusers/unet/w.safetensors")
    )
    assert files.diffusers_folder == PREFIX + "diffusers/"
    assert files.checkpoint is None


def test_a_lora_run_names_the_weight_file_from_the_manifest():
    files = describe_model_files(
        PREFIX,
        manifest("pytorch_lora_weights.safetensors", lora_weight_name="pytorch_lora_weights.safetensors"),
    )
    assert files.lora == PREFIX + "pytorch_lora_weights.safetensors"
    assert files.checkpoint is None and files.diffusers_folder is None


def test_a_lora_run_names_the_kohya_file_too_and_never_as_a_checkpoint():
    keys = ("pytorch_lora_weights.safetensors", "aardvark-lora.safetensors", "dreambooth.json")
    named = describe_model_files(
        PREFIX,
        manifest(
            *keys,
            lora_weight_name="pytorch_lora_weights.safetensors",
            kohya_lora_name="aardvark-lora.safetensors",
        ),
    )
    listed = describe_model_files(PREFIX, None, list(keys))
    for files in (named, listed):
        assert files.lora == PREFIX + "pytorch_lora_weights.safetensors"
        assert files.kohya_lora == PREFIX + "aardvark-lora.safetensors"
        assert files.checkpoint is None
        assert files.as_dict()["kohya_lora"] == PREFIX + "aardvark-lora.safetensors"


def test_without_a_manifest_the_listing_stands_in_and_sagemaker_output_is_left_out():
    listed = ["model_index.json", "unet/w.safetensors", "rex-r1/output/model.tar.gz", "manifest.json"]
    files = describe_model_files(PREFIX, None, listed)
    assert not files.manifest_found and files.as_dict()["manifest"] is None
    assert files.files == ("model_index.json", "unet/w.safetensors")


def test_unreadable_manifests_count_as_missing():
    assert parse_json_object(b"{not json") is None
    assert parse_json_object(b"[1]") is None
    assert parse_json_object(None) is None
    assert parse_json_object(b'{"files": []}') == {"files": []}


def test_a_model_is_complete_only_with_the_success_marker():
    assert describe_model_files(PREFIX, manifest("model_index.json")).complete is False
    files = describe_model_files(PREFIX, manifest("model_index.json"), complete=True)
    assert files.complete and files.as_dict()["complete"] is True
    listed = describe_model_files(PREFIX, None, ["model_index.json", "_SUCCESS"], complete=True)
    assert listed.files == ("model_index.json",)  # the marker is not a model file


def test_the_training_record_names_the_family_and_every_lora_file():
    files = manifest(
        "pytorch_lora_weights.safetensors",
        "rex-lora.safetensors",
        "dreambooth.json",
        "samples/0.png",
        lora_weight_name="pytorch_lora_weights.safetensors",
    )
    record = {"family": "sdxl", "lora_files": ["pytorch_lora_weights.safetensors", "rex-lora.safetensors"]}
    model = describe_model_files(PREFIX, files, complete=True, record=record)
    assert model.family == "sdxl"
    assert model.lora_files == (
        f"{PREFIX}pytorch_lora_weights.safetensors",
        f"{PREFIX}rex-lora.safetensors",
    )
    assert model.as_dict()["lora_files"] == list(model.lora_files) and model.as_dict()["family"] == "sdxl"
    assert model.checkpoint is None  # the ComfyUI/WebUI LoRA file is no single-file checkpoint


def test_without_a_record_the_one_lora_file_stands_and_no_family_is_invented():
    files = manifest("pytorch_lora_weights.safetensors", lora_weight_name="pytorch_lora_weights.safetensors")
    model = describe_model_files(PREFIX, files, complete=True)
    assert model.family is None
    assert model.lora_files == (f"{PREFIX}pytorch_lora_weights.safetensors",)
