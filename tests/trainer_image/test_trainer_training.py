"""Real training runs through the SageMaker contract on the tiny model: string hyperparameters in, loadable
models (or an honest failure file) out. Nothing in the training path is mocked."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors import safe_open
from safetensors.torch import load_file

from dreambooth_trainer.metrics import parse_metrics
from dreambooth_trainer.offline_fixtures import build_tiny_base_model, write_sample_subject_images


def _weights(folder: Path, component: str) -> dict[str, torch.Tensor]:
    name = "model.safetensors" if component == "text_encoder" else "diffusion_pytorch_model.safetensors"
    return {k: v.float() for k, v in load_file(folder / component / name).items()}


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _rounded_to(dtype: torch.dtype, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype).float() for k, v in weights.items()}


def _metric_lines(output: str) -> list[dict[str, float]]:
    return [parse_metrics(line) for line in output.splitlines() if line.startswith("[metrics]")]


def test_full_finetune_through_the_contract(new_job, tiny_model, capsys) -> None:
    job = new_job(
        {
            "train_text_encoder": "False",
            "use_ema": "false",
            "gradient_checkpointing": "0",
            "mixed_precision": '"fp16"',  # JSON-encoded, as the toolkit sends it; CPU falls back to fp32
            "lr_scheduler": "cosine",
            "lr_warmup_steps": "1",
            "sagemaker_container_log_level": "20",
        }
    )
    assert job.run() == 0
    assert job.failure is None

    pipe = StableDiffusionPipeline.from_pretrained(
        job.model_dir, local_files_only=True, torch_dtype=torch.float32
    )
    assert pipe.safety_checker is None
    image = pipe("a photo of sks dog", num_inference_steps=2, height=32, width=32, output_type="np").images
    assert image.shape == (1, 32, 32, 3)

    with safe_open(job.model_dir / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16  # half precision unless asked
    base = _rounded_to(torch.float16, _weights(tiny_model, "unet"))
    assert _max_difference(_weights(job.model_dir, "unet"), base) > 1e-3  # the UNet learned
    text_encoder = _weights(job.model_dir, "text_encoder")
    assert (
        _max_difference(text_encoder, _rounded_to(torch.float16, _weights(tiny_model, "text_encoder"))) == 0
    )

    record = json.loads((job.model_dir / "dreambooth.json").read_text())
    assert record["kind"] == "full" and record["prompt"] == "a photo of sks dog" and record["steps"] == 4
    metrics = _metric_lines(capsys.readouterr().out)
    assert [m["train:step"] for m in metrics] == [2, 4]
    assert all(m["train:loss"] > 0 and m["train:steps_per_second"] > 0 for m in metrics)


def test_text_encoder_and_ema_train_when_asked(new_job, tiny_model) -> None:
    job = new_job(
        {"train_text_encoder": "true", "use_ema": "true", "output_dtype": "fp32", "max_train_steps": "3"}
    )
    assert job.run() == 0
    assert (
        _max_difference(_weights(job.model_dir, "text_encoder"), _weights(tiny_model, "text_encoder")) > 1e-4
    )
    assert _max_difference(_weights(job.model_dir, "unet"), _weights(tiny_model, "unet")) > 0


def test_lora_exports_a_file_that_load_lora_weights_loads(new_job, tiny_model) -> None:
    job = new_job(
        {
            "training_method": "lora",
            "train_text_encoder": "True",
            "lora_rank": "4",
            "learning_rate": "1e-2",
            "gradient_checkpointing": "true",
        }
    )
    assert job.run() == 0
    assert sorted(p.name for p in job.model_dir.iterdir()) == [
        "dreambooth-model-lora.safetensors",
        "dreambooth.json",
        "pytorch_lora_weights.safetensors",
        "samples",
    ]

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    ids = pipe.tokenizer(
        "a photo of sks dog", padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text_before = pipe.text_encoder(ids)[0]
        unet_before = pipe.unet(latents, torch.tensor([500]), text_before).sample
        pipe.load_lora_weights(job.model_dir)
        text_after = pipe.text_encoder(ids)[0]
        unet_after = pipe.unet(latents, torch.tensor([500]), text_before).sample
    assert (text_after - text_before).abs().max() > 1e-3
    assert (unet_after - unet_before).abs().max() > 1e-4


def test_prior_preservation_generates_exactly_the_missing_class_images(new_job, caplog, capsys) -> None:
    job = new_job(
        {
            "with_prior_preservation": "true",
            "class_prompt": "a photo of a dog",
            "num_class_images": "5",
            "sample_batch_size": "2",
            "class_inference_steps": "2",
            "prior_loss_weight": "0.5",
            "gradient_accumulation_steps": "2",
            "training_method": "lora",
        }
    )
    write_sample_subject_images(job.channel("class_images"), n=2, size=40, seed=7)
    with caplog.at_level(logging.INFO):
        assert job.run() == 0
    generated = sorted((job.checkpoints_dir / "class_images").glob("*.png"))
    assert len(generated) == 3  # 5 wanted - 2 uploaded
    assert "class images: 2 usable found, 5 wanted, 3 to generate" in caplog.text
    assert "class images=5" in caplog.text  # the loop trains on all of them
    assert json.loads((job.model_dir / "dreambooth.json").read_text())["class_images"] == 5
    # The loop weighs the class-image loss with prior_loss_weight (0.5): loss = instance + 0.5 * prior.
    metrics = _metric_lines(capsys.readouterr().out)
    assert metrics and all(m["train:prior_loss"] > 0 for m in metrics)
    for m in metrics:
        assert m["train:loss"] == pytest.approx(
            m["train:instance_loss"] + 0.5 * m["train:prior_loss"], abs=2e-6
        )

    # A restarted job (same checkpoints folder) finds them and generates none.
    caplog.clear()
    shutil.rmtree(job.model_dir)
    with caplog.at_level(logging.INFO):
        assert job.run() == 0
    assert "class images: 5 usable found, 5 wanted, 0 to generate" in caplog.text
    assert len(list((job.checkpoints_dir / "class_images").glob("*.png"))) == 3


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("no_images", "no instance images found"),
        ("broken_images", "could not be used (broken.jpg: not an image"),
        ("unknown_key", "unknown hyperparameter 'lerning_rate' (did you mean 'learning_rate'?)"),
        ("bad_value", "hyperparameter 'training_method' = 'dreambooth': Input should be 'full' or 'lora'"),
        ("bad_json", "Cannot read"),
        ("missing_base_model", "base model path /nowhere/model.safetensors does not exist"),
    ],
)
def test_bad_inputs_fail_with_a_readable_reason(new_job, setup: str, expected: str) -> None:
    hyperparameters = {
        "unknown_key": {"lerning_rate": "1e-4"},
        "bad_value": {"training_method": "dreambooth"},
        "missing_base_model": {"pretrained_model_name_or_path": "/nowhere/model.safetensors"},
    }.get(setup, {})
    job = new_job(hyperparameters, images=setup != "no_images", model=setup != "missing_base_model")
    if setup == "broken_images":
        shutil.rmtree(job.channel("images"))
        (job.channel("images") / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        (job.channel("images") / "readme.md").write_text("hello")
    if setup == "bad_json":
        (job.base / "input" / "config" / "hyperparameters.json").write_text("{not json")
    assert job.run() != 0
    assert job.failure is not None and expected in job.failure
    assert len(job.failure) <= 1024
    assert not (job.model_dir / "model_index.json").exists()


def test_single_file_base_model_trains_like_its_diffusers_folder(
    new_job, tiny_model, tiny_single_file
) -> None:
    settings = {"output_dtype": "fp32", "max_train_steps": "3", "train_text_encoder": "true"}
    from_folder = new_job(settings)
    assert from_folder.run() == 0
    # The channel holds the single file AND a diffusers folder: its configs are used, nothing is fetched.
    from_file = new_job(settings, model=False)
    from_file.add_channel("model", tiny_single_file)
    from_file.add_channel("model", tiny_model.parent)
    assert from_file.run() == 0
    record = json.loads((from_file.model_dir / "dreambooth.json").read_text())
    assert record["base_model"].endswith("tiny-sd.safetensors")
    for component in ("unet", "text_encoder", "vae"):
        assert (
            _max_difference(
                _weights(from_folder.model_dir, component), _weights(from_file.model_dir, component)
            )
            < 1e-6
        )


def test_resume_from_checkpoint_matches_an_uninterrupted_run(new_job, caplog) -> None:
    settings = {"max_train_steps": "6", "save_steps": "4", "output_dtype": "fp32", "center_crop": "false"}
    uninterrupted = new_job(settings)
    assert uninterrupted.run() == 0
    # The periodic checkpoint and the one after the last step, both kept.
    assert sorted(p.name for p in uninterrupted.checkpoints_dir.iterdir()) == [
        "step-00000004",
        "step-00000006",
    ]

    resumed = new_job(settings)
    step_4 = uninterrupted.checkpoints_dir / "step-00000004"
    shutil.copytree(step_4, resumed.checkpoints_dir / step_4.name)  # what SageMaker restores after a reclaim
    with caplog.at_level(logging.INFO):
        assert resumed.run() == 0
    assert "at step 4 of 6" in caplog.text
    for component in ("unet", "text_encoder"):
        difference = _max_difference(
            _weights(uninterrupted.model_dir, component), _weights(resumed.model_dir, component)
        )
        assert difference < 1e-6


def test_checkpoint_from_other_settings_is_refused(new_job) -> None:
    first = new_job({"max_train_steps": "3", "save_steps": "2"})
    assert first.run() == 0
    other = new_job({"max_train_steps": "3", "training_method": "lora"})
    shutil.copytree(first.checkpoints_dir, other.checkpoints_dir)
    assert other.run() == 2
    assert "training_method: 'full' -> 'lora'" in other.failure


def test_sigterm_saves_a_checkpoint_fails_honestly_and_the_restart_resumes(new_job, caplog) -> None:
    settings = {"training_method": "lora", "save_steps": "0", "sigterm_save_min_steps": "1"}
    job = new_job({**settings, "max_train_steps": "100000", "logging_steps": "1"})
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(job.base), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "dreambooth_trainer", "train"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    try:
        for line in process.stdout:
            if line.startswith("[metrics] step=") or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGTERM)
        process.stdout.read()
        code = process.wait(timeout=60)
    finally:
        process.kill()
    assert code == 143
    assert job.failure.startswith("stopped by SIGTERM at step ")
    [checkpoint] = job.checkpoints_dir.glob("step-*")
    stopped_at = int(checkpoint.name.removeprefix("step-"))
    assert stopped_at >= 1 and not (job.model_dir / "pytorch_lora_weights.safetensors").exists()

    # The restarted job (same checkpoints) continues from there and finishes.
    job.write_hyperparameters({**settings, "max_train_steps": str(stopped_at + 2)})
    with caplog.at_level(logging.INFO):
        assert job.run() == 0
    assert f"at step {stopped_at} of {stopped_at + 2}" in caplog.text
    assert job.failure is None
    assert (job.model_dir / "pytorch_lora_weights.safetensors").exists()


def test_v_prediction_8bit_adam_live_latents_and_xformers_fallback(new_job, tmp_path_factory, caplog) -> None:
    v_model = build_tiny_base_model(
        tmp_path_factory.mktemp("vpred") / "tiny-v", prediction_type="v_prediction"
    )
    settings = {
        "use_8bit_adam": "true",
        "max_train_steps": "2",
        "not_cache_latents": "true",
        "attention": "xformers",
    }
    job = new_job(settings, model=False)
    job.add_channel("model", v_model)
    with caplog.at_level(logging.INFO):
        assert job.run() == 0
    assert "xformers asked for but unusable" in caplog.text  # no CUDA here: PyTorch SDPA instead
    assert "cached latents=False" in caplog.text
    scheduler = json.loads((job.model_dir / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction"
