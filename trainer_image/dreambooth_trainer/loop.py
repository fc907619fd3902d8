"""The DreamBooth training loop: set up once, then one plain loop over optimizer steps.

Speed comes from doing per-step only what must be per-step: VAE latents and prompt embeddings are computed
once (unless the text encoder trains or not_cache_latents asks otherwise), gradients are
dropped with zero_grad(set_to_none=True), nothing is reloaded. All randomness of step s comes from (seed, s),
so a run resumed from a checkpoint takes the same batches and noise as the uninterrupted one.
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
import torch.nn.functional as F

from .checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint, trainable_parameters
from .data import TrainingImage
from .errors import TrainingStopped
from .hyperparameters import TrainingHyperparameters
from .metrics import format_metrics_line, format_summary_line
from .model_loading import ModelParts
from .sagemaker_contract import StopSignal

log = logging.getLogger(__name__)

UNET_LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_ENCODER_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class LoopResult:
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
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
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("mixed_precision=bf16 is not supported by this GPU; using fp16")
        return "fp16"
    return requested


def configure_attention(unet: torch.nn.Module, choice: str) -> str:
    """xformers only when installed, asked for and on CUDA; otherwise diffusers' default, PyTorch SDPA."""
    if choice == "xformers":
        installed = importlib.util.find_spec("xformers") is not None
        if installed and torch.cuda.is_available():
            unet.enable_xformers_memory_efficient_attention()
            log.info("attention: xformers")
            return "xformers"
        log.info(
            "attention: xformers asked for but unusable (installed=%s, cuda=%s); using PyTorch SDPA",
            installed,
            torch.cuda.is_available(),
        )
    return "sdpa"


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move, and cast only when needed (diffusers warns on every dtype cast)."""
    if next(module.parameters()).dtype == dtype:
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


def micro_step_generator(seed: int, micro_step: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + micro_step)


def checkpoint_interval(hp: TrainingHyperparameters, num_instance: int) -> int:
    if hp.save_steps == 0:
        return 0
    if not hp.save_use_epochs:
        return hp.save_steps
    steps_per_epoch = math.ceil(num_instance / (hp.train_batch_size * hp.gradient_accumulation_steps))
    return hp.save_steps * steps_per_epoch


def checkpoint_fingerprint(hp: TrainingHyperparameters, parts: ModelParts) -> dict[str, Any]:
    """Settings that shape the saved state; a checkpoint written under others cannot be resumed."""
    keys = ("training_method", "train_text_encoder", "lora_rank", "use_ema", "use_8bit_adam")
    return {
        **{key: getattr(hp, key) for key in keys},
        "lora_alpha": hp.effective_lora_alpha,
        "base": f"{parts.source.kind}:{Path(parts.source.location).name}",  # by name: re-runs elsewhere match
    }


# --- the loop -----------------------------------------------------------------------------------------------


def train(
    parts: ModelParts,
    instance: list[TrainingImage],
    class_images: list[TrainingImage],
    hp: TrainingHyperparameters,
    *,
    checkpoint_dir: Any = None,
    stop: StopSignal | None = None,
) -> LoopResult:
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel, cast_training_params

    stop = stop or StopSignal()
    cuda = torch.cuda.is_available()
    mixed_precision = effective_mixed_precision(hp.mixed_precision, cuda)
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not cuda)
    device = accelerator.device
    weight_dtype = HALF.get(mixed_precision, torch.float32)
    lora = hp.training_method == "lora"
    train_text_encoder = hp.train_text_encoder
    prior = hp.with_prior_preservation
    unet, text_encoder, vae = parts.unet, parts.text_encoder, parts.vae

    # Which weights learn. LoRA freezes the base and adds adapters (seeded, so resume and reruns match).
    vae.requires_grad_(False)
    unet.requires_grad_(not lora)
    text_encoder.requires_grad_(train_text_encoder and not lora)
    torch.manual_seed(hp.seed)
    if lora:
        from peft import LoraConfig

        def lora_config(targets: list[str]) -> LoraConfig:
            return LoraConfig(
                r=hp.lora_rank,
                lora_alpha=hp.effective_lora_alpha,
                lora_dropout=hp.lora_dropout,
                init_lora_weights="gaussian",
                target_modules=targets,
            )

        unet.add_adapter(lora_config(UNET_LORA_TARGETS))
        if train_text_encoder:
            text_encoder.add_adapter(lora_config(TEXT_ENCODER_LORA_TARGETS))
    attention = configure_attention(unet, hp.attention)
    if hp.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if train_text_encoder:
            text_encoder.gradient_checkpointing_enable()

    # Frozen weights in half precision on GPU, trained weights in fp32. Keep fp32 copies of frozen
    # modules only when the export asks for fp32 and they are about to lose precision.
    frozen_fp32: dict[str, dict[str, torch.Tensor]] = {}
    if weight_dtype != torch.float32 and hp.output_dtype == "fp32":
        frozen_fp32["vae"] = {k: v.detach().cpu().clone() for k, v in vae.state_dict().items()}
        if not train_text_encoder:
            frozen_fp32["text_encoder"] = {
                k: v.detach().cpu().clone() for k, v in text_encoder.state_dict().items()
            }
    place(vae, device, weight_dtype)
    place(unet, device, weight_dtype if lora else torch.float32)
    place(text_encoder, device, torch.float32 if (train_text_encoder and not lora) else weight_dtype)
    if lora:
        cast_training_params([unet, text_encoder] if train_text_encoder else [unet], dtype=torch.float32)
    vae.eval()

    # Prompts: each instance image's caption or the instance prompt; class images use the class prompt.
    instance_prompts = [image.caption or hp.instance_prompt for image in instance]
    class_prompts = [hp.class_prompt or ""] * len(class_images)
    unique_prompts = sorted(set(instance_prompts + class_prompts))
    tokens = parts.tokenizer(
        unique_prompts,
        padding="max_length",
        max_length=parts.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    prompt_row = {prompt: row for row, prompt in enumerate(unique_prompts)}

    def encode_prompts(rows: list[int]) -> torch.Tensor:
        return text_encoder(tokens[rows], return_dict=False)[0]

    cache_text = not train_text_encoder
    cache_latents = not hp.not_cache_latents
    scaling = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    sets = {"instance": instance, "class": class_images}
    # Latents are cached on first use, one image at a time (so a value never depends on batching): the
    # first step waits for its own images only, as an uncached loop's does, and each is encoded once.
    latent_stats: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        prompt_embeddings = (
            encode_prompts(list(range(len(unique_prompts)))).to(weight_dtype) if cache_text else None
        )
    if cache_text:
        text_encoder.to("cpu")
    if cuda:
        torch.cuda.empty_cache()
    log.info(
        "setup: device=%s mixed_precision=%s attention=%s method=%s cached latents=%s cached prompts=%s "
        "instance images=%d class images=%d",
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
    trained = {"unet": unet, "text_encoder": text_encoder} if train_text_encoder else {"unet": unet}
    params = trainable_parameters(trained)
    groups = [{"params": [p for n, p in params.items() if n.startswith("unet.")], "lr": hp.learning_rate}]
    if train_text_encoder:
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
    if train_text_encoder:
        unet, text_encoder, optimizer = accelerator.prepare(unet, text_encoder, optimizer)
    else:
        unet, optimizer = accelerator.prepare(unet, optimizer)
    ema = None
    if hp.use_ema and not lora:
        ema = EMAModel(accelerator.unwrap_model(unet).parameters())
        ema.to(device)
    elif hp.use_ema:
        log.info("use_ema ignored: it applies to full fine-tuning, not LoRA adapters")

    # Resume from the newest complete checkpoint (a restarted spot job finds it restored by SageMaker).
    fingerprint = checkpoint_fingerprint(hp, parts)
    state_modules = {name: accelerator.unwrap_model(module) for name, module in trained.items()}
    checkpoint_kwargs = dict(
        modules=state_modules,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        scaler=accelerator.scaler,
        ema=ema,
        fingerprint=fingerprint,
    )
    start_step = 0
    if checkpoint_dir is not None and (found := latest_checkpoint(checkpoint_dir)) is not None:
        start_step = load_checkpoint(found, **checkpoint_kwargs)
        if ema is not None:
            ema.to(device)
        log.info("resumed from checkpoint %s at step %d of %d", found, start_step, hp.max_train_steps)
    save_every = checkpoint_interval(hp, len(instance)) if checkpoint_dir is not None else 0

    noise_scheduler = parts.noise_scheduler
    prediction_type = noise_scheduler.config.prediction_type
    num_timesteps = noise_scheduler.config.num_train_timesteps

    def latents_for(name: str, rows: list[int], generator: torch.Generator) -> torch.Tensor:
        if cache_latents:
            for row in rows:
                if (name, row) not in latent_stats:
                    with torch.no_grad():
                        dist = vae.encode(to_pixel_batch([sets[name][row]], device, weight_dtype)).latent_dist
                    latent_stats[name, row] = (dist.mean, dist.std)
                    if len(latent_stats) == len(instance) + len(class_images):
                        vae.to("cpu")  # every image cached: free the device for the UNet
            mean = torch.cat([latent_stats[name, row][0] for row in rows])
            std = torch.cat([latent_stats[name, row][1] for row in rows])
            sample = mean + std * torch.randn(
                mean.shape, generator=generator, device=device, dtype=mean.dtype
            )
        else:
            pixels = to_pixel_batch([sets[name][i] for i in rows], device, weight_dtype)
            with torch.no_grad():
                sample = vae.encode(pixels).latent_dist.sample(generator=generator)
        return (sample.float() - shift) * scaling

    def micro_batch(micro_step: int, generator: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        rows = batch_indices(len(instance), hp.train_batch_size, micro_step, hp.seed, stream=0)
        latents = [latents_for("instance", rows, generator)]
        prompts = [instance_prompts[i] for i in rows]
        if prior:
            class_rows = batch_indices(len(class_images), hp.train_batch_size, micro_step, hp.seed, stream=1)
            latents.append(latents_for("class", class_rows, generator))
            prompts += [class_prompts[i] for i in class_rows]
        return torch.cat(latents), prompts

    # --- the loop proper: one iteration per optimizer step --------------------------------------------------
    unet.train()
    if train_text_encoder:
        text_encoder.train()
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
                latents, prompts = micro_batch(micro_step, generator)
                rows = [prompt_row[p] for p in prompts]
                noise = torch.randn(latents.shape, generator=generator, device=device)
                timesteps = torch.randint(
                    0, num_timesteps, (latents.shape[0],), generator=generator, device=device
                )
                noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
                encoder_hidden_states = prompt_embeddings[rows] if cache_text else encode_prompts(rows)
                model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
                if prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(latents, noise, timesteps)
                else:
                    target = noise
                if prior:
                    pred_instance, pred_class = model_pred.float().chunk(2)
                    target_instance, target_class = target.float().chunk(2)
                    instance_loss = F.mse_loss(pred_instance, target_instance)
                    prior_loss = F.mse_loss(pred_class, target_class)
                    loss = instance_loss + hp.prior_loss_weight * prior_loss
                else:
                    instance_loss = loss = F.mse_loss(model_pred.float(), target.float())
                    prior_loss = torch.zeros((), device=device)
                accelerator.backward(loss / accumulation)
                interval_losses += torch.stack([loss, instance_loss, prior_loss]).detach() / accumulation
            if hp.max_grad_norm:
                accelerator.clip_grad_norm_(list(params.values()), hp.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(accelerator.unwrap_model(unet).parameters())
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

            periodic = save_every and global_step % save_every == 0 and global_step < hp.max_train_steps
            if (periodic or stop.requested) and checkpoint_dir is not None:
                save_checkpoint(checkpoint_dir, global_step, **checkpoint_kwargs)
            if stop.requested:
                saved = f"; checkpoint saved in {checkpoint_dir}, a restarted job resumes from it"
                raise TrainingStopped(
                    f"stopped by {stop.signal_name or 'a stop request'} at step {global_step} of "
                    f"{hp.max_train_steps}{saved if checkpoint_dir is not None else ''}"
                )

    train_seconds = time.perf_counter() - train_start
    if global_step > start_step:
        summary = format_summary_line(
            total_steps=global_step, train_seconds=train_seconds, final_loss=final_loss
        )
        print(summary, flush=True)
    else:
        log.info("the checkpoint is already at step %d: nothing left to train", global_step)
    unet = accelerator.unwrap_model(unet)
    text_encoder = accelerator.unwrap_model(text_encoder)
    if ema is not None:
        ema.copy_to(unet.parameters())
    return LoopResult(
        unet=unet,
        text_encoder=text_encoder,
        global_step=global_step,
        resumed_from=start_step,
        final_loss=final_loss,
        train_seconds=train_seconds,
        step_end_times=step_end_times,
        frozen_fp32=frozen_fp32,
    )
