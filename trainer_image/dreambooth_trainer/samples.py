"""Sample images of the trained model: `num_samples` renderings of the instance prompt, saved with the model.

They come from the family's pipeline over the modules training left in memory (base + adapters for LoRA), on
the training device and in its precision, before the export casts anything: nothing is reloaded from disk.
Seeds are fixed (seed + i, drawn on the CPU), so sample i of two runs with the same settings starts from the
same noise wherever it runs.
A failure fails the job: the notification promises samples, and a silent gap would hide a broken model.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from pathlib import Path

import torch

from .errors import SampleRenderingError
from .families.base import FamilyModel, ModelFamily
from .hyperparameters import TrainingHyperparameters

log = logging.getLogger(__name__)

SAMPLES_DIR = "samples"
HALF_DTYPES = (torch.float16, torch.bfloat16)


def sample_file(index: int) -> str:
    """Path of sample `index`, relative to the model folder."""
    return f"{SAMPLES_DIR}/sample-{index}.png"


def render_samples(
    family: ModelFamily, model: FamilyModel, hp: TrainingHyperparameters, out_dir: Path
) -> list[str]:
    """Render hp.num_samples images into out_dir/samples/ with the family's pipeline over the trained modules;
    returns their paths relative to out_dir."""

    if hp.num_samples == 0:
        return []
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    modules = [m for m in model.pipeline.components.values() if isinstance(m, torch.nn.Module)]
    # Frozen modules sit in the training's half precision on GPU, trained ones in fp32: autocast bridges them.
    # Keyed on the VAE: a family that keeps its VAE in fp32 (SDXL, which overflows in fp16) decodes in fp32.
    vae_dtype = model.pipeline.vae.dtype
    half = vae_dtype if cuda and vae_dtype in HALF_DTYPES else None
    autocast = torch.autocast("cuda", dtype=half) if half is not None else contextlib.nullcontext()
    folder = out_dir / SAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("sample-*.png"):
        stale.unlink()
    if cuda:  # the loop's optimizer and accelerator are gone: give their GPU memory back first
        gc.collect()
        torch.cuda.empty_cache()

    for module in modules:
        module.eval()  # LoRA dropout off
    model.pipeline.to(device)
    log.info(
        "rendering %d sample image(s) of %r: %d steps, guidance %.1f, %dx%d",
        hp.num_samples,
        hp.instance_prompt,
        hp.sample_inference_steps,
        hp.sample_guidance_scale,
        hp.resolution,
        hp.resolution,
    )
    written: list[str] = []
    try:
        with torch.inference_mode(), autocast:
            for index in range(hp.num_samples):
                image = family.render(
                    model,
                    hp.instance_prompt,
                    steps=hp.sample_inference_steps,
                    guidance=hp.sample_guidance_scale,
                    size=hp.resolution,
                    seed=hp.seed + index,
                )
                relative = sample_file(index)
                image.save(out_dir / relative, format="PNG")
                written.append(relative)
    except Exception as exc:
        raise SampleRenderingError(
            f"rendering sample image {len(written) + 1} of {hp.num_samples} after training failed: "
            f"{type(exc).__name__}: {exc} (no model was written; num_samples=0 skips the samples)"
        ) from exc
    finally:
        if cuda:
            torch.cuda.empty_cache()
    return written
