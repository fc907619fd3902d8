"""Whole job and time to first step: our `train` against diffusers' examples/dreambooth/train_dreambooth.py.

Side by side on the tiny model, one thread, interleaved.

Each run is a fresh process started by this one. Time to first step: from starting the process to the end of
the first optimizer step (a global optimizer post-step hook, the same for both, so nothing in either script is
changed); whole job: from starting the process to its exit. Each also as CPU seconds (the process's user +
system time), which waiting for a core on a shared machine does not inflate. Both train the full UNet for the
same steps at the same resolution, learning rate, seed and scheduler, in fp32 on the CPU; ours with
num_samples=0 and export_single_file=false unless --defaults, so both write just the diffusers folder.

The reference script is not part of this project: pass its path (a diffusers checkout's
examples/dreambooth/train_dreambooth.py). It imports torchvision only for four image transforms, and the
registry's torchvision does not load against this torch: a stand-in with those transforms (PIL + numpy)
is put on the reference's path.

Usage: python -m dreambooth_trainer.job_benchmark --reference-script PATH [--rounds 3] [--steps 20] [--prior]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FIGURES = ("first_step_s", "job_s", "first_step_cpu_s", "job_cpu_s")
# Runs in each child: the first optimizer step's end time goes to $BENCH_FIRST_STEP, then the job runs.
RUNNER = """
import os, sys, time, runpy
import torch.optim.optimizer as optimizer
marker = os.environ["BENCH_FIRST_STEP"]
def first_step(opt, args, kwargs):
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(repr([time.time(), time.process_time()]))
optimizer.register_optimizer_step_post_hook(first_step)
if sys.argv[1] == "ours":
    from dreambooth_trainer.entrypoint import main
    sys.exit(main(["train"]))
# Settle transformers' and diffusers' "is torchvision installed" (no) before the stand-in is on the path.
from transformers.utils import import_utils
import_utils.is_torchvision_available(), import_utils.is_torchvision_v2_available()
import diffusers.utils.import_utils
sys.path.insert(0, os.environ["BENCH_STAND_IN"])
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# The four torchvision transforms train_dreambooth.py uses, for the reference run only.
TORCHVISION_STAND_IN = """
import enum
import numpy as np
import torch
from PIL import Image

class InterpolationMode(enum.Enum):
    BILINEAR = "bilinear"

class Compose:
    def __init__(self, transforms):
        self.transforms = transforms
    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

class Resize:
    def __init__(self, size, interpolation=InterpolationMode.BILINEAR):
        self.size = size
    def __call__(self, image):
        w, h = image.size
        scale = self.size / min(w, h)
        size = (max(self.size, round(w * scale)), max(self.size, round(h * scale)))
        return image.resize(size, Image.BILINEAR)

class CenterCrop:
    def __init__(self, size):
        self.size = size
    def __call__(self, image):
        w, h = image.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))

class RandomCrop(CenterCrop):
    def __call__(self, image):
        w, h = image.size
        left, top = np.random.randint(0, w - self.size + 1), np.random.randint(0, h - self.size + 1)
        return image.crop((left, top, left + self.size, top + self.size))

class ToTensor:
    def __call__(self, image):
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()

class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean[0], std[0]
    def __call__(self, x):
        return (x - self.mean) / self.std
"""


def _write_stand_in(folder: Path) -> Path:
    package = folder / "torchvision"
    (package / "transforms").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "transforms" / "__init__.py").write_text(TORCHVISION_STAND_IN)
    return folder


def _our_job(base: Path, model: Path, images: Path, classes: Path | None, args: argparse.Namespace) -> None:
    (base / "input" / "config").mkdir(parents=True)
    data = base / "input" / "data"
    data.mkdir()
    (data / "model").symlink_to(model)
    (data / "images").symlink_to(images)
    hp = {
        "instance_prompt": "a photo of sks dog",
        "resolution": str(args.resolution),
        "max_train_steps": str(args.steps),
        "learning_rate": "1e-4",
        "lr_scheduler": "constant",
        "center_crop": "true",
        "num_threads": "1",
        "mixed_precision": "no",
        "save_steps": "0",
        "logging_steps": str(args.steps),
        "seed": "0",
    }
    if not args.defaults:
        hp |= {"num_samples": "0", "export_single_file": "false"}
    if classes is not None:
        (data / "class_images").symlink_to(classes)
        hp |= {
            "with_prior_preservation": "true",
            "class_prompt": "a photo of a dog",
            "num_class_images": str(args.class_images),
        }
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hp))


def _reference_args(
    model: Path, images: Path, classes: Path | None, out: Path, args: argparse.Namespace
) -> list:
    command = [
        f"--pretrained_model_name_or_path={model}",
        f"--instance_data_dir={images}",
        "--instance_prompt=a photo of sks dog",
        f"--resolution={args.resolution}",
        "--train_batch_size=1",
        f"--max_train_steps={args.steps}",
        "--learning_rate=1e-4",
        "--lr_scheduler=constant",
        "--lr_warmup_steps=0",
        "--center_crop",
        "--mixed_precision=no",
        "--seed=0",
        f"--output_dir={out}",
        f"--checkpointing_steps={args.steps * 10}",
    ]
    if classes is not None:
        command += [
            "--with_prior_preservation",
            f"--class_data_dir={classes}",
            "--class_prompt=a photo of a dog",
            f"--num_class_images={args.class_images}",
        ]
    return command


def _run(variant: str, tmp: Path, fixtures: dict[str, Any], args: argparse.Namespace, index: int) -> dict:
    work = tmp / f"{variant}-{index}"
    work.mkdir()
    marker = work / "first-step"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENCH_FIRST_STEP": str(marker), "HF_HUB_OFFLINE": "1"}
    model, images, classes = fixtures["model"], fixtures["images"], fixtures["classes"]
    if variant == "ours":
        _our_job(work, model, images, classes, args)
        env |= {"SAGEMAKER_BASE_DIR": str(work), "TRAINING_JOB_NAME": "bench"}
        command = [sys.executable, "-c", RUNNER, "ours"]
    else:
        env["BENCH_STAND_IN"] = str(fixtures["stand_in"])
        command = [sys.executable, "-c", RUNNER, str(args.reference_script)]
        command += _reference_args(model, images, classes, work / "out", args)
    cpu_before = _children_cpu()
    start = time.time()
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
    end = time.time()
    if done.returncode != 0 or not marker.exists():
        raise RuntimeError(f"{variant} failed (exit {done.returncode}): {done.stderr[-3000:]}")
    first_step_at, first_step_cpu = json.loads(marker.read_text())
    return {
        "first_step_s": first_step_at - start,
        "job_s": end - start,
        "first_step_cpu_s": first_step_cpu,
        "job_cpu_s": _children_cpu() - cpu_before,
    }


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes: steadier than wall time on a shared
    machine, where waiting for a core inflates wall time but not CPU time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-script", type=Path, required=True, help="diffusers' train_dreambooth.py")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--prior", action="store_true", help="with prior preservation (class images given)")
    parser.add_argument("--class-images", type=int, default=10)
    parser.add_argument("--defaults", action="store_true", help="ours with default samples and single file")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from .offline_fixtures import build_tiny_base_model, write_sample_subject_images

    results: dict[str, list[dict]] = {"ours": [], "reference": []}
    with tempfile.TemporaryDirectory(prefix="dreambooth-job-bench-") as name:
        tmp = Path(name)
        fixtures = {
            "model": build_tiny_base_model(tmp / "tiny-sd"),
            "images": tmp / "images",
            "classes": tmp / "classes" if args.prior else None,
            "stand_in": _write_stand_in(tmp / "stand-in"),
        }
        write_sample_subject_images(fixtures["images"], 5, size=args.resolution * 2, seed=0)
        if args.prior:
            write_sample_subject_images(
                fixtures["classes"], args.class_images, size=args.resolution * 2, seed=1
            )
        for index in range(args.rounds):
            for variant in ("ours", "reference") if index % 2 == 0 else ("reference", "ours"):
                figures = _run(variant, tmp, fixtures, args, index)
                results[variant].append(figures)
                print(f"round {index + 1} {variant:9s} first step {figures['first_step_s']:6.2f} s "
                      f"({figures['first_step_cpu_s']:5.2f} s CPU)  job {figures['job_s']:6.2f} s "
                      f"({figures['job_cpu_s']:5.2f} s CPU)", flush=True)  # fmt: skip
    summary: dict[str, Any] = {"steps": args.steps, "resolution": args.resolution, "prior": args.prior}
    summary["defaults"] = args.defaults
    for variant, runs in results.items():
        summary[variant] = {key: statistics.median(run[key] for run in runs) for key in FIGURES} | {
            "runs": runs
        }
    for key in FIGURES:
        summary[f"{key}_ratio_ours_over_reference"] = summary["ours"][key] / summary["reference"][key]
    print(json.dumps({k: v for k, v in summary.items() if k not in ("ours", "reference")}, indent=2))
    for variant in results:
        print(
            f"{variant}: {summary[variant]['first_step_s']:.2f} s to first step, "
            f"{summary[variant]['job_s']:.2f} s job"
        )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
