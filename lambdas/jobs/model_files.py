"""What a run left under its model prefix, sorted into what a user loads. Pure.

The trainer uploads the model itself, then ``manifest.json``
(``{"files": [{"key", "size"}, ...], "kind", "prompt", "lora_weight_name", ...}``, keys relative to the
prefix), then ``_SUCCESS`` last: a model is complete only when ``_SUCCESS`` exists (a restarted job removes
it before uploading again). Without a manifest, the prefix's listing stands in, and the summary says so.
The training record ``dreambooth.json`` (uploaded with the model) names the base model's ``family`` and,
for LoRA runs of every family, its ``lora_files`` (the diffusers/PEFT file, then the ComfyUI/WebUI one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from lambdas.jobs import s3_layout

WEIGHT_SUFFIXES = (".safetensors", ".ckpt")
KOHYA_LORA_SUFFIX = "-lora.safetensors"  # the trainer's <model_name>-lora.safetensors
DIFFUSERS_INDEX = "model_index.json"
SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# SageMaker's own tarball under S3OutputPath (it holds only the manifest): not something to load.
SAGEMAKER_OUTPUT_MARKER = "/output/"


@dataclass(frozen=True)
class ModelFiles:
    prefix_uri: str
    manifest_found: bool
    complete: bool = False  # the trainer's _SUCCESS marker exists
    diffusers_folder: str | None = None
    checkpoint: str | None = None
    lora: str | None = None
    kohya_lora: str | None = None  # the same LoRA in kohya naming (AUTOMATIC1111, Forge, ComfyUI)
    samples: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    total_bytes: int | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    family: str | None = None
    lora_files: tuple[str, ...] = ()  # every LoRA file, diffusers/PEFT first

    def as_dict(self) -> dict[str, Any]:
        return {
            "s3_prefix": self.prefix_uri,
            "complete": self.complete,
            "manifest": s3_layout.s3_uri(*_join(self.prefix_uri, s3_layout.MANIFEST_FILENAME))
            if self.manifest_found
            else None,
            "diffusers_folder": self.diffusers_folder,
            "checkpoint": self.checkpoint,
            "lora": self.lora,
            "kohya_lora": self.kohya_lora,
            "lora_files": list(self.lora_files),
            "family": self.family,
            "samples": list(self.samples),
            "file_count": len(self.files),
            "total_bytes": self.total_bytes,
        }


def parse_json_object(raw: bytes | str | None) -> dict[str, Any] | None:
    """A JSON object (manifest.json, dreambooth.json, model_index.json) as a dict, or None when absent or
    unreadable (reported, never fatal)."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def describe_model_files(
    prefix_uri: str,
    manifest: dict[str, Any] | None,
    listed_keys: list[str] | None = None,
    *,
    complete: bool = False,
    record: dict[str, Any] | None = None,
) -> ModelFiles:
    """``listed_keys``: keys relative to the prefix, used only when there is no manifest; ``complete``:
    whether the ``_SUCCESS`` marker exists; ``record``: the trainer's dreambooth.json, when readable."""
    if manifest is not None:
        entries = manifest.get("files") or []
        relative = [str(e["key"] if isinstance(e, dict) else e) for e in entries]
        total = manifest.get("total_bytes")
    else:
        markers = {s3_layout.MANIFEST_FILENAME, s3_layout.SUCCESS_MARKER_FILENAME}
        relative = [k for k in (listed_keys or []) if k not in markers]
        total = None
    relative = sorted(k for k in relative if SAGEMAKER_OUTPUT_MARKER not in f"/{k}")

    index = next((k for k in relative if PurePosixPath(k).name == DIFFUSERS_INDEX), None)
    diffusers_dir = str(PurePosixPath(index).parent) if index else None
    lora_name = (manifest or {}).get("lora_weight_name")
    lora = next((k for k in relative if lora_name and PurePosixPath(k).name == lora_name), None)
    if lora is None:
        loras = [k for k in relative if k.endswith(WEIGHT_SUFFIXES) and "lora" in k.lower()]
        lora = next((k for k in loras if not k.endswith(KOHYA_LORA_SUFFIX)), loras[0] if loras else None)
    kohya_name = (manifest or {}).get("kohya_lora_name")
    kohya = next((k for k in relative if kohya_name and PurePosixPath(k).name == kohya_name), None)
    if kohya is None:
        kohya = next((k for k in relative if k.endswith(KOHYA_LORA_SUFFIX) and k != lora), None)

    def in_diffusers(key: str) -> bool:
        """Component weights (unet/, vae/, ...) of the diffusers folder are not a single-file checkpoint."""
        if diffusers_dir is None:
            return False
        parent = str(PurePosixPath(key).parent)
        if diffusers_dir == ".":
            return parent != "."
        return parent == diffusers_dir or parent.startswith(f"{diffusers_dir}/")

    record = record or {}
    named = record.get("lora_files") or (manifest or {}).get("lora_files") or []
    lora_files = [k for name in named if isinstance(name, str) for k in relative if k == name]
    if not lora_files and lora:
        lora_files = [lora]
    family = record.get("family") or (manifest or {}).get("family")
    checkpoint = next(
        (
            k
            for k in relative
            if k.endswith(WEIGHT_SUFFIXES) and k not in (lora, kohya, *lora_files) and not in_diffusers(k)
        ),
        None,
    )
    samples = tuple(
        k
        for k in relative
        if k.startswith(f"{s3_layout.SAMPLES_FOLDER}/") and k.lower().endswith(SAMPLE_SUFFIXES)
    )

    def uri(key: str | None, folder: bool = False) -> str | None:
        if key is None:
            return None
        if folder:
            return prefix_uri if key == "." else f"{prefix_uri}{key}/"
        return f"{prefix_uri}{key}"

    return ModelFiles(
        prefix_uri=prefix_uri,
        manifest_found=manifest is not None,
        complete=complete,
        diffusers_folder=uri(diffusers_dir, folder=True),
        checkpoint=uri(checkpoint),
        lora=uri(lora),
        kohya_lora=uri(kohya),
        samples=tuple(uri(k) for k in samples),
        files=tuple(relative),
        total_bytes=total if isinstance(total, int) else None,
        manifest={k: v for k, v in (manifest or {}).items() if k != "files"},
        family=family if isinstance(family, str) else None,
        lora_files=tuple(uri(k) for k in lora_files),
    )


def _join(prefix_uri: str, name: str) -> tuple[str, str]:
    bucket, key = s3_layout.split_s3_uri(prefix_uri)
    return bucket, key + name
