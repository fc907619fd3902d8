"""Write the trained model: a diffusers folder (full fine-tune) plus, unless export_single_file=false, the
same weights as one original-layout `<model_name>.safetensors` for the WebUIs; or, for LoRA, two files with
the same adapter at its trained strength (diffusers naming, and kohya naming for the WebUIs and ComfyUI).
Then a small record (dreambooth.json) that also lists the sample images.

Weights are safetensors in half precision unless output_dtype says otherwise: an SD 1.5 folder is ~2 GB in
fp16 instead of ~4 GB, and inference runs in fp16 anyway.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from .hyperparameters import TrainingHyperparameters
from .loop import LoopResult
from .model_loading import ModelParts, assemble_pipeline
from .single_file import single_file_name, write_single_file

log = logging.getLogger(__name__)

OUTPUT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
KOHYA_LORA_SUFFIX = "-lora"
CLIP_PREFIX = "text_model."
TRAINING_RECORD = "dreambooth.json"


def export_full_model(
    parts: ModelParts, result: LoopResult, out_dir: Path, dtype: torch.dtype, single_file: str | None
) -> None:
    """The diffusers folder into out_dir; with single_file, also out_dir/single_file (original layout)."""

    vae, text_encoder = parts.vae, result.text_encoder
    for (
        name,
        state,
    ) in result.frozen_fp32.items():  # precision the loop gave up for speed, restored for export
        {"vae": vae, "text_encoder": text_encoder}[name].to("cpu").load_state_dict(state)
    pipe = assemble_pipeline(parts, unet=result.unet, text_encoder=text_encoder, vae=vae)
    pipe.to("cpu", dtype)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    if single_file:
        write_single_file(result.unet, vae, text_encoder, out_dir / single_file, dtype)
        log.info("single-file checkpoint written: %s", out_dir / single_file)


def _adapter_state(module: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The module's LoRA weights in PEFT naming (`…q_proj.lora_A.weight`), on the CPU in dtype."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(module, save_embedding_layers=False)
    return {key: tensor.detach().to("cpu", dtype).contiguous() for key, tensor in state.items()}


def _clip_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Text-encoder keys under CLIP's `text_model.` path, which transformers 5 no longer puts in module
    names but every LoRA loader (diffusers with transformers 4 or 5, the WebUIs, ComfyUI) expects."""
    return {key if key.startswith(CLIP_PREFIX) else CLIP_PREFIX + key: value for key, value in state.items()}


def _adapter_metadata(module: torch.nn.Module) -> dict[str, Any]:
    """The adapter's LoraConfig (rank, lora_alpha, targets): load_lora_weights scales by alpha/rank only
    when the file carries it, and by 1 otherwise."""
    config = module.peft_config["default"].to_dict()
    config["base_model_name_or_path"] = None  # a path inside the training container: meaningless elsewhere
    return config


def kohya_lora_name(model_name: str) -> str:
    """`<model_name>-lora.safetensors`, sanitized like the single-file checkpoint's name."""
    return single_file_name(f"{model_name}{KOHYA_LORA_SUFFIX}")


def kohya_state_dict(
    unet_state: dict[str, torch.Tensor],
    text_encoder_state: dict[str, torch.Tensor] | None,
    alpha: float,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """PEFT-named adapters -> kohya names (`lora_unet_…`, `lora_te_…`, `.alpha`) via diffusers' converter.

    Two corrections on its output: the converter writes every `.alpha` as the rank (right only when
    alpha == rank), so the trained alpha replaces it; and it names a single text encoder `lora_te1_`
    (SDXL's first encoder), while SD 1.x/2.x files use `lora_te_`, the name kohya's own scripts write.
    """
    from diffusers.utils import convert_state_dict_to_kohya

    peft_named = {f"unet.{key}": value for key, value in unet_state.items()}
    for key, value in _clip_keys(text_encoder_state or {}).items():
        peft_named[f"text_encoder.{key}"] = value
    converted = convert_state_dict_to_kohya(peft_named)
    kohya: dict[str, torch.Tensor] = {}
    for key, value in converted.items():
        if key.startswith("lora_te1_"):
            key = "lora_te_" + key[len("lora_te1_") :]
        if key.endswith(".alpha"):
            value = torch.tensor(alpha)
        kohya[key] = value.to(dtype).contiguous()
    return kohya


def kohya_metadata(hp: TrainingHyperparameters, base_model: str) -> dict[str, str]:
    """The `ss_*` fields kohya's scripts write; the WebUIs show them and read the base model version."""
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(hp.lora_rank),
        "ss_network_alpha": f"{hp.effective_lora_alpha:g}",
        "ss_sd_model_name": base_model,
        "ss_resolution": f"({hp.resolution}, {hp.resolution})",
        "ss_output_name": hp.model_name,
        "ss_training_comment": f"DreamBooth LoRA, instance prompt: {hp.instance_prompt}",
    }


def export_lora(
    result: LoopResult, hp: TrainingHyperparameters, out_dir: Path, dtype: torch.dtype, base_model: str
) -> str:
    """Two files with the same weights at the trained strength: pytorch_lora_weights.safetensors (diffusers
    naming, adapter configs in its metadata) and <model_name>-lora.safetensors (kohya naming with `.alpha`
    tensors: AUTOMATIC1111, Forge, ComfyUI). Returns the kohya file's name."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from safetensors.torch import save_file

    with_text_encoder = hp.train_text_encoder
    unet_state = _adapter_state(result.unet, dtype)
    text_encoder_state = _adapter_state(result.text_encoder, dtype) if with_text_encoder else None
    StableDiffusionPipeline.save_lora_weights(
        out_dir,
        unet_lora_layers=convert_state_dict_to_diffusers(unet_state),
        text_encoder_lora_layers=(
            convert_state_dict_to_diffusers(_clip_keys(text_encoder_state)) if text_encoder_state else None
        ),
        weight_name=LORA_WEIGHT_NAME,
        safe_serialization=True,
        unet_lora_adapter_metadata=_adapter_metadata(result.unet),
        text_encoder_lora_adapter_metadata=_adapter_metadata(result.text_encoder)
        if with_text_encoder
        else None,
    )
    name = kohya_lora_name(hp.model_name)
    kohya = kohya_state_dict(unet_state, text_encoder_state, hp.effective_lora_alpha, dtype)
    save_file(kohya, out_dir / name, metadata=kohya_metadata(hp, base_model))
    return name


def export_model(
    parts: ModelParts,
    result: LoopResult,
    hp: TrainingHyperparameters,
    out_dir: Path,
    extra: dict[str, Any],
    samples: list[str] | None = None,
) -> dict[str, Any]:
    """Write the model into out_dir and return the training record (also saved as dreambooth.json).

    samples: the sample images already rendered into out_dir (relative paths), listed in the record.
    """
    import diffusers

    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = OUTPUT_DTYPES[hp.output_dtype]
    single_file = (
        single_file_name(hp.model_name) if hp.training_method == "full" and hp.export_single_file else None
    )
    # diffusers warns that fp16 pipelines cannot run on CPU: true, and irrelevant for writing files.
    verbosity = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()
    kohya_name = None
    try:
        if hp.training_method == "lora":
            kohya_name = export_lora(result, hp, out_dir, dtype, Path(parts.source.location).name)
        else:
            export_full_model(parts, result, out_dir, dtype, single_file)
    finally:
        diffusers.utils.logging.set_verbosity(verbosity)
    record = {
        "kind": hp.training_method,
        "model_name": hp.model_name,
        "prompt": hp.instance_prompt,
        "class_prompt": hp.class_prompt if hp.with_prior_preservation else None,
        "base_model": parts.source.location,
        "resolution": hp.resolution,
        "steps": result.global_step,
        "output_dtype": hp.output_dtype,
        "lora_weight_name": LORA_WEIGHT_NAME if hp.training_method == "lora" else None,
        "kohya_lora_name": kohya_name,
        "single_file_name": single_file,
        "samples": list(samples or []),
        "hyperparameters": hp.to_sagemaker_strings(),
        **extra,
    }
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
    log.info("model written to %s (%s, %s)", out_dir, hp.training_method, hp.output_dtype)
    return record
