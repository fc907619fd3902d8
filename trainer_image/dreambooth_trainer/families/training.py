"""LoRA DreamBooth through the family interface: the trainer's loop structure (cached prompts and latents,
per-step randomness from (seed, step), checkpoints, metrics lines, stop handling) with every model-specific
step (prompt encoding, latents, noise/target, prediction, loss) delegated to the family.

It reuses the loop module's helpers, so batches, seeds, optimizer and checkpoint format are the SD loop's.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from ..checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint, trainable_parameters
from ..data import TrainingImage
from ..errors import TrainingStopped
from ..hyperparameters import HyperparameterError, TrainingHyperparameters
from ..loop import (
    HALF,
    LoopResult,
    checkpoint_fingerprint,
    checkpoint_interval,
    effective_mixed_precision,
    make_optimizer,
    memory_mb,
    micro_step_generator,
    place,
    to_pixel_batch,
)
from ..metrics import format_metrics_line, format_summary_line
from ..sagemaker_contract import StopSignal
from .base import FamilyModel, ModelFamily, add_lora
from .buckets import bucket_batch_indices
from .registry import family_defaults

log = logging.getLogger(__name__)


def resolution_multiple(model: FamilyModel) -> int:
    """Pixels per latent cell times the denoiser's own downsampling (UNet levels, or 2x2 latent patches)."""
    pipe = model.pipeline
    vae_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    if hasattr(pipe, "unet"):
        return vae_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    return vae_factor * 2


def check_family_job(model: FamilyModel, hp: TrainingHyperparameters) -> None:
    """What this family's path trains; anything else is refused before any work, naming the setting."""
    if hp.training_method != "lora":
        raise HyperparameterError(
            f"hyperparameter 'training_method' = {hp.training_method}: {model.family} base models train LoRA "
            "adapters only; set training_method=lora"
        )
    if hp.train_text_encoder:
        raise HyperparameterError(
            f"hyperparameter 'train_text_encoder' = true: {model.family} LoRA trains the denoiser only "
            "(its text embeddings are cached); set train_text_encoder=false"
        )
    multiple = resolution_multiple(model)
    if hp.resolution % multiple:
        raise HyperparameterError(
            f"hyperparameter 'resolution' = {hp.resolution}: this {model.family} base model needs a multiple "
            f"of {multiple} (e.g. 1024)"
        )


BF16_ONLY_FAMILIES = ("flux", "zimage")  # trained in bf16 by their references; no fp16 path proven NaN-free
FAMILY_DEFAULT_FIELDS = ("resolution", "max_train_steps", "learning_rate", "lora_rank", "lora_alpha")


def apply_family_defaults(
    hp: TrainingHyperparameters, family: str
) -> tuple[TrainingHyperparameters, list[str]]:
    """The family's defaults (registry) for every setting the job left out; what the job set always wins."""
    defaults = family_defaults(family)
    wanted: dict[str, Any] = {name: getattr(defaults, name) for name in FAMILY_DEFAULT_FIELDS}
    wanted["training_method"] = "lora"
    wanted["mixed_precision"] = defaults.mixed_precision
    changes = {
        name: value
        for name, value in wanted.items()
        if name not in hp.model_fields_set and getattr(hp, name) != value
    }
    lines = [f"{family} default: {name} = {value}" for name, value in changes.items()]
    return (hp.model_copy(update=changes) if changes else hp), lines


def check_precision(family: str, mixed_precision: str, cuda: bool, native_bf16: bool) -> None:
    """FLUX-class families train in bf16: a GPU without native bf16 (T4) or an fp16 request is refused."""
    if family not in BF16_ONLY_FAMILIES or not cuda or mixed_precision == "no":
        return
    if mixed_precision == "fp16":
        raise HyperparameterError(
            f"hyperparameter 'mixed_precision' = fp16: {family} LoRA trains in bf16 only (fp16 is not proven "
            "free of NaNs for it); set mixed_precision=bf16 or leave it out"
        )
    if not native_bf16:
        raise HyperparameterError(
            f"{family} LoRA needs a GPU with native bf16 (e.g. ml.g6.xlarge, L4 24 GB; ml.g5 A10G); this GPU "
            "has none (a T4 such as ml.g4dn emulates it): choose one of those instance types"
        )


def shape_groups(images: list[TrainingImage]) -> dict[tuple[int, ...], list[int]]:
    """Image indices per pixel shape (aspect bucket), in image order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(image.pixels.shape, []).append(index)
    return groups


def _text_and_vae_modules(model: FamilyModel) -> list[torch.nn.Module]:
    components = model.pipeline.components
    return [
        module
        for name, module in components.items()
        if isinstance(module, torch.nn.Module) and (name.startswith("text_encoder") or name == "vae")
    ]


def train_family(
    family: ModelFamily,
    model: FamilyModel,
    instance: list[TrainingImage],
    class_images: list[TrainingImage],
    hp: TrainingHyperparameters,
    *,
    checkpoint_dir: Any = None,
    stop: StopSignal | None = None,
) -> LoopResult:
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params

    check_family_job(model, hp)
    stop = stop or StopSignal()
    cuda = torch.cuda.is_available()
    check_precision(
        model.family,
        hp.mixed_precision,
        cuda,
        cuda and torch.cuda.is_bf16_supported(including_emulation=False),
    )
    mixed_precision = effective_mixed_precision(hp.mixed_precision, cuda)
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not cuda)
    device = accelerator.device
    weight_dtype = HALF.get(mixed_precision, torch.float32)
    prior = hp.with_prior_preservation
    denoiser = model.denoiser
    frozen = _text_and_vae_modules(model)

    # The base stays frozen; a seeded LoRA adapter learns (resumes and reruns start from the same weights).
    for module in frozen:
        module.requires_grad_(False)
    torch.manual_seed(hp.seed)
    add_lora(denoiser, family.lora_targets, hp.lora_rank, int(hp.effective_lora_alpha), hp.lora_dropout)
    if hp.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    for module in frozen:
        place(module, device, weight_dtype)
    place(denoiser, device, weight_dtype)
    cast_training_params([denoiser], dtype=torch.float32)

    # Prompts and latents once, then the text encoders and VAE leave the device.
    instance_prompts = [image.caption or hp.instance_prompt for image in instance]
    class_prompts = [hp.class_prompt or ""] * len(class_images)
    unique_prompts = sorted(set(instance_prompts + class_prompts))
    prompt_row = {prompt: row for row, prompt in enumerate(unique_prompts)}
    sets = {"instance": instance, "class": class_images}
    # (mean, std) of each image's latent distribution: one tensor per aspect bucket, rows in image order
    latent_stats: dict[str, dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, list[int]]]] = {}
    with torch.no_grad():
        embeddings = family.encode_prompts(model, unique_prompts, device)
        for name, images in sets.items():
            latent_stats[name] = {}
            for shape, indices in shape_groups(images).items():
                means, stds = [], []
                for start in range(0, len(indices), 8):
                    chunk = [images[i] for i in indices[start : start + 8]]
                    mean, std = family.encode_images(model, to_pixel_batch(chunk, device, weight_dtype))
                    means.append(mean)
                    stds.append(std)
                latent_stats[name][shape] = (torch.cat(means), torch.cat(stds), indices)
    shapes = {name: [image.pixels.shape for image in images] for name, images in sets.items()}
    for module in frozen:
        module.to("cpu")
    if cuda:
        torch.cuda.empty_cache()
    log.info(
        "setup: family=%s device=%s mixed_precision=%s LoRA rank=%d alpha=%s targets=%s instance images=%d "
        "class images=%d",
        model.family,
        device,
        mixed_precision,
        hp.lora_rank,
        hp.effective_lora_alpha,
        ",".join(family.lora_targets),
        len(instance),
        len(class_images),
    )

    params = trainable_parameters({"denoiser": denoiser})
    optimizer = make_optimizer([{"params": list(params.values()), "lr": hp.learning_rate}], hp)
    lr_scheduler = get_scheduler(
        hp.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=hp.lr_warmup_steps,
        num_training_steps=hp.max_train_steps,
        num_cycles=hp.lr_num_cycles,
        power=hp.lr_power,
    )
    prepared, optimizer = accelerator.prepare(denoiser, optimizer)

    checkpoint_kwargs = dict(
        modules={"denoiser": accelerator.unwrap_model(prepared)},
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        scaler=accelerator.scaler,
        fingerprint={**checkpoint_fingerprint(hp, model), "family": model.family},
    )
    start_step = 0
    if checkpoint_dir is not None and (found := latest_checkpoint(checkpoint_dir)) is not None:
        start_step = load_checkpoint(found, **checkpoint_kwargs)
        log.info("resumed from checkpoint %s at step %d of %d", found, start_step, hp.max_train_steps)
    save_every = checkpoint_interval(hp, len(instance)) if checkpoint_dir is not None else 0

    def latents_for(name: str, rows: list[int], generator: torch.Generator) -> torch.Tensor:
        mean, std, indices = latent_stats[name][shapes[name][rows[0]]]  # a batch is one bucket
        positions = [indices.index(i) for i in rows]
        mean, std = mean[positions], std[positions]
        sample = mean + std * torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype)
        return family.model_input(model, sample)

    def micro_batch(micro_step: int, generator: torch.Generator) -> list[tuple[torch.Tensor, list[str]]]:
        """[(latents, prompts)]: instance (+ class) images as one batch, or two where their shapes differ."""
        rows = bucket_batch_indices(shapes["instance"], hp.train_batch_size, micro_step, hp.seed, stream=0)
        groups = [(latents_for("instance", rows, generator), [instance_prompts[i] for i in rows])]
        if prior:
            class_rows = bucket_batch_indices(
                shapes["class"], hp.train_batch_size, micro_step, hp.seed, stream=1
            )
            class_group = (
                latents_for("class", class_rows, generator),
                [class_prompts[i] for i in class_rows],
            )
            if class_group[0].shape[1:] == groups[0][0].shape[1:]:
                return [(torch.cat([groups[0][0], class_group[0]]), groups[0][1] + class_group[1])]
            groups.append(class_group)
        return groups

    def group_loss(
        latents: torch.Tensor, prompts: list[str], with_prior: bool, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        noise = torch.randn(latents.shape, generator=generator, device=device)
        batch = family.add_noise(model, latents, noise, generator)
        conditions = embeddings.rows([prompt_row[p] for p in prompts])
        with accelerator.autocast():
            prediction = family.predict(model, prepared, batch, conditions)
        return family.loss(prediction, batch, with_prior, hp.prior_loss_weight)

    prepared.train()
    accumulation = hp.gradient_accumulation_steps
    interval_losses = torch.zeros(3, device=device)
    interval_start, interval_steps = time.perf_counter(), 0
    train_start = time.perf_counter()
    step_end_times: list[float] = []
    final_loss = float("nan")
    global_step = start_step
    with stop.deferred():
        while global_step < hp.max_train_steps:
            for micro in range(accumulation):
                micro_step = global_step * accumulation + micro
                generator = micro_step_generator(hp.seed, micro_step, device)
                groups = micro_batch(micro_step, generator)
                if len(groups) == 1:
                    loss, instance_loss, prior_loss = group_loss(*groups[0], prior, generator)
                else:  # a non-square instance bucket beside square class images: one pass each
                    instance_loss = group_loss(*groups[0], False, generator)[0]
                    prior_loss = group_loss(*groups[1], False, generator)[0]
                    loss = instance_loss + hp.prior_loss_weight * prior_loss
                accelerator.backward(loss / accumulation)
                interval_losses += torch.stack([loss, instance_loss, prior_loss]).detach() / accumulation
            if hp.max_grad_norm:
                accelerator.clip_grad_norm_(list(params.values()), hp.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            interval_steps += 1
            step_end_times.append(time.perf_counter())

            if interval_steps == hp.logging_steps or global_step == hp.max_train_steps:
                losses = (interval_losses / interval_steps).tolist()
                elapsed = time.perf_counter() - interval_start
                final_loss = losses[0]
                line = format_metrics_line(
                    step=global_step,
                    loss=losses[0],
                    instance_loss=losses[1],
                    prior_loss=losses[2],
                    learning_rate=lr_scheduler.get_last_lr()[0],
                    steps_per_second=interval_steps / elapsed if elapsed > 0 else 0.0,
                    memory_mb=memory_mb(device),
                )
                print(line, flush=True)
                interval_losses.zero_()
                interval_start, interval_steps = time.perf_counter(), 0

            periodic = save_every and global_step % save_every == 0 and global_step < hp.max_train_steps
            if (periodic or stop.requested) and checkpoint_dir is not None:
                save_checkpoint(checkpoint_dir, global_step, **checkpoint_kwargs)
            if stop.requested:
                raise TrainingStopped(
                    f"stopped by {stop.signal_name or 'a stop request'} at step {global_step} of "
                    f"{hp.max_train_steps}"
                    + (f"; checkpoint saved in {checkpoint_dir}" if checkpoint_dir is not None else "")
                )

    train_seconds = time.perf_counter() - train_start
    if global_step > start_step:
        print(
            format_summary_line(total_steps=global_step, train_seconds=train_seconds, final_loss=final_loss)
        )
    denoiser = accelerator.unwrap_model(prepared)
    return LoopResult(
        unet=denoiser,
        text_encoder=None,
        global_step=global_step,
        resumed_from=start_step,
        final_loss=final_loss,
        train_seconds=train_seconds,
        step_end_times=step_end_times,
    )
