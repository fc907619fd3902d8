"""Training state in /opt/ml/checkpoints, which SageMaker syncs to S3 and restores when a spot job restarts.

Only what cannot be recomputed is saved: trainable weights (LoRA adapters only, for LoRA), optimizer, LR
schedule, grad scaler and EMA. Batches, noise and timesteps derive from (seed, step), so a resumed run replays
the same stream. A checkpoint is written to a temporary folder and renamed, so a SIGKILL mid-write never
leaves a half one to resume.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointMismatchError

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "state.json"  # written last: its presence marks a complete checkpoint


def trainable_parameters(modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Parameter]:
    """Named trainable parameters, in a stable order (the optimizer's param groups follow it)."""
    return {
        f"{prefix}.{name}": param
        for prefix, module in modules.items()
        for name, param in module.named_parameters()
        if param.requires_grad
    }


def latest_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    complete = [
        (int(match[1]), path)
        for path in folder.iterdir()
        if (match := _STEP_DIR.match(path.name)) and (path / STATE_FILE).is_file()
    ]
    return max(complete)[1] if complete else None


def save_checkpoint(
    folder: Path,
    step: int,
    *,
    modules: dict[str, torch.nn.Module],
    optimizer: Any,
    lr_scheduler: Any,
    scaler: Any = None,
    ema: Any = None,
    fingerprint: dict[str, Any],
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    staging = folder / f".tmp-step-{step:08d}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    weights = {name: p.detach().to("cpu").contiguous() for name, p in trainable_parameters(modules).items()}
    save_file(weights, str(staging / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), staging / "lr_scheduler.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), staging / "grad_scaler.pt")
    if ema is not None:
        torch.save(ema.state_dict(), staging / "ema.pt")
    (staging / STATE_FILE).write_text(json.dumps({"step": step, "fingerprint": fingerprint}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    for path in folder.iterdir():  # keep only the newest: full fine-tune checkpoints are gigabytes
        if _STEP_DIR.match(path.name) and path != final:
            shutil.rmtree(path, ignore_errors=True)
    log.info("checkpoint saved: %s", final)
    return final


def load_checkpoint(
    path: Path,
    *,
    modules: dict[str, torch.nn.Module],
    optimizer: Any,
    lr_scheduler: Any,
    scaler: Any = None,
    ema: Any = None,
    fingerprint: dict[str, Any],
) -> int:
    """Restore in place and return the step to continue from."""
    state = json.loads((path / STATE_FILE).read_text())
    saved = state.get("fingerprint", {})
    differing = sorted(key for key in set(saved) | set(fingerprint) if saved.get(key) != fingerprint.get(key))
    if differing:
        detail = ", ".join(f"{key}: {saved.get(key)!r} -> {fingerprint.get(key)!r}" for key in differing)
        raise CheckpointMismatchError(
            f"checkpoint {path.name} was written with other settings ({detail}); "
            "point CheckpointConfig at an empty S3 prefix to start over"
        )
    params = trainable_parameters(modules)
    weights = load_file(str(path / "trainable.safetensors"))
    if set(weights) != set(params):
        raise CheckpointMismatchError(f"checkpoint {path.name} does not hold the weights this run trains")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    device_map = "cpu"
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device_map, weights_only=False))
    lr_scheduler.load_state_dict(
        torch.load(path / "lr_scheduler.pt", map_location=device_map, weights_only=False)
    )
    if scaler is not None and (path / "grad_scaler.pt").exists():
        scaler.load_state_dict(torch.load(path / "grad_scaler.pt", weights_only=False))
    if ema is not None:
        ema.load_state_dict(torch.load(path / "ema.pt", map_location=device_map, weights_only=False))
    return int(state["step"])
