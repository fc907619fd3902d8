"""One .safetensors in the original Stable Diffusion (CompVis/LDM) key layout, for AUTOMATIC1111 and ComfyUI.

diffusers reads this layout (`from_single_file`) but ships no writer (only a script), so the mapping is here:

- UNet under `model.diffusion_model.`: `input_blocks`/`middle_block`/`output_blocks`, resnets renamed
  (`in_layers`, `emb_layers`, `out_layers`, `skip_connection`), transformer blocks unchanged, upsamplers in
  slot 2 of a cross-attention level and slot 1 otherwise, `time_embed`, `out`.
- VAE under `first_stage_model.`: `down.N.block`, `up.(levels-1-N).block` (the original counts up-levels
  from the bottom), `mid.block_1/attn_1/block_2`, `nin_shortcut`; the mid-block attention's q/k/v/proj_out are
  1x1 convolutions there, linear layers in diffusers (reshaped).
- Text encoder: SD 1.x's CLIP under `cond_stage_model.transformer.text_model.` (transformers 5 dropped the
  `text_model.` prefix from CLIPTextModel's names; the original keeps it). SD 2.x's OpenCLIP (recognised by
  its `gelu` activation; OpenAI's CLIP uses `quick_gelu`) under `cond_stage_model.model.`: q/k/v fused into
  `in_proj`, `resblocks.N`. diffusers' SD 2 text encoder holds 23 of the 24 layers and no projection: the
  penultimate-layer output SD 2 conditions on. The WebUIs stop before the 24th layer too, so it is not
  written (there are no weights to write).

Every weight must have a name here, or the export refuses; `check_supported` maps names alone (meta tensors),
so a job finds out before training.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."
SINGLE_FILE_SUFFIX = ".safetensors"

# diffusers' own reading table (diffusers.loaders.single_file_utils.DIFFUSERS_TO_LDM_MAPPING), as of 0.42.
_UNET_TOP = {
    "time_embedding.linear_1.weight": "time_embed.0.weight",
    "time_embedding.linear_1.bias": "time_embed.0.bias",
    "time_embedding.linear_2.weight": "time_embed.2.weight",
    "time_embedding.linear_2.bias": "time_embed.2.bias",
    "conv_in.weight": "input_blocks.0.0.weight",
    "conv_in.bias": "input_blocks.0.0.bias",
    "conv_norm_out.weight": "out.0.weight",
    "conv_norm_out.bias": "out.0.bias",
    "conv_out.weight": "out.2.weight",
    "conv_out.bias": "out.2.bias",
}
_VAE_TOP = {
    f"{name}.{p}": f"{name.replace('conv_norm_out', 'norm_out')}.{p}"
    for name in (
        *(
            f"{part}.{layer}"
            for part in ("encoder", "decoder")
            for layer in ("conv_in", "conv_out", "conv_norm_out")
        ),
        "quant_conv",
        "post_quant_conv",
    )
    for p in ("weight", "bias")
}
_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
]
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_CONV_ATTENTION = re.compile(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$")
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_OPEN_CLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


class SingleFileExportError(ValueError):
    """A weight this exporter has no original-layout name for (a model that is not SD 1.x/2.x-shaped)."""


def _config_value(config: Any, name: str) -> Any:
    return config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)


def single_file_name(model_name: str) -> str:
    """`<model_name>.safetensors`, with anything but letters, digits, '.', '_' and '-' made a '-'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip(".-") or "model"
    return stem + SINGLE_FILE_SUFFIX


def _resnet(rest: str) -> str:
    for diffusers_name, ldm_name in _RESNET:
        if rest.startswith(diffusers_name + "."):
            return ldm_name + rest[len(diffusers_name) :]
    raise KeyError(rest)


def unet_key(key: str, config: Any) -> str:
    """Original name (without `model.diffusion_model.`) of a diffusers UNet2DConditionModel weight."""
    if key in _UNET_TOP:
        return _UNET_TOP[key]
    per_level = _config_value(config, "layers_per_block") + 1
    try:
        if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            index = per_level * int(m[1]) + int(m[3]) + 1
            if m[2] == "resnets":
                return f"input_blocks.{index}.0.{_resnet(m[4])}"
            return f"input_blocks.{index}.1.{m[4]}"
        if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key):
            return f"input_blocks.{per_level * (int(m[1]) + 1)}.0.op.{m[2]}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            index = per_level * int(m[1]) + int(m[3])
            if m[2] == "resnets":
                return f"output_blocks.{index}.0.{_resnet(m[4])}"
            return f"output_blocks.{index}.1.{m[4]}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key):
            level = int(m[1])
            slot = 2 if _config_value(config, "up_block_types")[level].startswith("CrossAttn") else 1
            return f"output_blocks.{per_level * level + per_level - 1}.{slot}.conv.{m[2]}"
        if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            return f"middle_block.1.{m[1]}"
    except KeyError:
        pass
    raise SingleFileExportError(f"no original-layout name for UNet weight {key}")


def vae_key(key: str, config: Any) -> str:
    """Original name (without `first_stage_model.`) of a diffusers AutoencoderKL weight."""
    if key in _VAE_TOP:
        return _VAE_TOP[key]
    levels = len(_config_value(config, "up_block_types"))

    def shortcut(rest: str) -> str:
        return rest.replace("conv_shortcut.", "nin_shortcut.")

    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{shortcut(m[3])}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{shortcut(m[3])}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{shortcut(m[3])}"
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key)
    if m and m[2] in _VAE_ATTENTION:
        return f"{m[1]}.mid.attn_1.{_VAE_ATTENTION[m[2]]}.{m[3]}"
    raise SingleFileExportError(f"no original-layout name for VAE weight {key}")


def is_open_clip(text_encoder_config: Any) -> bool:
    """SD 2.x's OpenCLIP text encoder (gelu) rather than SD 1.x's OpenAI CLIP (quick_gelu)."""
    return _config_value(text_encoder_config, "hidden_act") == "gelu"


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    return {UNET_PREFIX + unet_key(key, config): tensor for key, tensor in state.items()}


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in state.items():
        new_key = vae_key(key, config)
        if _VAE_CONV_ATTENTION.search(new_key) and tensor.ndim == 2:
            tensor = tensor.reshape(*tensor.shape, 1, 1)  # linear -> 1x1 conv
        out[VAE_PREFIX + new_key] = tensor
    return out


def _text_key(key: str) -> str:
    """CLIPTextModel names with or without transformers 4's `text_model.` prefix -> without it."""
    return key.removeprefix("text_model.")


def clip_to_ldm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SD 1.x: `cond_stage_model.transformer.text_model.<transformers name>`; the position_ids buffer is left
    out (loaders rebuild it)."""
    out = {}
    for key, tensor in state.items():
        key = _text_key(key)
        if key.endswith("position_ids"):
            continue
        if not re.match(r"(embeddings|encoder\.layers\.\d+|final_layer_norm)\.", key):
            raise SingleFileExportError(f"no original-layout name for text-encoder weight {key}")
        out[CLIP_PREFIX + "text_model." + key] = tensor
    return out


def open_clip_to_ldm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SD 2.x: `cond_stage_model.model.*`, with each layer's q/k/v fused into in_proj_weight/in_proj_bias."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        key = _text_key(key)
        if key.endswith("position_ids"):
            continue
        if key in _OPEN_CLIP_TOP:
            out[OPEN_CLIP_PREFIX + _OPEN_CLIP_TOP[key]] = tensor
            continue
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        if m is None:
            raise SingleFileExportError(f"no original-layout name for text-encoder weight {key}")
        block = f"{OPEN_CLIP_PREFIX}transformer.resblocks.{m[1]}."
        if projection := re.fullmatch(r"self_attn\.(q|k|v)_proj", m[2]):
            qkv.setdefault((block, m[3]), {})[projection[1]] = tensor
        elif m[2] in _OPEN_CLIP_LAYER:
            out[f"{block}{_OPEN_CLIP_LAYER[m[2]]}.{m[3]}"] = tensor
        else:
            raise SingleFileExportError(f"no original-layout name for text-encoder weight {key}")
    for (block, kind), parts in qkv.items():
        if sorted(parts) != ["k", "q", "v"]:
            raise SingleFileExportError(f"{block}: q/k/v {kind} incomplete ({sorted(parts)})")
        out[f"{block}attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def text_encoder_to_ldm(state: Mapping[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    return open_clip_to_ldm(state) if is_open_clip(config) else clip_to_ldm(state)


def to_ldm_state_dict(
    unet: tuple[Mapping[str, torch.Tensor], Any],
    vae: tuple[Mapping[str, torch.Tensor], Any],
    text_encoder: tuple[Mapping[str, torch.Tensor], Any],
) -> dict[str, torch.Tensor]:
    """(state dict, config) of each diffusers/transformers component -> one original-layout state dict."""
    return {
        **unet_to_ldm(*unet),
        **vae_to_ldm(*vae),
        **text_encoder_to_ldm(*text_encoder),
    }


def _module_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: tensor.detach() for key, tensor in module.state_dict().items()}


def check_supported(unet: torch.nn.Module, vae: torch.nn.Module, text_encoder: torch.nn.Module) -> None:
    """Map every name of these modules (on meta tensors: no memory, no time); raise SingleFileExportError."""

    def meta(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in module.state_dict().items()}

    to_ldm_state_dict(
        (meta(unet), unet.config), (meta(vae), vae.config), (meta(text_encoder), text_encoder.config)
    )


def save_ldm_state_dict(state: Mapping[str, torch.Tensor], path: Path, dtype: torch.dtype | None) -> Path:
    from safetensors.torch import save_file

    tensors = {
        key: (tensor.to("cpu", dtype) if dtype is not None else tensor.to("cpu")).contiguous()
        for key, tensor in state.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def write_single_file(
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoder: torch.nn.Module,
    path: str | Path,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the loaded modules as one original-layout .safetensors (in dtype; as they are when None)."""
    state = to_ldm_state_dict(
        (_module_state(unet), unet.config),
        (_module_state(vae), vae.config),
        (_module_state(text_encoder), text_encoder.config),
    )
    return save_ldm_state_dict(state, Path(path), dtype)


def write_single_file_from_folder(model_dir: str | Path, path: str | Path) -> Path:
    """Pack a diffusers SD 1.x/2.x folder into one original-layout .safetensors, weights as stored."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)

    def component(name: str, weights: str) -> tuple[dict[str, torch.Tensor], dict]:
        config = json.loads((model_dir / name / "config.json").read_text())
        return load_file(model_dir / name / weights), config

    state = to_ldm_state_dict(
        component("unet", "diffusion_pytorch_model.safetensors"),
        component("vae", "diffusion_pytorch_model.safetensors"),
        component("text_encoder", "model.safetensors"),
    )
    return save_ldm_state_dict(state, Path(path), None)
