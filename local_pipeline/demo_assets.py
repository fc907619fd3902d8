"""Inputs for the demo: a tiny offline Stable Diffusion base model (cached) and synthetic subject photos."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from dreambooth_trainer.offline_fixtures import build_tiny_base_model, write_sample_subject_images

# Bump when the tiny model's recipe changes, so a stale cache is never reused.
TINY_MODEL_VERSION = "v1"
DEFAULT_CACHE = Path(".cache") / "local_pipeline"


def tiny_base_model(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Build the tiny base model once; later demos reuse the cached folder."""
    target = cache_dir / f"tiny-sd-{TINY_MODEL_VERSION}"
    if (target / "model_index.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="tiny-sd-", dir=cache_dir))
    build_tiny_base_model(staging / "model")
    shutil.rmtree(target, ignore_errors=True)
    (staging / "model").rename(target)  # atomic: a half-built model is never mistaken for a cached one
    shutil.rmtree(staging, ignore_errors=True)
    return target


def sample_subject_images(folder: Path, count: int = 6, size: int = 96, seed: int = 7) -> Path:
    """A few distinct photos of one synthetic subject, like a user's upload folder."""
    folder.mkdir(parents=True, exist_ok=True)
    write_sample_subject_images(folder, count, size, seed)
    return folder
