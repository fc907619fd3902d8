"""The GPU benchmark: SD 1.5's architecture from configs (sizes checked on the meta device, no RAM spent) and
the whole command on the tiny model on CPU, so the day a GPU is available one command produces the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dreambooth_trainer import bench
from dreambooth_trainer.family_bench import FAMILIES, FAMILY_RUNS, job_cost_usd
from dreambooth_trainer.offline_fixtures import build_modules, sd15_configs

REPO = Path(__file__).resolve().parents[2]


def _millions(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)


def test_sd15_configs_build_the_published_sizes() -> None:
    # CLIP's full vocabulary, as in SD 1.5's text encoder (the test tokenizer uses only its first ids)
    with torch.device("meta"):
        unet, vae, text_encoder = build_modules(sd15_configs(), vocab_size=49408)
    assert _millions(unet) == 859.5
    assert _millions(vae) == 83.7
    assert _millions(text_encoder) == 123.1
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size == 768


def test_presets_and_naive_baseline_differ_in_the_optimizations_only() -> None:
    t4 = bench.run_settings("full-t4", "optimized", 10, 512, bnb_problem=None)
    roomy = bench.run_settings("full-24gb", "optimized", 10, 512, bnb_problem=None)
    naive = bench.run_settings("full-t4", "naive", 10, 512, bnb_problem=None)
    lora = bench.run_settings("lora", "optimized", 10, 512, bnb_problem="bitsandbytes is not installed")
    for hp in (t4, roomy, naive, lora):
        assert hp.with_prior_preservation and hp.resolution == 512 and not hp.train_text_encoder
        assert hp.save_steps == 5  # one checkpoint mid-run
    assert t4.use_8bit_adam and t4.gradient_checkpointing and t4.mixed_precision == "fp16"
    assert not roomy.use_8bit_adam and not roomy.gradient_checkpointing
    assert naive.mixed_precision == "no" and naive.not_cache_latents and not naive.use_8bit_adam
    assert lora.training_method == "lora" and not lora.use_8bit_adam  # degraded without bitsandbytes


def test_bench_runs_every_preset_on_cpu_and_prints_one_json_table(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OUT": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(REPO / "trainer_image"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "dreambooth_trainer.bench", "--steps", "2", "--spot-price-per-hour", "0.3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads(done.stdout)  # stdout is the table and nothing else
    assert json.loads((tmp_path / "gpu-bench.json").read_text()) == table
    assert table["model"].startswith("tiny") and table["device"].startswith("CPU")
    rows = {(row["preset"], row["variant"]): row for row in table["rows"] if "family" not in row}
    assert set(rows) == {(p, v) for p in bench.PRESETS for v in bench.VARIANTS}
    families = {row["family"]: row for row in table["rows"] if "family" in row}
    assert set(families) == set(FAMILIES)  # each family's LoRA, on its tiny model without a GPU
    for family, row in families.items():
        assert row["error"] is None and row["architecture"] == "tiny" and row["resolution"] == 64
        assert row["steps"] == 2 and row["steps_per_second"] > 0 and row["time_to_first_step_s"] > 0
        assert row["peak_reserved_gib"] is None and row["base_quantization"] == "none"  # CPU: full weights
        assert row["instance_type"] == FAMILY_RUNS[family].instance
        assert row["cost_1000_steps_usd"] == round(job_cost_usd(row["steps_per_second"], 0.3), 4)
    assert table["spot_price_per_hour_usd"] == 0.3
    assert any("text encoders" in note for note in table["notes"])
    for row in rows.values():
        assert row["error"] is None
        assert row["steps"] == 2 and row["steps_per_second"] > 0
        assert 0 < row["time_to_first_step_s"] < 600
        assert row["checkpoint_save_s"] > 0 and row["checkpoint_bytes"] > 0
        assert row["peak_reserved_gib"] is None  # no GPU: no GPU memory figures invented
    # a full-UNet checkpoint holds the UNet and its optimizer state, a LoRA one only the adapter's
    assert (
        rows[("full-24gb", "optimized")]["checkpoint_bytes"]
        > 10 * rows[("lora", "optimized")]["checkpoint_bytes"]
    )
    assert rows[("full-t4", "optimized")]["settings"]["use_8bit_adam"] is True
    assert rows[("full-t4", "naive")]["settings"]["mixed_precision"] == "no"
    assert "speedup_vs_naive" in rows[("lora", "optimized")]


@pytest.mark.parametrize("broken", [True, False])
def test_timed_checkpoints_always_restore_the_stores_own_save(tmp_path: Path, broken: bool) -> None:
    from dreambooth_trainer.checkpointing import CheckpointStore

    original = CheckpointStore.save
    record: list[dict[str, float]] = []
    if broken:
        with pytest.raises(RuntimeError), bench.timed_checkpoints(record):
            raise RuntimeError("a run fails")
    else:
        with bench.timed_checkpoints(record):
            assert CheckpointStore.save is not original
    assert CheckpointStore.save is original
