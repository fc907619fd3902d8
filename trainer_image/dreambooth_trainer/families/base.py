"""What every model family provides, and the pieces of math and plumbing they share.

A family turns a base model into: a loaded diffusers pipeline (its modules are what the loop trains), prompt
embeddings, latents from pixels, one training step's noisy input / timesteps / target, the denoiser's
prediction and loss, sample images, and the exported files. The one training loop (loop.py) and the one job
(job.py) only talk to this interface; a new family is one module here plus its tiny test model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..errors import BaseModelError
from ..family_table import FamilyDefaults  # noqa: F401  (re-exported: families.FamilyDefaults)
from ..hyperparameters import TrainingHyperparameters
from ..model_loading import BaseModelSource, loading_errors

log = logging.getLogger(__name__)

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers/PEFT naming, read by load_lora_weights
# What a family's export returns for the training record (plus lora_files: every LoRA file written).
RECORD_FILE_FIELDS = ("kind", "lora_weight_name", "single_file_name")


@dataclass
class FamilyModel:
    """A loaded base model: the family's diffusers pipeline over modules that live once in memory."""

    family: str
    pipeline: Any
    source: BaseModelSource
    training_scheduler: (
        Any  # a copy of the scheduler for training: inference calls set_timesteps on the other
    )

    @property
    def denoiser_name(self) -> str:
        """The pipeline component that denoises (and trains): `unet` or `transformer`."""
        return "unet" if hasattr(self.pipeline, "unet") else "transformer"

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipeline, self.denoiser_name)

    @property
    def text_encoder(self) -> torch.nn.Module | None:
        """The (first) text encoder: the one SD can train."""
        return getattr(self.pipeline, "text_encoder", None)


@dataclass
class PromptEmbeddings:
    """Embeddings of a list of prompts: per-prompt tensors (row i = prompt i) or lists, plus shared values."""

    per_prompt: dict[str, torch.Tensor | list[torch.Tensor]]
    shared: dict[str, torch.Tensor] = field(default_factory=dict)

    def rows(self, indices: list[int]) -> dict[str, Any]:
        picked: dict[str, Any] = dict(self.shared)
        for name, value in self.per_prompt.items():
            picked[name] = value[indices] if torch.is_tensor(value) else [value[i] for i in indices]
        return picked


@dataclass
class NoisedBatch:
    """One training step's model input: noisy latents, their timesteps, and what the model should predict."""

    noisy: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor
    sigmas: torch.Tensor | None = None
    weighting: torch.Tensor | None = None  # per-sample loss weights (flow matching weighting schemes)


@runtime_checkable
class ModelFamily(Protocol):
    name: ClassVar[str]
    pipeline_class_names: ClassVar[tuple[str, ...]]  # model_index.json `_class_name`s that mean this family
    lora_targets: ClassVar[tuple[str, ...]]
    training_methods: ClassVar[tuple[str, ...]]  # hyperparameter training_method values it trains
    text_encoder_lora_targets: ClassVar[tuple[str, ...]]  # empty: its text encoders stay frozen (cached)
    aspect_buckets: ClassVar[bool]  # photos keep their aspect ratio (else: square crops)

    def load(self, source: BaseModelSource, quantization: str = "none") -> FamilyModel:
        """The base model; quantization (families/quantization.py): how its denoiser's weights load."""
        ...

    def apply_defaults(self, hp: TrainingHyperparameters) -> tuple[TrainingHyperparameters, list[str]]:
        """The family's defaults for what the job left out, and a log line per change."""
        ...

    def check(self, model: FamilyModel, hp: TrainingHyperparameters) -> None:
        """Refuse, before any work, what this base model cannot train (beyond rules.check_family_job)."""
        ...

    def encode_prompts(
        self, model: FamilyModel, prompts: list[str], device: torch.device
    ) -> PromptEmbeddings: ...

    def encode_images(self, model: FamilyModel, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels in [-1, 1] (N, 3, H, W) -> the VAE latent distribution's (mean, std), cached by the loop."""
        ...

    def model_input(self, model: FamilyModel, latent_sample: torch.Tensor) -> torch.Tensor:
        """A raw VAE latent sample -> the denoiser's latent space (shift and scale)."""
        ...

    def add_noise(
        self, model: FamilyModel, latents: torch.Tensor, noise: torch.Tensor, generator: torch.Generator
    ) -> NoisedBatch: ...

    def predict(
        self, model: FamilyModel, denoiser: torch.nn.Module, batch: NoisedBatch, prompts: dict[str, Any]
    ) -> torch.Tensor: ...

    def loss(
        self, prediction: torch.Tensor, batch: NoisedBatch, prior: bool, prior_loss_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, instance, prior) losses; with prior, the second half of the batch is the class images."""
        ...

    def render(
        self, model: FamilyModel, prompt: str, *, steps: int, guidance: float, size: int, seed: int
    ) -> Any: ...

    def export(
        self, model: FamilyModel, result: Any, hp: TrainingHyperparameters, out_dir: Path
    ) -> dict[str, Any]:
        """Write the trained model into out_dir; the record's file fields (RECORD_FILE_FIELDS, lora_files)."""
        ...


# --- shared math ------------------------------------------------------------------------------------------


def flow_matching_pair(
    latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectified flow: x_sigma = (1 - sigma) * x0 + sigma * noise, and the velocity target noise - x0."""
    while sigmas.ndim < latents.ndim:
        sigmas = sigmas.unsqueeze(-1)
    noisy = (1.0 - sigmas) * latents + sigmas * noise
    return noisy, noise - latents


def sample_flow_timesteps(
    scheduler: Any,
    batch_size: int,
    generator: torch.Generator,
    *,
    weighting_scheme: str = "none",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    mode_scale: float = 1.29,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, sigmas) as diffusers' flow-matching DreamBooth scripts draw them: u from the weighting
    scheme's density, then the scheduler's own (shifted) timestep table at index u * num_train_timesteps."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    u = compute_density_for_timestep_sampling(
        weighting_scheme=weighting_scheme,
        batch_size=batch_size,
        logit_mean=logit_mean,
        logit_std=logit_std,
        mode_scale=mode_scale,
        device=generator.device,
        generator=generator,
    )
    indices = (u * scheduler.config.num_train_timesteps).long().clamp(max=len(scheduler.timesteps) - 1).cpu()
    return scheduler.timesteps[indices], scheduler.sigmas[indices]


def flow_matching_loss(
    prediction: torch.Tensor,
    batch: NoisedBatch,
    prior: bool,
    prior_loss_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample weighted MSE averaged over the batch (the reference scripts' form); instance and prior
    halves separately when prior preservation is on."""

    def weighted(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        squared = (pred.float() - target.float()) ** 2
        if weights is not None:
            squared = weights.float().reshape(-1, *[1] * (squared.ndim - 1)) * squared
        return squared.reshape(squared.shape[0], -1).mean(1).mean()

    weights = batch.weighting
    if not prior:
        loss = weighted(prediction, batch.target, weights)
        return loss, loss, torch.zeros((), device=loss.device)
    pred_i, pred_c = prediction.chunk(2)
    target_i, target_c = batch.target.chunk(2)
    w_i, w_c = weights.chunk(2) if weights is not None else (None, None)
    instance = weighted(pred_i, target_i, w_i)
    prior_loss = weighted(pred_c, target_c, w_c)
    return instance + prior_loss_weight * prior_loss, instance, prior_loss


def dreambooth_loss(
    model_pred: torch.Tensor, target: torch.Tensor, *, with_prior: bool, prior_loss_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, instance loss, prior loss) of one micro-batch, in fp32 (the DDPM families' loss).

    With prior preservation the batch is the instance images followed by as many class images:
    loss = MSE(instance half) + prior_loss_weight * MSE(class half).
    """
    if with_prior:
        pred_instance, pred_class = model_pred.float().chunk(2)
        target_instance, target_class = target.float().chunk(2)
        instance_loss = F.mse_loss(pred_instance, target_instance)
        prior_loss = F.mse_loss(pred_class, target_class)
        return instance_loss + prior_loss_weight * prior_loss, instance_loss, prior_loss
    loss = F.mse_loss(model_pred.float(), target.float())
    return loss, loss, torch.zeros((), device=loss.device)


# --- shared plumbing --------------------------------------------------------------------------------------


def load_pipeline(
    pipeline_class: Any,
    source: BaseModelSource,
    denoiser_class: Any = None,
    denoiser_kwargs: dict[str, Any] | None = None,
) -> Any:
    """A family pipeline from a diffusers folder, a Hub id, or a single file (read with the configs of
    source.config, a folder or Hub id): fp32 on the CPU, the loop decides devices and dtypes. denoiser_kwargs
    (e.g. a quantization_config) go to the denoiser's own from_pretrained / from_single_file."""
    denoiser_kwargs = denoiser_kwargs or {}
    with loading_errors(source):
        if source.kind == "single_file":
            if source.config is None:
                raise BaseModelError(
                    f"{source.location} is a single file; set base_model_config to a diffusers folder or Hub "
                    "id of the same family so its configs (and missing parts) can be read"
                )
            local = Path(source.config).is_dir()
            if denoiser_class is None:  # the family's whole pipeline lives in the file
                return pipeline_class.from_single_file(
                    source.location, config=source.config, local_files_only=local
                )
            denoiser = denoiser_class.from_single_file(
                source.location,
                config=source.config,
                subfolder="transformer",
                local_files_only=local,
                **denoiser_kwargs,
            )
            return pipeline_class.from_pretrained(source.config, transformer=denoiser, local_files_only=local)
        kwargs = {"local_files_only": True} if source.kind == "folder" else {}
        if denoiser_kwargs:  # the denoiser loaded on its own (quantized), the rest as usual
            denoiser = denoiser_class.from_pretrained(
                source.location, subfolder="transformer", **kwargs, **denoiser_kwargs
            )
            return pipeline_class.from_pretrained(source.location, transformer=denoiser, **kwargs)
        return pipeline_class.from_pretrained(source.location, **kwargs)


def add_lora(
    module: torch.nn.Module, targets: tuple[str, ...], rank: int, alpha: float, dropout: float = 0.0
) -> None:
    """A seeded-init LoRA adapter on a frozen denoiser or text encoder (the caller seeds torch first)."""
    from peft import LoraConfig

    module.requires_grad_(False)
    module.add_adapter(
        LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=dropout,
            init_lora_weights="gaussian",
            target_modules=list(targets),
        )
    )


def adapter_state(
    denoiser: torch.nn.Module, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The adapter's weights under PEFT names (`<module>.lora_A.weight`, no model prefix), and its LoRA
    config as the metadata diffusers stores beside them (so lora_alpha survives the reload)."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(denoiser, save_embedding_layers=False)
    tensors = {key: tensor.detach().to("cpu", dtype).contiguous() for key, tensor in state.items()}
    config = denoiser.peft_config["default"].to_dict()
    metadata = {key: (sorted(value) if isinstance(value, set) else value) for key, value in config.items()}
    return tensors, json.loads(json.dumps(metadata, default=str))


def lora_alpha_of(denoiser: torch.nn.Module) -> float:
    return float(denoiser.peft_config["default"].lora_alpha)


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def comfyui_lora_state(
    adapter: dict[str, torch.Tensor], alpha: float, prefix: str, *, kohya_suffixes: bool
) -> dict[str, torch.Tensor]:
    """diffusers/PEFT adapter keys (`<module>.lora_A.weight`) under a loader's module prefix, with one
    `<module>.alpha` per module so the strength survives; lora_down/lora_up where the loader wants them."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in adapter.items():
        module, _, suffix = key.rpartition(".lora_")
        if kohya_suffixes:
            suffix = suffix.replace("A.weight", "down.weight").replace("B.weight", "up.weight")
            out[f"{prefix}{module}.lora_{suffix}"] = tensor
        else:
            out[f"{prefix}{key}"] = tensor
        out[f"{prefix}{module}.alpha"] = torch.tensor(alpha, dtype=tensor.dtype)
    return out


def render_image(
    model: FamilyModel, prompt: str, *, steps: int, guidance: float, size: int, seed: int, **extra: Any
) -> Any:
    """One sample from the pipeline over the modules in memory (trained adapter included)."""
    pipe = model.pipeline
    pipe.set_progress_bar_config(disable=True)
    model.denoiser.eval()
    with torch.inference_mode():
        return pipe(
            prompt,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=size,
            width=size,
            generator=torch.Generator(device="cpu").manual_seed(seed),
            **extra,
        ).images[0]


def export_lora_record(
    family: Any, model: FamilyModel, hp: TrainingHyperparameters, out_dir: Path
) -> dict[str, Any]:
    """A LoRA-only family's export: its two files (family.export_lora) and the record's file fields."""
    from ..export import OUTPUT_DTYPES  # export imports the loop, which imports this module

    out_dir.mkdir(parents=True, exist_ok=True)
    files = family.export_lora(model, out_dir, hp.model_name, OUTPUT_DTYPES[hp.output_dtype])
    log.info("%s LoRA written to %s: %s", model.family, out_dir, ", ".join(files))
    return {"kind": "lora", "lora_weight_name": files[0], "single_file_name": None, "lora_files": files}
