"""The whole-job benchmark's measuring: the same optimizer hook times both processes' first step, and the
torchvision stand-in does what train_dreambooth.py asks of torchvision's transforms."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from dreambooth_trainer import job_benchmark

REPO = Path(__file__).resolve().parents[2]

# A stand-in for train_dreambooth.py: parses nothing, waits, takes one optimizer step, waits again.
FAKE_REFERENCE = """
import time, torch
time.sleep(0.5)
weight = torch.nn.Parameter(torch.ones(2))
weight.grad = torch.ones(2)
torch.optim.SGD([weight], lr=0.1).step()
time.sleep(1.5)
"""


def test_first_step_and_whole_job_of_both_runs(tmp_path: Path, monkeypatch) -> None:
    script = tmp_path / "train_dreambooth.py"
    script.write_text(FAKE_REFERENCE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "trainer_image"), str(REPO)]))
    out = tmp_path / "summary.json"
    argv = ["--reference-script", str(script), "--rounds", "1", "--steps", "2", "--resolution", "32"]
    assert job_benchmark.main([*argv, "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    reference, ours = summary["reference"], summary["ours"]
    # the fake's first step ends after its 0.5 s wait, and its job 1.5 s later
    assert 0.5 < reference["first_step_s"] < reference["job_s"] - 1.4
    assert 0 < ours["first_step_s"] < ours["job_s"]
    assert summary["job_s_ratio_ours_over_reference"] == ours["job_s"] / reference["job_s"]


def test_torchvision_stand_in_matches_the_transforms_the_reference_uses(tmp_path: Path) -> None:
    job_benchmark._write_stand_in(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        from torchvision import transforms  # the stand-in

        pipeline = transforms.Compose(
            [
                transforms.Resize(8, interpolation=transforms.InterpolationMode.BILINEAR),
                transforms.CenterCrop(8),
                transforms.ToTensor(),
                transforms.Normalize([0.5], [0.5]),
            ]
        )
        pixels = np.zeros((10, 20, 3), dtype=np.uint8)
        pixels[:, 10:] = 255  # left half black, right half white
        tensor = pipeline(Image.fromarray(pixels))
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
    assert tuple(tensor.shape) == (3, 8, 8)  # shorter side to 8 (8x16), then the centre 8x8
    assert tensor.min().item() == -1.0 and tensor.max().item() == 1.0
    assert tensor[:, :, 0].max().item() == -1.0 and tensor[:, :, -1].min().item() == 1.0
