"""Training state in /opt/ml/checkpoints, which SageMaker syncs to S3 and restores when a spot job restarts.

Only what cannot be recomputed is saved: trainable weights (LoRA adapters only, for LoRA), optimizer, LR
schedule, grad scaler and EMA. Batches, noise and timesteps derive from (seed, step), so a resumed run replays
the same stream.

SageMaker uploads the folder file by file in the background and mirrors local deletions, so a restored copy
can hold a checkpoint's small files next to an unfinished large one. Hence:
- each checkpoint is written in place into ``step-N/`` (no temporary folder renamed: that would upload it
  twice), and its marker ``checkpoint.json`` (every file's size and sha256) is written last;
- loading verifies the marker against the files and falls back to the previous checkpoint, or a fresh start,
  instead of crashing;
- the two newest verified checkpoints are kept; an older one is deleted only once a newer one verified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointMismatchError

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d+)$")
MARKER_FILE = "checkpoint.json"  # written last: sizes and sha256 of every other file
KEEP_VERIFIED = 2

# SageMaker sends SIGKILL this long after SIGTERM (StopTrainingJob, MaxRuntime, spot reclaim).
SIGTERM_WINDOW_SECONDS = 120.0
# A SIGTERM save must fit with room to spare: estimate x SAVE_TIME_SAFETY + RESERVE_SECONDS.
SAVE_TIME_SAFETY = 1.5
RESERVE_SECONDS = 20.0
# Before the first measured save: a deliberately low local-disk write rate (EBS gp2/gp3 baselines start here).
ASSUMED_WRITE_BYTES_PER_SECOND = 100e6
# Default periodic interval: this many checkpoints over the run, so a reclaim loses at most this fraction.
DEFAULT_CHECKPOINTS_PER_RUN = 4


class CheckpointInvalid(Exception):
    """A checkpoint folder whose files do not match its marker (or that has none)."""


def trainable_parameters(modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Parameter]:
    """Named trainable parameters, in a stable order (the optimizer's param groups follow it)."""
    return {
        f"{prefix}.{name}": param
        for prefix, module in modules.items()
        for name, param in module.named_parameters()
        if param.requires_grad
    }


def default_checkpoint_interval(max_train_steps: int) -> int:
    return max(1, math.ceil(max_train_steps / DEFAULT_CHECKPOINTS_PER_RUN))


def step_folders(folder: Path) -> list[tuple[int, Path]]:
    """``step-N`` folders, newest first, complete or not."""
    if not folder.is_dir():
        return []
    found = [(int(m[1]), path) for path in folder.iterdir() if (m := _STEP_DIR.match(path.name))]
    return sorted(found, reverse=True)


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def verify(path: Path, *, hashes: bool = True) -> dict[str, Any]:
    """The marker of a checkpoint whose files all match it; CheckpointInvalid naming the first problem."""
    marker = path / MARKER_FILE
    try:
        state = json.loads(marker.read_text())
        files = state["files"]
        int(state["step"])
    except FileNotFoundError:
        raise CheckpointInvalid("no checkpoint.json (the save did not finish)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointInvalid(f"unreadable checkpoint.json ({exc})") from None
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointInvalid(f"{name} is missing")
        size = file.stat().st_size
        if size != expected["size"]:
            raise CheckpointInvalid(f"{name} has {size} bytes, the marker says {expected['size']}")
        if hashes and _sha256(file) != expected["sha256"]:
            raise CheckpointInvalid(f"{name} does not match its sha256")
    return state


def sigterm_save_decision(
    step: int,
    newest_checkpoint_step: int | None,
    *,
    min_new_steps: int,
    estimated_save_seconds: float,
    seconds_since_signal: float,
) -> tuple[bool, str]:
    """Whether to save on SIGTERM, and why: only when the newest checkpoint is at least min_new_steps old
    and the save fits SageMaker's window with margin; otherwise the newest periodic checkpoint is used."""
    behind = step - (newest_checkpoint_step or 0)
    newest = f"step {newest_checkpoint_step}" if newest_checkpoint_step is not None else "none"
    if behind <= 0:
        return False, f"the newest checkpoint ({newest}) is at this step"
    if behind < min_new_steps:
        return False, (
            f"the newest checkpoint ({newest}) is only {behind} step(s) behind "
            f"(sigterm_save_min_steps={min_new_steps}); a restart resumes from it"
        )
    needed = seconds_since_signal + SAVE_TIME_SAFETY * estimated_save_seconds + RESERVE_SECONDS
    if needed > SIGTERM_WINDOW_SECONDS:
        return False, (
            f"a save would take ~{estimated_save_seconds:.0f} s, which does not fit the "
            f"{SIGTERM_WINDOW_SECONDS:.0f} s SIGTERM window with margin; newest checkpoint: {newest}"
        )
    return (
        True,
        f"{behind} step(s) since the newest checkpoint ({newest}); "
        f"a save takes ~{estimated_save_seconds:.1f} s",
    )


def state_bytes(modules: dict[str, torch.nn.Module], optimizer: Any, ema: Any = None) -> int:
    """What a save writes, roughly: trainable weights, optimizer tensors and the EMA copy."""
    params = trainable_parameters(modules).values()
    total = sum(p.numel() * p.element_size() for p in params)
    for state in optimizer.state_dict()["state"].values():
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    if ema is not None:
        total += sum(p.numel() * p.element_size() for p in params)
    return total


@dataclass
class CheckpointStore:
    """The checkpoint folder of one run: save, verified resume, pruning, save-time bookkeeping."""

    folder: Path
    modules: dict[str, torch.nn.Module]
    optimizer: Any
    lr_scheduler: Any
    fingerprint: dict[str, Any]
    scaler: Any = None
    ema: Any = None
    verified: list[int] = field(default_factory=list)  # steps of checkpoints verified in this run, ascending
    last_save_bytes: int = 0
    last_save_seconds: float = 0.0

    @property
    def newest_step(self) -> int | None:
        return self.verified[-1] if self.verified else None

    def estimated_save_seconds(self) -> float:
        """From the last measured save (bytes/s), or an assumed disk rate before the first one."""
        size = state_bytes(self.modules, self.optimizer, self.ema)
        if self.last_save_seconds > 0 and self.last_save_bytes > 0:
            return size / (self.last_save_bytes / self.last_save_seconds)
        return size / ASSUMED_WRITE_BYTES_PER_SECOND

    def path(self, step: int) -> Path:
        return self.folder / f"step-{step:08d}"

    def save(self, step: int) -> Path:
        start = time.perf_counter()
        target = self.path(step)
        shutil.rmtree(target, ignore_errors=True)  # an unfinished earlier attempt at this step
        target.mkdir(parents=True)
        weights = {
            name: p.detach().to("cpu").contiguous() for name, p in trainable_parameters(self.modules).items()
        }
        save_file(weights, str(target / "trainable.safetensors"))
        torch.save(self.optimizer.state_dict(), target / "optimizer.pt")
        torch.save(self.lr_scheduler.state_dict(), target / "lr_scheduler.pt")
        if self.scaler is not None:
            torch.save(self.scaler.state_dict(), target / "grad_scaler.pt")
        if self.ema is not None:
            torch.save(self.ema.state_dict(), target / "ema.pt")
        files = {
            file.name: {"size": file.stat().st_size, "sha256": _sha256(file)}
            for file in sorted(target.iterdir())
        }
        marker = {"step": step, "fingerprint": self.fingerprint, "files": files}
        (target / MARKER_FILE).write_text(json.dumps(marker, indent=2))
        verify(target, hashes=False)  # the hashes were just taken from these files
        self.verified = [s for s in self.verified if s != step] + [step]
        self._prune()
        self.last_save_seconds = time.perf_counter() - start
        self.last_save_bytes = sum(entry["size"] for entry in files.values())
        log.info(
            "checkpoint saved: %s, %.1f MB in %.2f s",
            target,
            self.last_save_bytes / 1e6,
            self.last_save_seconds,
        )
        return target

    def _prune(self) -> None:
        """Keep the newest KEEP_VERIFIED verified checkpoints; delete every other step folder (older ones,
        unfinished ones, corrupt ones), which runs only after the newest save verified."""
        keep = {self.path(step) for step in self.verified[-KEEP_VERIFIED:]}
        self.verified = self.verified[-KEEP_VERIFIED:]
        for _, path in step_folders(self.folder):
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def resume(self) -> int:
        """Restore the newest checkpoint that verifies and return its step; 0 (a fresh start) if none does.

        A checkpoint written under other settings is an error, not a fallback: silently starting over
        would hide that the job's settings changed.
        """
        candidates = step_folders(self.folder)
        for index, (step, path) in enumerate(candidates):
            try:
                state = verify(path)
            except CheckpointInvalid as exc:
                fallback = "the previous one" if index + 1 < len(candidates) else "a fresh start"
                log.warning("checkpoint %s is unusable: %s; trying %s", path.name, exc, fallback)
                continue
            self._load(path, state)
            older = [s for s, p in candidates[index + 1 :] if _marker_sizes_match(p)]
            self.verified = sorted(older[:1] + [step])
            log.info("resumed from checkpoint %s at step %d", path, step)
            return step
        if candidates:
            log.warning("no usable checkpoint in %s: training starts from step 0", self.folder)
        return 0

    def _load(self, path: Path, state: dict[str, Any]) -> None:
        saved = state.get("fingerprint", {})
        differing = sorted(
            key for key in set(saved) | set(self.fingerprint) if saved.get(key) != self.fingerprint.get(key)
        )
        if differing:
            detail = ", ".join(
                f"{key}: {saved.get(key)!r} -> {self.fingerprint.get(key)!r}" for key in differing
            )
            raise CheckpointMismatchError(
                f"checkpoint {path.name} was written with other settings ({detail}); "
                "point CheckpointConfig at an empty S3 prefix to start over"
            )
        params = trainable_parameters(self.modules)
        weights = load_file(str(path / "trainable.safetensors"))
        if set(weights) != set(params):
            raise CheckpointMismatchError(f"checkpoint {path.name} does not hold the weights this run trains")
        with torch.no_grad():
            for name, tensor in weights.items():
                params[name].copy_(tensor)
        self.optimizer.load_state_dict(
            torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
        )
        self.lr_scheduler.load_state_dict(
            torch.load(path / "lr_scheduler.pt", map_location="cpu", weights_only=False)
        )
        if self.scaler is not None and (path / "grad_scaler.pt").exists():
            self.scaler.load_state_dict(torch.load(path / "grad_scaler.pt", weights_only=False))
        if self.ema is not None:
            self.ema.load_state_dict(torch.load(path / "ema.pt", map_location="cpu", weights_only=False))


def _marker_sizes_match(path: Path) -> bool:
    try:
        verify(path, hashes=False)
    except CheckpointInvalid:
        return False
    return True
