"""Model families behind one interface (base.ModelFamily), listed in one table (registry).

There is one training loop (loop.train) and one job (job.run_job); they call the family for:
- job: apply_defaults (registry defaults for what the job left out), load, check (with rules.check_family_job:
  training_method, train_text_encoder, resolution, precision, prediction type), the pipeline for class images,
  render (samples), export (the model files; LoRA families write the diffusers and the ComfyUI/WebUI file);
- loop: encode_prompts and encode_images (cached once, or per step), model_input, add_noise (noise, timesteps
  and target), predict, loss (with prior preservation), lora_targets / text_encoder_lora_targets.
Adding a family: one module here (a class with those members), a registry row, and its tiny test model
(family_fixtures).
"""

from .base import FamilyDefaults, FamilyModel, ModelFamily, NoisedBatch, PromptEmbeddings
from .registry import (
    ALIASES,
    FAMILIES,
    default_instance_type,
    family_defaults,
    family_of_base_model,
    get_family,
    min_image_side,
    resolve_alias,
)

__all__ = [
    "ALIASES",
    "FAMILIES",
    "FamilyDefaults",
    "FamilyModel",
    "ModelFamily",
    "NoisedBatch",
    "PromptEmbeddings",
    "default_instance_type",
    "family_defaults",
    "family_of_base_model",
    "get_family",
    "min_image_side",
    "resolve_alias",
]
