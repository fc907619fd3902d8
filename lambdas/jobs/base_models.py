"""What ``base_model`` may name in a job.json: a short alias (``sdxl``, ``flux1-dev``: the family table's
pinned Hub ids), a Hugging Face id, or a folder under this bucket's ``base-models/``. Never a path on the
training machine (``../../etc``, ``/opt/ml/...``). Pure.

One function decides, so a new accepted form is one more branch here.
"""

from __future__ import annotations

import re

from dreambooth_trainer.family_table import ALIASES
from lambdas.jobs import s3_layout

# Hugging Face repository ids: "owner/name", letters, digits, '-', '_', '.', not starting with '-' or '.'.
_HF_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
HF_ID_PATTERN = re.compile(rf"^{_HF_PART}/{_HF_PART}$")


def resolve_base_model(value: str, bucket: str) -> str:
    """The base model a job trains from; ValueError with what to write instead for anything else."""
    value = value.strip()
    alias = ALIASES.get(value.lower())
    if alias is not None:
        return alias.hub_id
    allowed = s3_layout.s3_uri(bucket, s3_layout.BASE_MODELS_ROOT)
    if value.startswith("s3://"):
        model_bucket, key = s3_layout.split_s3_uri(value)
        relative = key.removeprefix(s3_layout.BASE_MODELS_ROOT)
        if (
            model_bucket != bucket
            or not key.startswith(s3_layout.BASE_MODELS_ROOT)
            or not relative.strip("/")
        ):
            raise ValueError(
                f"training jobs can read base models only under {allowed}; copy the model there "
                f"(e.g. {allowed}my-model/) and point base_model at it"
            )
        if s3_layout.unsafe_path_problem(relative.rstrip("/")):
            raise ValueError(f"{value!r} holds a '.' or '..' folder: name the model folder plainly")
        return value
    if HF_ID_PATTERN.match(value) and ".." not in value:
        return value
    raise ValueError(
        f"{value!r} is neither an alias ({', '.join(ALIASES)}), a Hugging Face model id (owner/name, e.g. "
        f"stable-diffusion-v1-5/stable-diffusion-v1-5) nor an s3:// folder under {allowed}; "
        "paths on the training machine are not accepted"
    )
