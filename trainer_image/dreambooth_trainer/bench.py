"""GPU benchmark: SD 1.5 per preset and naive, and each family's LoRA, random weights, the real loop.

One command, no downloads: `python -m dreambooth_trainer.bench` (or `make gpu-bench`). It builds an SD 1.5
model from its configs (offline_fixtures.sd15_configs) into a temporary folder, then runs each preset in a
fresh process through `dreambooth_trainer.loop.train` at 512 px with prior preservation (one instance + one
class image per step):

- full-t4: full UNet fine-tune, text encoder frozen, settings the VRAM presets pick for a 16 GB T4;
- full-24gb: the same for a 24 GB card (A10G, L4, RTX 4090);
- lora: UNet LoRA with the T4 preset;

and each once more with every optimization off (the naive baseline: fp32, no gradient checkpointing, fp32
AdamW, latents VAE-encoded every step). It prints one JSON table: steps/s (1 / median step time after
warm-up), peak allocated and reserved GPU memory (torch.cuda.max_memory_*), time to first step (from the
call of train() to the end of step 1: moving the model, caching latents and prompts, the first step), and
the seconds and bytes of the one checkpoint saved mid-run. Without CUDA it runs the tiny test model at 64 px
so CI proves the whole path; those figures say nothing about a GPU.

Then each model family (`--families`, default all: SDXL at 1024 px, FLUX.1-dev at 512 px with NF4,
Z-Image at 1024 px) as a LoRA job at its real architecture with random weights (family_bench.py), also in
fresh processes. `--spot-price-per-hour` adds the cost of a 1,000-step job to each measured row.

A run that does not fit (out of memory) is a row with an error, not a crash. Without bitsandbytes (or when it
cannot run on this GPU) 8-bit Adam is off and the JSON says so.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .family_bench import FAMILIES, TEXT_ENCODER_NOTE, add_costs

# preset -> (training method, VRAM the presets are applied for, in GiB as torch reports a card)
PRESETS: dict[str, tuple[str, float]] = {
    "full-t4": ("full", 14.6),  # a 16 GB T4 reports 14.6 GiB
    "full-24gb": ("full", 22.0),  # a 24 GB A10G/L4 reports ~22 GiB
    "lora": ("lora", 14.6),
}
VARIANTS = ("optimized", "naive")
# Every memory/speed optimization off. Attention stays PyTorch SDPA (diffusers' default) in both.
NAIVE = {
    "mixed_precision": "no",
    "gradient_checkpointing": False,
    "use_8bit_adam": False,
    "not_cache_latents": True,
    "attention": "sdpa",
    "auto_vram_presets": False,
}
SETTINGS_SHOWN = (
    "training_method",
    "mixed_precision",
    "gradient_checkpointing",
    "use_8bit_adam",
    "not_cache_latents",
    "attention",
    "train_text_encoder",
    "use_ema",
)


def bitsandbytes_usable() -> str | None:
    """None when 8-bit AdamW runs here; otherwise why not."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    try:
        import bitsandbytes as bnb
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        weight = torch.nn.Parameter(torch.ones(4096, device=device))
        optimizer = bnb.optim.AdamW8bit([weight], lr=1e-3)
        weight.grad = torch.ones_like(weight)
        optimizer.step()
    except Exception as exc:  # any failure means: measure without it, and say so
        return f"bitsandbytes cannot run here: {type(exc).__name__}: {exc}"
    return None


def run_settings(preset: str, variant: str, steps: int, resolution: int, bnb_problem: str | None) -> Any:
    """The hyperparameters of one run: the preset's as the real job would derive them, or the naive ones."""
    from .hyperparameters import TrainingHyperparameters
    from .vram_presets import apply_vram_presets

    method, vram_gb = PRESETS[preset]
    hp = TrainingHyperparameters(
        instance_prompt="a photo of sks dog",
        class_prompt="a photo of a dog",
        with_prior_preservation=True,
        training_method=method,
        train_text_encoder=False,
        use_ema=False,
        resolution=resolution,
        max_train_steps=steps,
        save_steps=max(1, steps // 2),  # one checkpoint mid-run, timed
        logging_steps=10**6,
        mixed_precision="fp16",
        seed=0,
    )
    if variant == "naive":
        return hp.model_copy(update=NAIVE)
    hp, _ = apply_vram_presets(hp, vram_gb)
    if hp.use_8bit_adam and bnb_problem:
        hp = hp.model_copy(update={"use_8bit_adam": False})
    return hp


@contextlib.contextmanager
def timed_checkpoints(record: list[dict[str, float]]):
    """Record every checkpoint the loop saves (CheckpointStore measures its own bytes and seconds)."""
    import torch

    from .checkpointing import CheckpointStore

    original = CheckpointStore.save

    def timed(store: CheckpointStore, step: int) -> Any:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the save's clock starts when the GPU work before it is done
        saved = original(store, step)
        record.append({"seconds": store.last_save_seconds, "bytes": store.last_save_bytes})
        return saved

    CheckpointStore.save = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        CheckpointStore.save = original  # type: ignore[method-assign]


def run_child(
    preset: str, variant: str, model_dir: Path, images_dir: Path, steps: int, resolution: int
) -> dict[str, Any]:
    """One run in this (fresh) process: load, train with a mid-run checkpoint, report the figures."""
    import torch

    from .data import load_images
    from .loop import train
    from .model_loading import BaseModelSource, load_model_parts

    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    bnb_problem = bitsandbytes_usable()
    row_extra = {**device(), "bitsandbytes_problem": bnb_problem}
    hp = run_settings(preset, variant, steps, resolution, bnb_problem)
    row: dict[str, Any] = {
        "preset": preset,
        "variant": variant,
        "settings": {key: getattr(hp, key) for key in SETTINGS_SHOWN},
        **row_extra,
    }
    load_start = time.perf_counter()
    parts = load_model_parts(BaseModelSource("folder", str(model_dir)))
    instance, _ = load_images([images_dir / "instance"], resolution, True, hp.seed)
    class_images, _ = load_images([images_dir / "class"], resolution, True, hp.seed + 1)
    row["load_seconds"] = round(time.perf_counter() - load_start, 3)
    return measure(row, lambda ckpt: train(parts, instance, class_images, hp, checkpoint_dir=ckpt))


def run_family(family: str, model_dir: Path, images_dir: Path, steps: int, resolution: int) -> dict[str, Any]:
    """One family's LoRA run in this (fresh) process (family_bench): load as a job does, train, report."""
    import torch

    from .family_bench import run_family_child

    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    bnb_problem = bitsandbytes_usable()
    load_start = time.perf_counter()
    settings, train_it = run_family_child(family, model_dir, images_dir, steps, resolution, bnb_problem)
    row = {**settings, **device(), "bitsandbytes_problem": bnb_problem, "resolution": resolution}
    row["load_seconds"] = round(time.perf_counter() - load_start, 3)
    return measure(row, train_it)


def measure(row: dict[str, Any], run: Any) -> dict[str, Any]:
    """Train (run(checkpoint_dir) -> the loop's result) and add the figures to the row: steps/s, peak
    memory, time to first step, the checkpoint saved mid-run (if any)."""
    import torch

    cuda = torch.cuda.is_available()
    checkpoints: list[dict[str, float]] = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        # stdout carries only the JSON row: the loop's metrics lines go to stderr
        with (
            tempfile.TemporaryDirectory(prefix="bench-ckpt-") as ckpt,
            timed_checkpoints(checkpoints),
            contextlib.redirect_stdout(sys.stderr),
        ):
            result = run(Path(ckpt))
    except torch.cuda.OutOfMemoryError as exc:  # a result, not a crash: this setting does not fit
        row["error"] = f"out of memory: {str(exc).splitlines()[0]}"
        row["out_of_memory"] = True
        return row
    times = result.step_end_times
    intervals = [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
    measured = intervals[1:] or intervals  # the first interval still warms up kernels and caches
    row["steps"] = len(times)
    row["steps_per_second"] = round(1 / statistics.median(measured), 4) if measured else None
    row["time_to_first_step_s"] = round(times[0] - start, 3)
    if cuda:
        row["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    else:
        row["peak_allocated_gib"] = row["peak_reserved_gib"] = None
    row["checkpoint_save_s"] = round(checkpoints[0]["seconds"], 3) if checkpoints else None
    row["checkpoint_bytes"] = int(checkpoints[0]["bytes"]) if checkpoints else None
    row["error"] = None
    del result
    gc.collect()
    return row


def prepare(folder: Path, architecture: str, resolution: int) -> tuple[Path, Path]:
    """The random-weight base model and synthetic instance/class photos, written once for all runs."""
    from .offline_fixtures import ARCHITECTURES, build_base_model, write_sample_subject_images

    model_dir = build_base_model(folder / f"{architecture}-random", ARCHITECTURES[architecture]())
    images = folder / "images"
    write_sample_subject_images(images / "instance", 5, size=resolution, seed=0)
    write_sample_subject_images(images / "class", 10, size=resolution, seed=1)
    return model_dir, images


def child_row(command: list[str], identity: dict[str, Any]) -> dict[str, Any]:
    """Run one benchmark child; its last stdout line is its row, or the row is the error."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 0 and done.stdout.strip():
        return json.loads(done.stdout.strip().splitlines()[-1])
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    return {**identity, "error": f"exit {done.returncode}: {tail[0]}"}


def bench_family(family: str, tmp: Path, steps: int, cuda: bool) -> dict[str, Any]:
    """Build the family's model (real architecture on CUDA, tiny without), run its child, free the disk."""
    import shutil

    from .family_bench import FAMILY_RUNS
    from .family_fixtures import build_tiny_family_model
    from .offline_fixtures import write_sample_subject_images

    resolution = FAMILY_RUNS[family].resolution if cuda else 64
    folder = tmp / f"family-{family}"
    started = time.perf_counter()
    identity = {"family": family, "preset": f"{family}-lora", "variant": "optimized"}
    if cuda:  # built in a child: the parent never holds a CUDA context
        model_dir = folder / "model"
        command = [sys.executable, "-m", "dreambooth_trainer.bench", "--build-family", family]
        done = subprocess.run([*command, "--model-dir", str(model_dir)], capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            shutil.rmtree(folder, ignore_errors=True)
            return {**identity, "error": f"building the model failed: exit {done.returncode}: {tail[0]}"}
    else:
        model_dir = build_tiny_family_model(family, folder)
    build_seconds = round(time.perf_counter() - started, 1)
    images = folder / "images"
    write_sample_subject_images(images / "instance", 5, size=resolution, seed=0)
    command = [sys.executable, "-m", "dreambooth_trainer.bench", "--family-child", family]
    command += ["--model-dir", str(model_dir), "--images-dir", str(images)]
    command += ["--steps", str(steps), "--resolution", str(resolution)]
    row = child_row(command, identity)
    row["architecture"] = "real" if cuda else "tiny"
    row["build_seconds"] = build_seconds
    shutil.rmtree(folder, ignore_errors=True)
    return row


def device() -> dict[str, Any]:
    """The GPU (asked in the children: in the parent it would hold a CUDA context for the whole run)."""
    import torch

    if not torch.cuda.is_available():
        return {"device": f"CPU ({os.cpu_count()} cores), no GPU", "gpu_memory_gib": None}
    total = torch.cuda.get_device_properties(0).total_memory
    return {"device": torch.cuda.get_device_name(0), "gpu_memory_gib": round(total / 2**30, 1)}


def environment(architecture: str) -> dict[str, Any]:
    """Versions, read from package metadata (importing bitsandbytes would initialize CUDA here)."""
    import torch

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "model": f"{architecture} architecture, random weights",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "diffusers": version("diffusers"),
        "transformers": version("transformers"),
        "bitsandbytes": version("bitsandbytes"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20 if cuda else 4, help="steps per run")
    parser.add_argument("--resolution", type=int, default=512 if cuda else 64)
    parser.add_argument(
        "--architecture",
        choices=("sd15", "tiny"),
        default="sd15" if cuda else "tiny",
        help="base model shape",
    )
    parser.add_argument("--presets", nargs="*", choices=tuple(PRESETS), default=list(PRESETS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--families",
        nargs="*",
        choices=FAMILIES,
        default=list(FAMILIES),
        help="LoRA runs at each family's real architecture and resolution (tiny at 64 px without CUDA)",
    )
    parser.add_argument(
        "--spot-price-per-hour",
        type=float,
        help="the instance's hourly spot price in USD: each row gets the cost of a 1,000-step job",
    )
    parser.add_argument("--family-child", choices=FAMILIES, help=argparse.SUPPRESS)
    parser.add_argument("--build-family", choices=FAMILIES, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the table here ($OUT/gpu-bench.json when set)")
    parser.add_argument("--child", nargs=2, metavar=("PRESET", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.build_family:
        from .family_bench import build_real_family_model

        build_real_family_model(args.build_family, args.model_dir, args.model_dir.parent / "scratch")
        return 0
    if args.family_child:
        row = run_family(args.family_child, args.model_dir, args.images_dir, args.steps, args.resolution)
        print(json.dumps(row))
        return 0
    if args.child:
        row = run_child(*args.child, args.model_dir, args.images_dir, args.steps, args.resolution)
        print(json.dumps(row))
        return 0

    table: dict[str, Any] = {**environment(args.architecture), "resolution": args.resolution}
    table["steps_per_run"] = args.steps
    table["what"] = (
        "steps/s: 1 / median step time after the first step; peak memory: torch.cuda.max_memory_allocated/"
        "reserved; time_to_first_step_s: from train() to the end of step 1; checkpoint: the one save mid-run"
    )
    table["notes"] = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="dreambooth-gpu-bench-") as tmp:
        if args.presets:
            started = time.perf_counter()
            model_dir, images_dir = prepare(Path(tmp), args.architecture, args.resolution)
            table["build_seconds"] = round(time.perf_counter() - started, 1)
            print(f"model built in {table['build_seconds']} s: {model_dir}", file=sys.stderr, flush=True)
        for preset in args.presets:
            for variant in args.variants:
                command = [sys.executable, "-m", "dreambooth_trainer.bench", "--child", preset, variant]
                command += ["--model-dir", str(model_dir), "--images-dir", str(images_dir)]
                command += ["--steps", str(args.steps), "--resolution", str(args.resolution)]
                rows.append(child_row(command, {"preset": preset, "variant": variant}))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        for family in args.families:
            rows.append(bench_family(family, Path(tmp), args.steps, cuda))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.families:
        table["notes"].append(TEXT_ENCODER_NOTE)
    add_costs(rows, args.spot_price_per_hour)
    if args.spot_price_per_hour is not None:
        table["spot_price_per_hour_usd"] = args.spot_price_per_hour
        table["cost"] = "cost_1000_steps_usd = 1000 / steps_per_second / 3600 x spot_price_per_hour_usd"
    for preset in args.presets:
        pair = {row["variant"]: row for row in rows if row.get("preset") == preset}
        fast, naive = pair.get("optimized", {}), pair.get("naive", {})
        if fast.get("steps_per_second") and naive.get("steps_per_second"):
            fast["speedup_vs_naive"] = round(fast["steps_per_second"] / naive["steps_per_second"], 3)
    for key in ("device", "gpu_memory_gib"):  # the children saw the device; the parent never touches it
        table[key] = next((row[key] for row in rows if key in row), None)
    problems = {row.get("bitsandbytes_problem") for row in rows} - {None}
    table["notes"] += [f"{problem}: 8-bit Adam off in every preset" for problem in sorted(problems)]
    table["rows"] = rows
    text = json.dumps(table, indent=2)
    print(text)
    target = args.json or (Path(os.environ["OUT"]) / "gpu-bench.json" if os.environ.get("OUT") else None)
    if target:
        target.write_text(text + "\n")
    crashed = [row for row in rows if row.get("error") and not row.get("out_of_memory")]
    return 1 if crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
