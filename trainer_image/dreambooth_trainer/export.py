"""Write the trained model: a diffusers folder (full fine-tune) plus, unless export_single_file=false, the
same weights as one original-layout `<model_name>.safetensors` for the WebUIs; or one LoRA .safetensors file.
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


def export_lora(result: LoopResult, out_dir: Path, dtype: torch.dtype, with_text_encoder: bool) -> None:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    def adapter(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        state = convert_state_dict_to_diffusers(
            get_peft_model_state_dict(module, save_embedding_layers=False)
        )
        return {key: tensor.detach().to("cpu", dtype).contiguous() for key, tensor in state.items()}

    StableDiffusionPipeline.save_lora_weights(
        out_dir,
        unet_lora_layers=adapter(result.unet),
        text_encoder_lora_layers=adapter(result.text_encoder) if with_text_encoder else None,
        weight_name=LORA_WEIGHT_NAME,
        safe_serialization=True,
    )


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
    try:
        if hp.training_method == "lora":
            export_lora(result, out_dir, dtype, with_text_encoder=hp.train_text_encoder)
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
        "single_file_name": single_file,
        "samples": list(samples or []),
        "hyperparameters": hp.to_sagemaker_strings(),
        **extra,
    }
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
    log.info("model written to %s (%s, %s)", out_dir, hp.training_method, hp.output_dtype)
    return record
