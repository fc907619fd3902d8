"""Our loop vs a reference-style loop, side by side on the tiny model: steps/s after warm-up and peak RSS.

The reference does per step what diffusers' examples/dreambooth/train_dreambooth.py does with its defaults:
the dataset opens, resizes and crops the image file and tokenizes the prompt, the VAE encodes the pixels, the
text encoder encodes the prompt, and gradients are zeroed without set_to_none. Our loop (the one `train` runs)
caches latents and prompt embeddings once and zeroes with set_to_none=True. Both train the full UNet with
AdamW in fp32 on the same model, images and seed.

Each variant runs in its own fresh process (so peak RSS is its own), the rounds are interleaved, and the
median is reported. Usage: python -m dreambooth_trainer.benchmark [--rounds 3] [--steps 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("ours", "reference")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reference_loop(parts: Any, image_paths: list[Path], hp: Any, steps: int) -> list[float]:
    """train_dreambooth.py's per-step work, full UNet, no prior preservation, fp32 on CPU."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers.optimization import get_scheduler

    from .data import load_image

    unet, vae, text_encoder, tokenizer = parts.unet, parts.vae, parts.text_encoder, parts.tokenizer
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.train()
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=hp.learning_rate,
        betas=(hp.adam_beta1, hp.adam_beta2),
        weight_decay=hp.adam_weight_decay,
        eps=hp.adam_epsilon,
    )
    lr_scheduler = get_scheduler(hp.lr_scheduler, optimizer=optimizer, num_training_steps=steps)
    noise_scheduler = parts.noise_scheduler
    rng = np.random.default_rng(hp.seed)
    torch.manual_seed(hp.seed)
    times = []
    for step in range(steps):
        # DreamBoothDataset.__getitem__: open, resize, crop, normalise; tokenize the prompt.
        path = image_paths[step % len(image_paths)]
        pixels = load_image(path, hp.resolution, hp.center_crop, rng)
        pixel_values = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        input_ids = tokenizer(
            hp.instance_prompt,
            truncation=True,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        # The training step.
        latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],))
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
        encoder_hidden_states = text_encoder(input_ids, return_dict=False)[0]
        model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
        loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), hp.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=False)
        times.append(time.perf_counter())
    return times


def run_child(variant: str, model_dir: Path, images_dir: Path, steps: int, resolution: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from .data import load_images
    from .hyperparameters import TrainingHyperparameters
    from .loop import train
    from .model_loading import BaseModelSource, load_model_parts

    hp = TrainingHyperparameters(
        instance_prompt="a photo of sks dog",
        resolution=resolution,
        max_train_steps=steps,
        learning_rate=1e-4,
        center_crop=True,
        logging_steps=10**6,
        save_steps=0,
        num_threads=1,
        mixed_precision="no",
    )
    parts = load_model_parts(BaseModelSource("folder", str(model_dir)))
    start = time.perf_counter()
    if variant == "ours":
        images, _ = load_images([images_dir], hp.resolution, hp.center_crop, hp.seed)
        times = train(parts, images, [], hp).step_end_times
    else:
        times = _reference_loop(parts, sorted(images_dir.iterdir()), hp, steps)
    return {"variant": variant, "step_end_times": times, "start": start, "peak_rss_mb": _peak_rss_mb()}


def _steps_per_second(times: list[float], warmup: int) -> float:
    measured = times[warmup:]
    return (len(measured) - 1) / (measured[-1] - measured[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved runs per variant (median reported)"
    )
    parser.add_argument("--steps", type=int, default=60, help="steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=10, help="steps not timed")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(args.child, args.model_dir, args.images_dir, args.steps, args.resolution)))
        return 0

    from .offline_fixtures import build_tiny_base_model, write_sample_subject_images

    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="dreambooth-bench-") as tmp:
        model_dir = build_tiny_base_model(Path(tmp) / "tiny-sd")
        images_dir = Path(tmp) / "images"
        write_sample_subject_images(images_dir, args.images, size=args.resolution * 2, seed=0)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for round_index in range(args.rounds):
            for variant in VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]:
                command = [
                    sys.executable,
                    "-m",
                    "dreambooth_trainer.benchmark",
                    "--child",
                    variant,
                    "--model-dir",
                    str(model_dir),
                    "--images-dir",
                    str(images_dir),
                    "--steps",
                    str(args.steps),
                    "--resolution",
                    str(args.resolution),
                ]
                done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                child = json.loads(done.stdout.strip().splitlines()[-1])
                figures = {
                    "steps_per_second": _steps_per_second(child["step_end_times"], args.warmup),
                    "peak_rss_mb": child["peak_rss_mb"],
                }
                results[variant].append(figures)
                print(
                    f"round {round_index + 1} {variant:9s} {figures['steps_per_second']:7.2f} steps/s"
                    f"  peak RSS {figures['peak_rss_mb']:7.1f} MB",
                    flush=True,
                )

    summary: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPU(s), torch threads 1, no GPU",
        "python": platform.python_version(),
        "resolution": args.resolution,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
    }
    for variant, runs in results.items():
        summary[variant] = {
            "steps_per_second": statistics.median(r["steps_per_second"] for r in runs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
            "runs": runs,
        }
    ours, reference = summary["ours"], summary["reference"]
    summary["speedup"] = ours["steps_per_second"] / reference["steps_per_second"]
    summary["rss_ratio"] = ours["peak_rss_mb"] / reference["peak_rss_mb"]
    print(
        f"\nmedian of {args.rounds}: ours {ours['steps_per_second']:.2f} steps/s, "
        f"reference {reference['steps_per_second']:.2f} steps/s -> {summary['speedup']:.2f}x; "
        f"peak RSS ours {ours['peak_rss_mb']:.0f} MB vs reference {reference['peak_rss_mb']:.0f} MB "
        f"({summary['rss_ratio']:.2f}x)"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
