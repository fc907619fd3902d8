"""What a job leaves besides the diffusers folder / LoRA file: the single-file checkpoint the WebUIs load
(original Stable Diffusion key layout) and the sample images, both listed in dreambooth.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel

from dreambooth_trainer import single_file
from dreambooth_trainer.errors import BaseModelError
from dreambooth_trainer.hyperparameters import TrainingHyperparameters
from dreambooth_trainer.job import check_single_file_export
from dreambooth_trainer.model_loading import BaseModelSource, load_model_parts
from dreambooth_trainer.offline_fixtures import build_tiny_base_model, write_single_file_checkpoint

COMPONENTS = ("unet", "vae", "text_encoder")


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in module.state_dict().items() if not k.endswith("position_ids")}


def _assert_same_weights(a: StableDiffusionPipeline, b: StableDiffusionPipeline) -> None:
    for component in COMPONENTS:
        left, right = _state(getattr(a, component)), _state(getattr(b, component))
        assert left.keys() == right.keys(), component
        assert all(torch.equal(left[k], right[k]) for k in left), component


def _from_single_file(path: Path, config: Path) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_single_file(
        str(path),
        config=str(config),
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
    )


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


# --- single-file checkpoint ------------------------------------------------------------------------------


def test_full_job_writes_a_single_file_checkpoint_that_from_single_file_loads(new_job) -> None:
    job = new_job({"model_name": "sks dog/v1", "num_samples": "0"})
    assert job.run() == 0
    path = job.model_dir / "sks-dog-v1.safetensors"  # model_name made a safe file name
    record = json.loads((job.model_dir / "dreambooth.json").read_text())
    assert record["single_file_name"] == path.name and record["samples"] == []

    with safe_open(path, "pt") as f:
        keys = set(f.keys())
        assert {f.get_tensor(k).dtype for k in keys} == {torch.float16}  # output_dtype, fp16 by default
        assert f.get_tensor("first_stage_model.encoder.mid.attn_1.q.weight").ndim == 4  # 1x1 conv
    assert {key.split(".")[0] for key in keys} == {"model", "first_stage_model", "cond_stage_model"}
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in keys  # upsampler after cross-attention
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in keys

    # The WebUI file holds exactly the weights of the exported diffusers folder.
    exported = StableDiffusionPipeline.from_pretrained(job.model_dir, local_files_only=True)
    _assert_same_weights(_from_single_file(path, job.model_dir), exported)


def test_single_file_is_optional_and_never_written_for_lora(new_job) -> None:
    off = new_job({"export_single_file": "false", "num_samples": "0", "max_train_steps": "1"})
    assert off.run() == 0
    assert not list(off.model_dir.glob("*.safetensors"))
    assert json.loads((off.model_dir / "dreambooth.json").read_text())["single_file_name"] is None

    lora = new_job({"training_method": "lora", "num_samples": "0", "max_train_steps": "1"})
    assert lora.run() == 0
    assert sorted(p.name for p in lora.model_dir.glob("*.safetensors")) == [
        "dreambooth-model-lora.safetensors",  # the kohya-named LoRA, not a single-file checkpoint
        "pytorch_lora_weights.safetensors",
    ]


def test_sd2_shaped_model_is_written_in_the_open_clip_layout(tmp_path: Path) -> None:
    model = build_tiny_base_model(tmp_path / "tiny-sd2", sd2=True)
    path = write_single_file_checkpoint(model, tmp_path / "tiny-sd2.safetensors")
    with safe_open(path, "pt") as f:
        keys = set(f.keys())
        fused = f.get_tensor("cond_stage_model.model.transformer.resblocks.4.attn.in_proj_weight")
    assert fused.shape == (3 * 32, 32)  # q, k, v stacked
    assert not any(key.startswith("cond_stage_model.transformer.") for key in keys)
    _assert_same_weights(
        _from_single_file(path, model), StableDiffusionPipeline.from_pretrained(model, local_files_only=True)
    )


def _meta_ldm_state(unet_kwargs: dict, text_kwargs: dict) -> dict[str, torch.Tensor]:
    """Full-size SD modules on the meta device (no memory, no time), mapped to original-layout names."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_kwargs)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_kwargs))
    single_file.check_supported(unet, vae, text_encoder)
    return single_file.to_ldm_state_dict(
        (unet.state_dict(), unet.config),
        (vae.state_dict(), vae.config),
        (text_encoder.state_dict(), text_encoder.config),
    )


SD15_TEXT = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)
SD21_TEXT = dict(
    hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23, hidden_act="gelu"
)


@pytest.mark.parametrize("version", ["sd15", "sd21"])
def test_full_size_names_and_shapes_are_those_of_the_original_checkpoints(version: str) -> None:
    """Names and shapes as in the released v1-5 / v2-1 .safetensors files (diffusers' reader is lenient; the
    WebUIs load the original model classes and need these exact names)."""
    sd21 = version == "sd21"
    unet_kwargs = dict(
        cross_attention_dim=1024 if sd21 else 768,
        attention_head_dim=(5, 10, 20, 20) if sd21 else 8,
        use_linear_projection=sd21,
    )
    state = _meta_ldm_state(unet_kwargs, SD21_TEXT if sd21 else SD15_TEXT)
    shapes = {key: tuple(tensor.shape) for key, tensor in state.items()}
    unet = "model.diffusion_model."
    expected = {
        f"{unet}time_embed.0.weight": (1280, 320),
        f"{unet}input_blocks.0.0.weight": (320, 4, 3, 3),
        f"{unet}input_blocks.1.1.proj_in.weight": (320, 320) if sd21 else (320, 320, 1, 1),
        f"{unet}input_blocks.3.0.op.weight": (320, 320, 3, 3),
        f"{unet}input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
        f"{unet}input_blocks.11.0.emb_layers.1.weight": (1280, 1280),
        f"{unet}middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 1024 if sd21 else 768),
        f"{unet}middle_block.2.out_layers.3.weight": (1280, 1280, 3, 3),
        f"{unet}output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        f"{unet}output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        f"{unet}output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        f"{unet}output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
        f"{unet}output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        f"{unet}out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.down.2.downsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.mid.block_2.conv1.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.1.block.0.nin_shortcut.weight": (256, 512, 1, 1),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.decoder.norm_out.weight": (128,),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
    }
    if sd21:
        expected |= {
            "cond_stage_model.model.token_embedding.weight": (49408, 1024),
            "cond_stage_model.model.positional_embedding": (77, 1024),
            "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight": (3072, 1024),
            "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_bias": (3072,),
            "cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.weight": (4096, 1024),
            "cond_stage_model.model.ln_final.bias": (1024,),
        }
    else:
        text = "cond_stage_model.transformer.text_model."
        expected |= {
            f"{text}embeddings.token_embedding.weight": (49408, 768),
            f"{text}encoder.layers.11.self_attn.q_proj.weight": (768, 768),
            f"{text}encoder.layers.11.mlp.fc2.weight": (768, 3072),
            f"{text}final_layer_norm.weight": (768,),
        }
    assert {key: shapes.get(key) for key in expected} == expected
    counts = {
        prefix: sum(key.startswith(prefix) for key in shapes) for prefix in ("model.", "first_stage_model.")
    }
    assert counts == {"model.": 686, "first_stage_model.": 248}  # as in the released checkpoints
    # Text encoder: v1-5 has 196 weights (+ a position_ids buffer); v2-1 288 + text_projection, less the 24th
    # layer (12) that diffusers' 23-layer SD 2 text encoder does not have.
    assert sum(key.startswith("cond_stage_model.") for key in shapes) == (276 + 4 if sd21 else 196)
    input_blocks = {key.split(".")[3] for key in shapes if ".input_blocks." in key}
    output_blocks = {key.split(".")[3] for key in shapes if ".output_blocks." in key}
    assert input_blocks == output_blocks == {str(i) for i in range(12)}


def test_a_model_with_weights_the_layout_has_no_name_for_is_refused_before_training(tiny_model) -> None:
    parts = load_model_parts(BaseModelSource("folder", str(tiny_model)))
    parts.unet.register_parameter("extra_gain", torch.nn.Parameter(torch.ones(1)))
    prompt = "a photo of sks dog"
    with pytest.raises(BaseModelError, match="extra_gain.*export_single_file=false"):
        check_single_file_export(TrainingHyperparameters(instance_prompt=prompt), parts)
    # Asked not to, or LoRA (no single file): nothing to check.
    check_single_file_export(TrainingHyperparameters(instance_prompt=prompt, export_single_file=False), parts)
    check_single_file_export(TrainingHyperparameters(instance_prompt=prompt, training_method="lora"), parts)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sks-dog", "sks-dog.safetensors"),
        ("My Dog: v2!", "My-Dog-v2.safetensors"),
        ("../..", "model.safetensors"),
    ],
)
def test_single_file_name(name: str, expected: str) -> None:
    assert single_file.single_file_name(name) == expected


# --- samples --------------------------------------------------------------------------------------------


def test_lora_samples_are_renderings_of_base_plus_adapter(new_job, tiny_model) -> None:
    settings = {
        "training_method": "lora",
        "learning_rate": "5e-2",
        "num_samples": "3",
        "sample_inference_steps": "3",
        "sample_guidance_scale": "5",
        "output_dtype": "fp32",
        "seed": "7",
    }
    job = new_job(settings)
    assert job.run() == 0
    names = ["samples/sample-0.png", "samples/sample-1.png", "samples/sample-2.png"]
    assert json.loads((job.model_dir / "dreambooth.json").read_text())["samples"] == names
    samples = [_pixels(job.model_dir / name) for name in names]
    assert all(image.shape == (32, 32, 3) for image in samples)  # the training resolution
    assert np.abs(samples[0] - samples[1]).max() > 0  # a seed each

    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_model, local_files_only=True, torch_dtype=torch.float32
    )
    pipe.set_progress_bar_config(disable=True)

    def render() -> np.ndarray:
        image = pipe(
            "a photo of sks dog",
            num_inference_steps=3,
            guidance_scale=5.0,
            height=32,
            width=32,
            generator=torch.Generator().manual_seed(7 + 1),
        ).images[0]
        return np.asarray(image, dtype=np.int16)

    base_only = render()
    pipe.load_lora_weights(job.model_dir)
    with_adapter = render()
    assert np.abs(with_adapter - samples[1]).max() <= 1  # the same image, from the exported adapter
    assert np.abs(base_only - samples[1]).max() > 1  # ... and not the base model's


def test_full_samples_match_the_exported_pipeline(new_job) -> None:
    job = new_job({"num_samples": "2", "output_dtype": "fp32", "export_single_file": "false"})
    assert job.run() == 0
    assert sorted(p.name for p in (job.model_dir / "samples").iterdir()) == ["sample-0.png", "sample-1.png"]
    pipe = StableDiffusionPipeline.from_pretrained(job.model_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a photo of sks dog",
        num_inference_steps=2,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(42),
    ).images[0]
    assert (
        np.abs(np.asarray(image, dtype=np.int16) - _pixels(job.model_dir / "samples/sample-0.png")).max() <= 1
    )


def test_a_sampling_error_fails_the_job_and_writes_no_model(new_job, monkeypatch) -> None:
    def broken(*_args, **_kwargs):
        raise RuntimeError("sampler exploded")

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", broken)
    job = new_job({"num_samples": "2"})
    assert job.run() == 1
    assert job.failure.startswith(
        "rendering sample image 1 of 2 after training failed: RuntimeError: sampler exploded"
    )
    assert not (job.model_dir / "model_index.json").exists()
    assert not (job.model_dir / "dreambooth.json").exists()
