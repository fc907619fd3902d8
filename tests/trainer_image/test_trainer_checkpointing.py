"""Spot-safe checkpoints: verified markers, fallback to the previous checkpoint, pruning only after a newer
one verified, and the SIGTERM policy. Unit tests on a tiny module, then real jobs killed and restarted."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dreambooth_trainer import checkpointing
from dreambooth_trainer.checkpointing import (
    MARKER_FILE,
    CheckpointStore,
    default_checkpoint_interval,
    sigterm_save_decision,
)

# --- the store, on a tiny module --------------------------------------------------------------------------


def _store(folder: Path, seed: int = 0) -> CheckpointStore:
    torch.manual_seed(seed)
    module = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(module.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    return CheckpointStore(folder, {"m": module}, optimizer, scheduler, fingerprint={"method": "test"})


def _train_step(store: CheckpointStore) -> None:
    module = store.modules["m"]
    module(torch.ones(2, 4)).pow(2).sum().backward()
    store.optimizer.step()
    store.lr_scheduler.step()
    store.optimizer.zero_grad()


def _weight(store: CheckpointStore) -> torch.Tensor:
    return store.modules["m"].weight.detach().clone()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_marker_is_written_last_with_size_and_sha256_of_every_file(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _train_step(store)
    path = store.save(1)
    marker = json.loads((path / MARKER_FILE).read_text())
    files = {p.name for p in path.iterdir()} - {MARKER_FILE}
    assert set(marker["files"]) == files == {"trainable.safetensors", "optimizer.pt", "lr_scheduler.pt"}
    for name, entry in marker["files"].items():
        assert entry["size"] == (path / name).stat().st_size
        assert len(entry["sha256"]) == 64
    assert marker["step"] == 1 and marker["fingerprint"] == {"method": "test"}
    assert (path / MARKER_FILE).stat().st_mtime_ns >= max((path / n).stat().st_mtime_ns for n in files)
    assert store.last_save_bytes == sum(e["size"] for e in marker["files"].values())
    assert store.last_save_seconds > 0


def test_keeps_the_two_newest_and_deletes_older_only_after_a_newer_one_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    for step in (1, 2, 3):
        _train_step(store)
        store.save(step)
    assert _names(tmp_path) == ["step-00000002", "step-00000003"]

    # A save that dies half-way leaves both verified checkpoints in place.
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if str(f).endswith("optimizer.pt"):
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpointing.torch, "save", failing_save)
    _train_step(store)
    with pytest.raises(OSError, match="disk full"):
        store.save(4)
    assert _names(tmp_path) == ["step-00000002", "step-00000003", "step-00000004"]
    assert not (tmp_path / "step-00000004" / MARKER_FILE).exists()
    monkeypatch.setattr(checkpointing.torch, "save", real_save)
    store.save(5)
    assert _names(tmp_path) == ["step-00000003", "step-00000005"]  # the unfinished one went too


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("truncate", "optimizer.pt has"),
        ("delete", "optimizer.pt is missing"),
        ("corrupt", "optimizer.pt does not match its sha256"),
        ("no_marker", "no checkpoint.json"),
    ],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, damage: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    _train_step(store)
    store.save(1)
    expected = _weight(store)
    expected_lr = store.lr_scheduler.get_last_lr()
    _train_step(store)
    newest = store.save(2)
    optimizer_file = newest / "optimizer.pt"
    if damage == "truncate":
        optimizer_file.write_bytes(optimizer_file.read_bytes()[:100])
    elif damage == "delete":
        optimizer_file.unlink()
    elif damage == "corrupt":  # same size, other bytes
        data = bytearray(optimizer_file.read_bytes())
        data[-1] ^= 0xFF
        optimizer_file.write_bytes(bytes(data))
    else:
        (newest / MARKER_FILE).unlink()

    restarted = _store(tmp_path, seed=1)
    with caplog.at_level(logging.WARNING):
        assert restarted.resume() == 1
    assert torch.equal(_weight(restarted), expected)
    assert restarted.lr_scheduler.get_last_lr() == expected_lr
    assert f"checkpoint step-00000002 is unusable: {why}" in caplog.text
    assert restarted.newest_step == 1


def test_nothing_usable_is_a_logged_fresh_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path)
    _train_step(store)
    (store.save(1) / "trainable.safetensors").unlink()
    restarted = _store(tmp_path, seed=1)
    before = _weight(restarted)
    with caplog.at_level(logging.WARNING):
        assert restarted.resume() == 0
    assert torch.equal(_weight(restarted), before)
    assert "trying a fresh start" in caplog.text
    assert "training starts from step 0" in caplog.text
    assert _store(tmp_path / "empty").resume() == 0


def test_default_interval_gives_checkpoints_within_the_run() -> None:
    assert default_checkpoint_interval(400) == 100
    assert default_checkpoint_interval(3) == 1
    assert default_checkpoint_interval(1) == 1


@pytest.mark.parametrize(
    ("newest", "estimate", "since_signal", "save", "why"),
    [
        (95, 1.0, 0.0, False, "only 5 step(s) behind"),
        (100, 1.0, 0.0, False, "is at this step"),
        (50, 5.0, 2.0, True, "50 step(s) since"),
        (None, 5.0, 2.0, True, "(none)"),
        (50, 70.0, 0.0, False, "does not fit"),  # 1.5 x 70 + reserve > 120
        (50, 40.0, 50.0, False, "does not fit"),  # the step before it took long
    ],
)
def test_sigterm_save_policy(
    newest: int | None, estimate: float, since_signal: float, save: bool, why: str
) -> None:
    decided, reason = sigterm_save_decision(
        100, newest, min_new_steps=10, estimated_save_seconds=estimate, seconds_since_signal=since_signal
    )
    assert decided is save and why in reason


def test_save_time_estimate_uses_the_last_measured_rate(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _train_step(store)
    size = checkpointing.state_bytes(store.modules, store.optimizer)
    assert store.estimated_save_seconds() == pytest.approx(
        size / checkpointing.ASSUMED_WRITE_BYTES_PER_SECOND
    )
    store.save(1)
    store.last_save_bytes, store.last_save_seconds = size * 2, 4.0  # measured: size/2 bytes per second
    assert store.estimated_save_seconds() == pytest.approx(2.0)


# --- real jobs, killed and restarted ------------------------------------------------------------------------

RESUME_SETTINGS = {"max_train_steps": "6", "save_steps": "2", "output_dtype": "fp32", "num_samples": "0"}

# A trainer process that dies by SIGKILL half-way through writing the step-4 optimizer state.
KILLED_DURING_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from dreambooth_trainer import entrypoint

    real_save = torch.save

    def save_then_die(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if str(f).endswith(os.path.join("step-00000004", "optimizer.pt")):
            os.truncate(f, os.path.getsize(f) // 2)  # the rest never reached the disk
            os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save_then_die
    sys.exit(entrypoint.main(["train"]))
    """
)


def _unet(job) -> dict[str, torch.Tensor]:
    return load_file(job.model_dir / "unet" / "diffusion_pytorch_model.safetensors")


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def _subprocess_env(job) -> dict[str, str]:
    return {
        **os.environ,
        "SAGEMAKER_BASE_DIR": str(job.base),
        "TRAINING_JOB_NAME": "test-job",
        "OMP_NUM_THREADS": "1",
    }


def test_kill_9_during_a_save_resumes_from_the_previous_checkpoint(new_job, caplog) -> None:
    reference = new_job(RESUME_SETTINGS)
    assert reference.run() == 0

    job = new_job(RESUME_SETTINGS)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_DURING_SAVE],
        env=_subprocess_env(job),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert _names(job.checkpoints_dir) == ["step-00000002", "step-00000004"]
    assert not (job.checkpoints_dir / "step-00000004" / MARKER_FILE).exists()

    with caplog.at_level(logging.INFO):
        assert job.run() == 0
    assert "checkpoint step-00000004 is unusable: no checkpoint.json" in caplog.text
    assert "resuming at step 2 of 6" in caplog.text
    assert json.loads((job.model_dir / "dreambooth.json").read_text())["steps"] == 6
    assert _same_weights(_unet(job), _unet(reference))
    assert _names(job.checkpoints_dir) == ["step-00000004", "step-00000006"]


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_restored_checkpoint_resumes_from_the_previous_one(new_job, caplog, damage: str) -> None:
    """What a spot restart can restore: the newest checkpoint's marker next to an unfinished file."""
    reference = new_job(RESUME_SETTINGS)
    assert reference.run() == 0
    restored = reference.checkpoints_dir
    assert _names(restored) == ["step-00000004", "step-00000006"]
    weights = restored / "step-00000006" / "trainable.safetensors"
    if damage == "truncate":
        os.truncate(weights, weights.stat().st_size // 3)
    else:
        weights.unlink()

    job = new_job(RESUME_SETTINGS)
    os.rename(restored, job.checkpoints_dir)
    with caplog.at_level(logging.INFO):
        assert job.run() == 0
    assert "checkpoint step-00000006 is unusable: trainable.safetensors" in caplog.text
    assert "resuming at step 4 of 6" in caplog.text
    assert json.loads((job.model_dir / "dreambooth.json").read_text())["steps"] == 6
    assert _same_weights(_unet(job), _unet(reference))


def test_sigterm_with_a_fresh_periodic_checkpoint_exits_within_seconds(new_job) -> None:
    job = new_job(
        {"training_method": "lora", "max_train_steps": "100000", "logging_steps": "1", "save_steps": "1"}
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "dreambooth_trainer", "train"],
        env=_subprocess_env(job),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    deadline = time.monotonic() + 120
    try:
        for line in process.stdout:
            output.append(line)
            if "checkpoint saved" in line or time.monotonic() > deadline:
                break
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output.append(process.stdout.read())
        code = process.wait(timeout=60)
        exit_seconds = time.monotonic() - signalled
    finally:
        process.kill()
    text = "".join(output)
    assert code == 143, text[-3000:]
    assert exit_seconds < 10
    assert "SIGTERM: no new checkpoint (the newest checkpoint (step " in text
    assert "a restarted job resumes from the checkpoint at step" in job.failure
    saves_after_signal = text.split("SIGTERM: no new checkpoint")[1].count("checkpoint saved")
    assert saves_after_signal == 0
