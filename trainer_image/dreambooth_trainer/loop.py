"""The DreamBooth training loop, one for every model family: set up once, then one plain loop over optimizer
steps. Whatever is model-specific the family does (families/base.ModelFamily): encode prompts and images,
noise + timesteps + target, the prediction, the loss. The loop owns the rest: which weights learn (full or
LoRA, text encoder on request), precision and devices, the latent/prompt caches, batches, optimizer, LR
schedule and EMA through accelerate, checkpoints, metrics lines and SIGTERM.

Speed comes from doing per-step only what must be per-step: latents and prompt embeddings are computed once
before the loop (unless the text encoder trains or not_cache_latents asks otherwise), gradients are dropped
with zero_grad(set_to_none=True), nothing is reloaded. All randomness of step s comes from (seed, s), so a
run resumed from a checkpoint takes the same batches and noise as the uninterrupted one.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import resource
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpointing import (
    CheckpointStore,
    default_checkpoint_interval,
    sigterm_save_decision,
    trainable_parameters,
)
from .data import TrainingImage
from .errors import TrainingStopped
from .families.base import FamilyModel, ModelFamily, add_lora
from .families.quantization import is_quantized
from .families.registry import get_family
from .families.sd import sd_model
from .hyperparameters import TrainingHyperparameters
from .metrics import format_metrics_line, format_summary_line
from .model_loading import ModelParts
from .sagemaker_contract import StopSignal

log = logging.getLogger(__name__)

HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class LoopResult:
    unet: torch.nn.Module  # the trained denoiser: the UNet, or the family's transformer
    text_encoder: torch.nn.Module | None
    global_step: int
    resumed_from: int
    final_loss: float
    train_seconds: float
    step_end_times: list[float] = field(default_factory=list)  # perf_counter after each step (benchmark)
    frozen_fp32: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


# --- helpers with one job each ------------------------------------------------------------------------------


def effective_mixed_precision(requested: str, cuda: bool) -> str:
    if requested != "no" and not cuda:
        log.warning("mixed_precision=%s needs a CUDA GPU; none here, so training runs in fp32", requested)
        return "no"
    # torch counts emulated bf16 (a T4 says yes, then runs it slowly): ask for native support only.
    if requested == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        log.warning("mixed_precision=bf16 is not supported natively by this GPU; using fp16")
        return "fp16"
    return requested


def configure_attention(unet: torch.nn.Module, choice: str) -> str:
    """PyTorch SDPA (diffusers' default) unless xformers is asked for, installed and on CUDA; an xformers
    that fails to switch on (version mismatch, unsupported GPU) falls back to SDPA instead of failing."""
    if choice == "xformers":
        installed = importlib.util.find_spec("xformers") is not None
        if installed and torch.cuda.is_available():
            try:
                unet.enable_xformers_memory_efficient_attention()
            except Exception as exc:  # noqa: BLE001 - any failure here has the same remedy
                from diffusers.models.attention_processor import AttnProcessor2_0

                unet.set_attn_processor(AttnProcessor2_0())
                log.warning("attention: xformers failed to switch on (%s); using PyTorch SDPA", exc)
                return "sdpa"
            log.info("attention: xformers")
            return "xformers"
        log.info(
            "attention: xformers asked for but unusable (installed=%s, cuda=%s); using PyTorch SDPA",
            installed,
            torch.cuda.is_available(),
        )
    return "sdpa"


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move, and cast only when needed (diffusers warns on every dtype cast). A quantized base only moves:
    its weights keep the dtypes they were loaded with (diffusers refuses to cast it)."""
    if is_quantized(module) or next(module.parameters()).dtype == dtype:
        module.to(device)
    else:
        module.to(device, dtype=dtype)


def make_optimizer(param_groups: list[dict], hp: TrainingHyperparameters) -> torch.optim.Optimizer:
    kwargs = {
        "betas": (hp.adam_beta1, hp.adam_beta2),
        "weight_decay": hp.adam_weight_decay,
        "eps": hp.adam_epsilon,
    }
    if hp.use_8bit_adam:
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(param_groups, **kwargs)
    return torch.optim.AdamW(param_groups, **kwargs)


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def to_pixel_batch(images: list[TrainingImage], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    array = np.stack([image.pixels for image in images])  # (N, H, W, 3) uint8
    pixels = torch.from_numpy(array).to(device).permute(0, 3, 1, 2)
    return (pixels.to(dtype) / 127.5 - 1.0).contiguous()


@lru_cache(maxsize=64)
def _epoch_order(seed: int, stream: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch]).permutation(n)


def batch_indices(n: int, batch_size: int, micro_step: int, seed: int, stream: int) -> list[int]:
    """Indices of a micro-batch: epochs are seeded permutations laid end to end, so any step is computable."""
    positions = range(micro_step * batch_size, (micro_step + 1) * batch_size)
    return [int(_epoch_order(seed, stream, p // n, n)[p % n]) for p in positions]


def bucket_batch_indices(
    shapes: list[tuple[int, ...]], batch_size: int, micro_step: int, seed: int, stream: int
) -> list[int]:
    """A batch of one aspect bucket. One bucket: exactly batch_indices. Several: the image at this step's
    place in the seeded epoch order, then the next images of its bucket in that order (cyclically)."""
    n = len(shapes)
    if len(set(shapes)) == 1:
        return batch_indices(n, batch_size, micro_step, seed, stream)
    position = micro_step * batch_size
    order = [int(i) for i in _epoch_order(seed, stream, position // n, n)]
    start = position % n
    anchor = order[start]
    same = [i for i in order[start:] + order[:start] if shapes[i] == shapes[anchor]]
    return [same[k % len(same)] for k in range(batch_size)]


def shape_groups(images: list[TrainingImage]) -> dict[tuple[int, ...], list[int]]:
    """Image indices per pixel shape (aspect bucket), in image order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(image.pixels.shape, []).append(index)
    return groups


def micro_step_generator(seed: int, micro_step: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + micro_step)


def optimizer_step(
    accelerator: Any, optimizer: Any, lr_scheduler: Any, ema: Any, unet: torch.nn.Module
) -> bool:
    """One optimizer step; False when the fp16 grad scaler skipped it for overflow. The scheduler, prepared
    by accelerate, then does not advance either, and neither does the EMA (it would average a stale copy)."""
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if accelerator.optimizer_step_was_skipped:
        return False
    if ema is not None:
        ema.step(accelerator.unwrap_model(unet).parameters())
    return True


def checkpoint_interval(hp: TrainingHyperparameters, num_instance: int) -> int:
    """Steps between checkpoints: save_steps (epochs with save_use_epochs); default a quarter of the run."""
    if hp.save_steps is None:
        return default_checkpoint_interval(hp.max_train_steps)
    if hp.save_steps == 0:
        return 0
    if not hp.save_use_epochs:
        return hp.save_steps
    steps_per_epoch = math.ceil(num_instance / (hp.train_batch_size * hp.gradient_accumulation_steps))
    return hp.save_steps * steps_per_epoch


def checkpoint_fingerprint(hp: TrainingHyperparameters, model: FamilyModel) -> dict[str, Any]:
    """Settings that shape the saved state; a checkpoint written under others cannot be resumed."""
    keys = ("training_method", "train_text_encoder", "lora_rank", "use_ema", "use_8bit_adam")
    return {
        **{key: getattr(hp, key) for key in keys},
        "lora_alpha": hp.effective_lora_alpha,
        "family": model.family,
        "base": f"{model.source.kind}:{Path(model.source.location).name}",  # by name: re-runs elsewhere match
    }


def stop_checkpoint(
    store: CheckpointStore | None, step: int, hp: TrainingHyperparameters, stop: StopSignal
) -> str:
    """On SIGTERM: save only when it is worth it and fits SageMaker's window; say what a restart gets."""
    if store is None:
        return "no checkpoint folder, a restart starts over"
    save, why = sigterm_save_decision(
        step,
        store.newest_step,
        min_new_steps=hp.sigterm_save_min_steps,
        estimated_save_seconds=store.estimated_save_seconds(),
        seconds_since_signal=stop.seconds_since_request(),
    )
    log.info("%s: %s checkpoint (%s)", stop.signal_name or "stop", "saving a" if save else "no new", why)
    if save:
        store.save(step)
    newest = store.newest_step
    if newest is None:
        return "no checkpoint yet, a restart starts over"
    return f"a restarted job resumes from the checkpoint at step {newest}"


# --- the loop -----------------------------------------------------------------------------------------------


def train(
    model: FamilyModel | ModelParts,
    instance: list[TrainingImage],
    class_images: list[TrainingImage],
    hp: TrainingHyperparameters,
    *,
    family: ModelFamily | None = None,
    checkpoint_dir: Any = None,
    stop: StopSignal | None = None,
) -> LoopResult:
    """Train on the model's family (family: its implementation with options; default the registry's).
    Loaded SD parts are taken as the SD family's model."""
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel, cast_training_params

    if isinstance(model, ModelParts):
        model = sd_model(model)
    family = family or get_family(model.family)
    stop = stop or StopSignal()
    cuda = torch.cuda.is_available()
    mixed_precision = effective_mixed_precision(hp.mixed_precision, cuda)
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not cuda)
    device = accelerator.device
    weight_dtype = HALF.get(mixed_precision, torch.float32)
    lora = hp.training_method == "lora"
    prior = hp.with_prior_preservation

    # Which weights learn: the denoiser (and the text encoder on request), whole or through LoRA adapters
    # (seeded, so resumes and reruns match); every other module of the pipeline stays frozen.
    denoiser = model.denoiser
    text_encoder = model.text_encoder if hp.train_text_encoder else None
    trained = {model.denoiser_name: denoiser}
    if text_encoder is not None:
        trained["text_encoder"] = text_encoder
    frozen = {
        name: module
        for name, module in model.pipeline.components.items()
        if isinstance(module, torch.nn.Module) and name not in trained
    }
    for module in frozen.values():
        module.requires_grad_(False)
    for module in trained.values():
        module.requires_grad_(not lora)
    torch.manual_seed(hp.seed)
    if lora:
        alpha = hp.effective_lora_alpha
        add_lora(denoiser, family.lora_targets, hp.lora_rank, alpha, hp.lora_dropout)
        if text_encoder is not None:
            add_lora(text_encoder, family.text_encoder_lora_targets, hp.lora_rank, alpha, hp.lora_dropout)
    attention = configure_attention(denoiser, hp.attention)
    if hp.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
        if text_encoder is not None:
            text_encoder.gradient_checkpointing_enable()

    # Frozen weights in half precision on GPU, trained weights in fp32. A full fine-tune exported in fp32
    # keeps fp32 copies of the frozen modules it exports, which are about to lose precision.
    frozen_fp32: dict[str, dict[str, torch.Tensor]] = {}
    if not lora and weight_dtype != torch.float32 and hp.output_dtype == "fp32":
        for name, module in frozen.items():
            frozen_fp32[name] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    for module in frozen.values():
        place(module, device, weight_dtype)
        module.eval()
    for module in trained.values():
        place(module, device, weight_dtype if lora else torch.float32)
    if lora:
        cast_training_params(list(trained.values()), dtype=torch.float32)

    # Prompts: each instance image's caption or the instance prompt; class images use the class prompt.
    # Embeddings and latent distributions are computed once (one tensor per aspect bucket, rows in image
    # order), unless the text encoder trains or not_cache_latents asks for them per step.
    instance_prompts = [image.caption or hp.instance_prompt for image in instance]
    class_prompts = [hp.class_prompt or ""] * len(class_images)
    unique_prompts = sorted(set(instance_prompts + class_prompts))
    prompt_row = {prompt: row for row, prompt in enumerate(unique_prompts)}
    sets = {"instance": instance, "class": class_images}
    shapes = {name: [image.pixels.shape for image in images] for name, images in sets.items()}
    cache_text = text_encoder is None
    cache_latents = not hp.not_cache_latents
    latent_stats: dict[str, dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, list[int]]]] = {}
    with torch.no_grad():
        embeddings = family.encode_prompts(model, unique_prompts, device) if cache_text else None
        for name, images in sets.items() if cache_latents else ():
            latent_stats[name] = {}
            for shape, indices in shape_groups(images).items():
                means, stds = [], []
                for start in range(0, len(indices), 8):
                    chunk = [images[i] for i in indices[start : start + 8]]
                    mean, std = family.encode_images(model, to_pixel_batch(chunk, device, weight_dtype))
                    means.append(mean)
                    stds.append(std)
                latent_stats[name][shape] = (torch.cat(means), torch.cat(stds), indices)
    for name, module in frozen.items():  # done with them: free the device for the denoiser
        if name != "vae" or cache_latents:
            module.to("cpu")
    if cuda:
        torch.cuda.empty_cache()
    log.info(
        "setup: family=%s device=%s mixed_precision=%s attention=%s method=%s cached latents=%s "
        "cached prompts=%s instance images=%d class images=%d",
        model.family,
        device,
        mixed_precision,
        attention,
        hp.training_method,
        cache_latents,
        cache_text,
        len(instance),
        len(class_images),
    )

    # Optimizer over the trainable weights (text encoder with its own learning rate), schedule, EMA.
    params = trainable_parameters(trained)
    groups = [
        {
            "params": [p for n, p in params.items() if n.startswith(f"{model.denoiser_name}.")],
            "lr": hp.learning_rate,
        }
    ]
    if text_encoder is not None:
        te_params = [p for n, p in params.items() if n.startswith("text_encoder.")]
        groups.append({"params": te_params, "lr": hp.effective_text_encoder_learning_rate})
    optimizer = make_optimizer(groups, hp)
    lr_scheduler = get_scheduler(
        hp.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=hp.lr_warmup_steps,
        num_training_steps=hp.max_train_steps,
        num_cycles=hp.lr_num_cycles,
        power=hp.lr_power,
    )
    *prepared, optimizer, lr_scheduler = accelerator.prepare(*trained.values(), optimizer, lr_scheduler)
    denoiser = prepared[0]
    ema = None
    if hp.use_ema and not lora:
        ema = EMAModel(accelerator.unwrap_model(denoiser).parameters())
        ema.to(device)
    elif hp.use_ema:
        log.info("use_ema ignored: it applies to full fine-tuning, not LoRA adapters")

    # Resume from the newest verified checkpoint (a restarted spot job finds it restored by SageMaker).
    store = None
    start_step = 0
    if checkpoint_dir is not None:
        store = CheckpointStore(
            Path(checkpoint_dir),
            modules={name: accelerator.unwrap_model(module) for name, module in trained.items()},
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            fingerprint=checkpoint_fingerprint(hp, model),
            scaler=accelerator.scaler,
            ema=ema,
        )
        start_step = store.resume()
        if start_step:
            if ema is not None:
                ema.to(device)
            log.info("resuming at step %d of %d", start_step, hp.max_train_steps)
    save_every = checkpoint_interval(hp, len(instance)) if store is not None else 0

    def latents_for(name: str, rows: list[int], generator: torch.Generator) -> torch.Tensor:
        if cache_latents:
            mean, std, indices = latent_stats[name][shapes[name][rows[0]]]  # a batch is one bucket
            positions = [indices.index(i) for i in rows]
            mean, std = mean[positions], std[positions]
        else:
            with torch.no_grad():
                pixels = to_pixel_batch([sets[name][i] for i in rows], device, weight_dtype)
                mean, std = family.encode_images(model, pixels)
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
        if cache_text:
            conditions = embeddings.rows([prompt_row[p] for p in prompts])
        else:
            conditions = family.encode_prompts(model, prompts, device).rows(list(range(len(prompts))))
        with accelerator.autocast():
            prediction = family.predict(model, denoiser, batch, conditions)
        return family.loss(prediction, batch, with_prior, hp.prior_loss_weight)

    # --- the loop proper: one iteration per optimizer step --------------------------------------------------
    for module in prepared:
        module.train()
    accumulation = hp.gradient_accumulation_steps
    # total, instance and prior loss, summed on the device: no host sync per step
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
            if not optimizer_step(accelerator, optimizer, lr_scheduler, ema, denoiser):
                log.info("step %d: fp16 overflow, the grad scaler skipped the update", global_step + 1)
            global_step += 1
            interval_steps += 1
            step_end_times.append(time.perf_counter())

            if interval_steps == hp.logging_steps or global_step == hp.max_train_steps:
                losses = (interval_losses / interval_steps).tolist()  # the one host sync per interval
                elapsed = time.perf_counter() - interval_start
                final_loss = losses[0]
                print(
                    format_metrics_line(
                        step=global_step,
                        loss=losses[0],
                        instance_loss=losses[1],
                        prior_loss=losses[2],
                        learning_rate=lr_scheduler.get_last_lr()[0],
                        steps_per_second=interval_steps / elapsed if elapsed > 0 else 0.0,
                        memory_mb=memory_mb(device),
                    ),
                    flush=True,
                )
                interval_losses.zero_()
                interval_start, interval_steps = time.perf_counter(), 0

            # Periodic checkpoints, and one after the last step: a reclaim during samples, export or upload
            # then resumes with nothing left to train.
            if save_every and (global_step % save_every == 0 or global_step == hp.max_train_steps):
                store.save(global_step)
            if stop.requested:
                raise TrainingStopped(
                    f"stopped by {stop.signal_name or 'a stop request'} at step {global_step} of "
                    f"{hp.max_train_steps}; {stop_checkpoint(store, global_step, hp, stop)}"
                )

    train_seconds = time.perf_counter() - train_start
    if global_step > start_step:
        summary = format_summary_line(
            total_steps=global_step, train_seconds=train_seconds, final_loss=final_loss
        )
        print(summary, flush=True)
    else:
        log.info("the checkpoint is already at step %d: nothing left to train", global_step)
    denoiser = accelerator.unwrap_model(denoiser)
    if ema is not None:
        ema.copy_to(denoiser.parameters())
    return LoopResult(
        unet=denoiser,
        text_encoder=accelerator.unwrap_model(prepared[1])
        if text_encoder is not None
        else model.text_encoder,
        global_step=global_step,
        resumed_from=start_step,
        final_loss=final_loss,
        train_seconds=train_seconds,
        step_end_times=step_end_times,
        frozen_fp32=frozen_fp32,
    )
