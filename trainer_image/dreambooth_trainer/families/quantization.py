"""Which base-weight quantization a job trains on, and diffusers' loading arguments for it.

FLUX-class transformers (FLUX.1-dev ~11.9 B parameters, Z-Image ~6 B) do not fit a 16-24 GB GPU in bf16, so
their base weights are loaded by diffusers' bitsandbytes integration (`BitsAndBytesConfig` as the
transformer's `quantization_config`) and frozen; the LoRA adapter peft puts on top trains in fp32, as in
diffusers' FLUX QLoRA example. NF4 (4-bit) is the choice up to 40 GB of GPU memory (L4 24 GB, A10G 24 GB),
int8 above it (A100/H100), where it is closer to the bf16 weights. SD and SDXL keep full-precision weights:
their UNets fit a T4 in fp16, a full SD fine-tune must update the very weights NF4 would freeze, and their
outputs stay what they were.
"""

from __future__ import annotations

from typing import Any

from ..hyperparameters import HyperparameterError

QUANTIZABLE_FAMILIES = ("flux", "zimage")
NF4_MAX_GPU_GIB = 40.0  # up to here nf4 (24 GB cards), above it int8 (A100 40 GB counts as small: 40.0 GiB)
QUANTIZATIONS = ("none", "nf4", "int8")


def choose_base_quantization(requested: str, family: str, gpu_memory_gib: float | None) -> tuple[str, str]:
    """(none | nf4 | int8, why) for the hyperparameter (auto | off | nf4 | int8) and a family on this
    machine's GPU (None: no GPU). An explicit choice wins for the FLUX-class families; SD/SDXL refuse a
    quantized base, naming the setting."""
    if family not in QUANTIZABLE_FAMILIES:
        if requested in ("nf4", "int8"):
            raise HyperparameterError(
                f"hyperparameter 'base_quantization' = {requested}: {family} base models train on "
                f"full-precision weights (quantized base weights are for the FLUX-class families: "
                f"{', '.join(QUANTIZABLE_FAMILIES)}); set base_quantization=off or leave it out"
            )
        return "none", f"{family} trains on full-precision base weights"
    if requested == "off":
        return "none", "base_quantization=off as the job asked: full-precision base weights"
    if requested != "auto":
        return requested, f"base_quantization={requested} as the job asked"
    if gpu_memory_gib is None:
        return "none", "no GPU: full-precision base weights (set base_quantization=nf4 to ask for it)"
    if gpu_memory_gib <= NF4_MAX_GPU_GIB:
        return "nf4", f"{gpu_memory_gib:.1f} GiB GPU (<= {NF4_MAX_GPU_GIB:.0f}): NF4 4-bit base weights"
    return "int8", f"{gpu_memory_gib:.1f} GiB GPU (> {NF4_MAX_GPU_GIB:.0f}): int8 base weights"


def quantized_load_kwargs(choice: str, cuda: bool) -> dict[str, Any]:
    """Keyword arguments of the denoiser's from_pretrained / from_single_file for a quantized base: diffusers'
    BitsAndBytesConfig (bf16 compute), the dtype of the layers left unquantized (bf16 on GPU, fp32 on CPU,
    where the loop runs in fp32), and the device the weights are quantized onto. Empty for none."""
    if choice == "none":
        return {}
    if choice not in QUANTIZATIONS:
        raise ValueError(f"unknown base quantization {choice!r}; one of {', '.join(QUANTIZATIONS)}")
    import torch
    from diffusers import BitsAndBytesConfig

    if choice == "nf4":
        config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {
        "quantization_config": config,
        "torch_dtype": torch.bfloat16 if cuda else torch.float32,
        # diffusers' bnb quantizer defaults the device map to the current CUDA device
        "device_map": None if cuda else "cpu",
    }


def is_quantized(module: Any) -> bool:
    """A module loaded with a quantization_config: diffusers refuses to cast it, only moves it."""
    return bool(getattr(module, "is_quantized", False))
