import json

from lambdas.jobs import failures, notification
from lambdas.jobs.model_files import describe_model_files

FACTS = notification.RunFacts(
    job_name="my dog",
    run_id="20261124-101500-ab12",
    upload_prefix_uri="s3://b/uploads/my dog/",
    training_job_name="my-dog-9902cb-20261124-101500-ab12",
    prompt="a photo of sks dog",
    training_method="full",
    max_train_steps=800,
    instance_type="ml.g4dn.xlarge",
    use_spot=True,
    image_count=12,
    total_seconds=2700,
    training_seconds=2100,
    billable_seconds=700,
    queued_seconds=125,
)
PREFIX = "s3://b/models/my dog/20261124-101500-ab12/"
MODEL = describe_model_files(
    PREFIX,
    {"files": [{"key": "model_index.json"}, {"key": "unet/w.safetensors"}, {"key": "samples/0.png"}]},
    complete=True,
)


def test_success_mail_names_the_model_prefix_prompt_and_costs():
    message = notification.success(FACTS, MODEL)
    assert message.subject == "DreamBooth model ready: my dog"
    assert f"Model:      {PREFIX}" in message.text
    assert "Prompt:     a photo of sks dog" in message.text
    assert (
        "Took 45 min 0 s from first upload to now; waited 2 min 5 s for a training slot; trained 35 min 0 s; "
        "billed 11 min 40 s (spot saved 67%)." in message.text
    )
    assert f'aws s3 sync "{PREFIX}" "./my-dog"' in message.text
    assert "not marked complete" not in message.text


def test_a_model_without_the_success_marker_is_reported_incomplete():
    incomplete = describe_model_files(PREFIX, {"files": [{"key": "model_index.json"}]}, complete=False)
    message = notification.success(FACTS, incomplete)
    assert "Warning: the upload is not marked complete (no _SUCCESS)" in message.text
    assert message.payload["model"]["complete"] is False
    assert notification.success(FACTS, MODEL).payload["model"]["complete"] is True


def test_success_payload_is_structured_for_machines():
    payload = notification.success(FACTS, MODEL).payload
    assert payload["schema"] == notification.SCHEMA
    assert payload["status"] == "SUCCEEDED"
    assert payload["model"]["s3_prefix"] == PREFIX
    assert payload["model"]["diffusers_folder"] == PREFIX
    assert payload["durations"] == {
        "total_seconds": 2700,
        "training_seconds": 2100,
        "billable_seconds": 700,
        "queued_seconds": 125,
    }
    assert payload["failure"] is None


def test_failure_mail_gives_reason_and_advice():
    why = failures.invalid_batch(
        "s3://b/uploads/my dog/", [{"file": "a.heic", "problem": "HEIC is not supported"}]
    )
    message = notification.failure(FACTS, why)
    assert message.subject == "DreamBooth job failed: my dog"
    assert "- a.heic: HEIC is not supported" in message.text
    assert "What to do:" in message.text
    assert message.payload["status"] == "FAILED" and message.payload["model"] is None
    assert message.payload["failure"]["kind"] == failures.INVALID_BATCH


def test_sns_message_is_text_for_email_and_json_for_every_other_protocol():
    message = notification.success(FACTS, MODEL)
    body = json.loads(message.sns_message())
    assert set(body) == {"default", "email"}  # SNS sends "default" to sqs, lambda, http(s), email-json, ...
    assert body["email"] == message.text
    assert json.loads(body["default"]) == message.payload


def test_a_batch_of_many_bad_files_still_fits_one_notification():
    problems = [
        {"file": f"IMG_{i:04}.HEIC", "problem": "HEIC/HEIF image is not supported: " + "x" * 80}
        for i in range(200)
    ]
    why = failures.invalid_batch("s3://b/uploads/my dog/", problems)
    message = notification.failure(FACTS, why)
    assert len(message.sns_message().encode()) < 64 * 1024
    assert "and 170 more" in message.text
    assert message.payload["failure"]["problem_count"] == 200


def test_subjects_stay_within_sns_limits():
    facts = notification.RunFacts(
        job_name="line\nbreak " + "é" * 200, run_id="r", upload_prefix_uri="s3://b/u/"
    )
    subject = notification.failure(facts, failures.Failure("internal_error", "x")).subject
    assert len(subject) < 100 and "\n" not in subject


def test_unknown_timings_are_left_out_rather_than_guessed():
    facts = notification.RunFacts(job_name="rex", run_id="r", upload_prefix_uri="s3://b/uploads/rex/")
    text = notification.success(facts, MODEL).text
    assert "Took" not in text and "billed" not in text


def test_skipped_and_ignored_files_are_named_in_the_mail_and_the_payload():
    from dataclasses import replace

    facts = replace(
        FACTS,
        skipped=({"file": "notes.png", "reason": "not an image PIL can read"},),
        skipped_count=3,
        ignored=(".DS_Store",),
        ignored_count=1,
        input_listing="s3://b/training-input/my dog/r/batch.json",
    )
    message = notification.success(facts, MODEL)
    assert "Skipped 3 file(s) that cannot be used:\n- notes.png: not an image PIL can read" in message.text
    assert "- ... and 2 more (see s3://b/training-input/my dog/r/batch.json)" in message.text
    assert "Ignored 1 non-photo file(s): .DS_Store" in message.text
    training = message.payload["training"]
    assert training["images"] == 12
    assert training["skipped"] == [{"file": "notes.png", "reason": "not an image PIL can read"}]
    assert (training["skipped_count"], training["ignored"], training["ignored_count"]) == (
        3,
        [".DS_Store"],
        1,
    )
    assert json.loads(json.loads(message.sns_message())["default"])["training"]["skipped_count"] == 3


def test_a_family_lora_mail_names_the_family_and_each_lora_file():
    model = describe_model_files(
        PREFIX,
        {"files": [{"key": "pytorch_lora_weights.safetensors"}, {"key": "my-dog-lora.safetensors"}]},
        complete=True,
        record={
            "family": "flux",
            "lora_files": ["pytorch_lora_weights.safetensors", "my-dog-lora.safetensors"],
        },
    )
    message = notification.success(FACTS, model)
    assert "Family:     flux (FLUX.1)" in message.text
    assert f"LoRA:       {PREFIX}pytorch_lora_weights.safetensors" in message.text
    assert f"WebUI LoRA: {PREFIX}my-dog-lora.safetensors" in message.text
    assert message.payload["model"]["family"] == "flux"
    assert message.payload["model"]["lora_files"] == [
        f"{PREFIX}pytorch_lora_weights.safetensors",
        f"{PREFIX}my-dog-lora.safetensors",
    ]


def test_the_jobs_family_stands_in_when_the_record_names_none():
    from dataclasses import replace

    message = notification.success(replace(FACTS, family="sd"), MODEL)
    assert "Family:     sd (Stable Diffusion 1.x / 2.x)" in message.text
    assert message.payload["model"]["family"] == "sd" and message.payload["training"]["family"] == "sd"
