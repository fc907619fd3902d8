"""Render images from a trained model, so a user can see what training gave them.

Accepts what the trainer writes: a diffusers folder (full fine-tune), a LoRA folder (its training record
names the base model; ``--base-model`` overrides), or a single ``.safetensors``/``.ckpt`` file (read with
a diffusers folder's configs when one is given, so nothing is fetched from the Hub). An ``s3://`` prefix
is downloaded first, from the emulated bucket or any S3-compatible endpoint.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lambdas.jobs.s3_layout import s3_uri, split_s3_uri
from local_pipeline.s3_folders import contained_path, download_prefix

TRAINING_RECORD = "dreambooth.json"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


class ModelNotUsable(ValueError):
    """The path holds nothing this command can load; the message says what it expected."""


@dataclass(frozen=True)
class ModelLocation:
    kind: str  # "diffusers", "lora" or "single_file"
    path: Path
    base_model: str | None = None
    lora_weight_name: str | None = None


def locate_model(path: Path, base_model: str | None) -> ModelLocation:
    """Decide how to load ``path`` from what lies there."""
    if path.is_file():
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            raise ModelNotUsable(f"{path} is not a .safetensors or .ckpt checkpoint")
        return ModelLocation("single_file", path, base_model)
    if not path.is_dir():
        raise ModelNotUsable(f"{path} does not exist")
    if (path / "model_index.json").is_file():
        return ModelLocation("diffusers", path)
    record_file = path / TRAINING_RECORD
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if record.get("kind") == "lora":
        base = base_model or record.get("base_model")
        if not base or (base.startswith("/opt/ml") and not Path(base).exists()):
            raise ModelNotUsable(
                f"{path} holds a LoRA adapter; name the base model it was trained on with --base-model "
                "(a diffusers folder, a single file or a Hugging Face id)"
            )
        return ModelLocation("lora", path, base, record.get("lora_weight_name"))
    singles = sorted(p for p in path.iterdir() if p.suffix in SINGLE_FILE_SUFFIXES)
    if len(singles) == 1:
        return ModelLocation("single_file", singles[0], base_model)
    raise ModelNotUsable(
        f"{path} holds no model: expected model_index.json (diffusers folder), a LoRA folder with "
        f"{TRAINING_RECORD}, or one .safetensors/.ckpt file"
    )


def load_pipeline(location: ModelLocation):
    import torch
    from diffusers import StableDiffusionPipeline

    def from_base(base: str):
        base_path = Path(base)
        if base_path.is_file():
            return StableDiffusionPipeline.from_single_file(str(base_path), local_files_only=True)
        return StableDiffusionPipeline.from_pretrained(base, local_files_only=base_path.exists())

    if location.kind == "diffusers":
        pipe = StableDiffusionPipeline.from_pretrained(location.path, local_files_only=True)
    elif location.kind == "lora":
        pipe = from_base(location.base_model)
        pipe.load_lora_weights(str(location.path), weight_name=location.lora_weight_name)
    else:
        config = {"config": location.base_model} if location.base_model else {}
        pipe = StableDiffusionPipeline.from_single_file(str(location.path), local_files_only=True, **config)
    pipe.set_progress_bar_config(disable=True)
    # Exported weights are fp16; CPUs compute in fp32.
    dtype = torch.float16 if torch.cuda.is_available() else torch.float32
    return pipe.to("cuda" if torch.cuda.is_available() else "cpu", dtype)


def render(
    model: str, prompt: str, *, n: int, seed: int, out_dir: Path, base_model: str | None, s3_client=None
) -> list[Path]:
    """Write ``n`` PNGs for ``prompt`` and return their paths."""
    import torch

    with tempfile.TemporaryDirectory(prefix="model-") as scratch:
        path = fetch_model(s3_client, model, Path(scratch)) if model.startswith("s3://") else Path(model)
        location = locate_model(path, base_model)
        pipe = load_pipeline(location)
        height = width = _native_resolution(pipe)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for index in range(n):
            generator = torch.Generator("cpu").manual_seed(seed + index)
            image = pipe(
                prompt, num_inference_steps=25, generator=generator, height=height, width=width
            ).images[0]
            target = out_dir / f"{seed + index:06d}.png"
            image.save(target)
            written.append(target)
        return written


def _native_resolution(pipe) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def fetch_model(s3_client, uri: str, target: Path) -> Path:
    """An s3:// model (a prefix, or one single-file checkpoint) copied into ``target``."""
    if s3_client is None:
        raise ModelNotUsable("an s3:// model needs an S3 endpoint (--endpoint-url or AWS_ENDPOINT_URL)")
    bucket, key = split_s3_uri(uri)
    if key.endswith(SINGLE_FILE_SUFFIXES):
        single = contained_path(target, key.rsplit("/", 1)[-1])
        s3_client.download_file(bucket, key, str(single))
        return single
    download = download_prefix(s3_client, s3_uri(bucket, key.rstrip("/") + "/"), target)
    if download.refused:
        raise ModelNotUsable(
            f"{uri} holds keys that cannot be copied safely: " + "; ".join(download.describe_refused())
        )
    if not download.files:
        raise ModelNotUsable(f"nothing found at {uri}")
    return target
