"""The loop's math against values computed by hand: the training target (epsilon, v-prediction), the
DreamBooth loss with prior preservation and its weight, fp16-overflow steps, precision and attention choices,
and the EMA weights that the exported model must carry."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file

from dreambooth_trainer import loop
from dreambooth_trainer.errors import BaseModelError
from dreambooth_trainer.families.base import dreambooth_loss
from dreambooth_trainer.families.sd import check_prediction_type, training_target
from dreambooth_trainer.loop import configure_attention, effective_mixed_precision, optimizer_step
from dreambooth_trainer.offline_fixtures import build_tiny_base_model

# One latent "pixel" per sample: instance image first, class image second (the loop's batch layout).
LATENTS = [3.0, -1.0]
NOISE = [1.0, 2.0]
PRED = [0.5, -1.0]
TIMESTEPS = [10, 500]


def _t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1, 1)


def _scheduler(prediction_type: str) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
    )


def _alpha_bar(t: int) -> float:
    """SD's scaled_linear schedule written out: betas evenly spaced in sqrt space, alpha_bar their product."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return float(np.prod(1.0 - betas[: t + 1]))


def _loss(prediction_type: str, *, with_prior: bool, weight: float = 1.0) -> float:
    noise, latents, timesteps = _t(NOISE), _t(LATENTS), torch.tensor(TIMESTEPS)
    target = training_target(_scheduler(prediction_type), prediction_type, latents, noise, timesteps)
    loss, _, _ = dreambooth_loss(_t(PRED), target, with_prior=with_prior, prior_loss_weight=weight)
    return loss.item()


def _hand_target(prediction_type: str, i: int) -> float:
    if prediction_type == "epsilon":
        return NOISE[i]
    a = _alpha_bar(TIMESTEPS[i])  # v = sqrt(a) * noise - sqrt(1 - a) * x0
    return a**0.5 * NOISE[i] - (1 - a) ** 0.5 * LATENTS[i]


def test_epsilon_loss_by_hand() -> None:
    # mean((0.5 - 1)^2, (-1 - 2)^2) = (0.25 + 9) / 2
    assert _loss("epsilon", with_prior=False) == pytest.approx(4.625)


def test_v_prediction_loss_by_hand() -> None:
    # t=10: alpha_bar = 0.990431, v = 0.995204 * 1 - 0.097820 * 3 = 0.701745
    # t=500: alpha_bar = 0.276333, v = 0.525674 * 2 - 0.850686 * (-1) = 1.902033
    v = [_hand_target("v_prediction", i) for i in range(2)]
    assert v == pytest.approx([0.701745, 1.902033], abs=1e-5)
    expected = ((PRED[0] - v[0]) ** 2 + (PRED[1] - v[1]) ** 2) / 2
    assert _loss("v_prediction", with_prior=False) == pytest.approx(expected, rel=1e-5)
    assert abs(expected - 4.625) > 0.3  # differs from the epsilon loss: the target matters


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("weight", [1.0, 0.5, 2.0])
def test_prior_preservation_loss_by_hand(prediction_type: str, weight: float) -> None:
    instance = (PRED[0] - _hand_target(prediction_type, 0)) ** 2
    prior = (PRED[1] - _hand_target(prediction_type, 1)) ** 2
    assert _loss(prediction_type, with_prior=True, weight=weight) == pytest.approx(
        instance + weight * prior, rel=1e-5
    )


def test_the_loss_parts_are_reported_separately() -> None:
    loss, instance, prior = dreambooth_loss(_t(PRED), _t(NOISE), with_prior=True, prior_loss_weight=0.5)
    assert (instance.item(), prior.item()) == pytest.approx((0.25, 9.0))
    assert loss.item() == pytest.approx(0.25 + 0.5 * 9.0)


@pytest.mark.parametrize("prediction_type", ["sample", "flow", ""])
def test_an_unknown_prediction_type_is_an_error(prediction_type: str) -> None:
    with pytest.raises(BaseModelError, match=f"prediction_type '{prediction_type}'.*epsilon or v_prediction"):
        check_prediction_type(prediction_type)
    with pytest.raises(BaseModelError):
        training_target(
            _scheduler("epsilon"), prediction_type, _t(LATENTS), _t(NOISE), torch.tensor(TIMESTEPS)
        )


def test_a_base_model_with_an_unknown_prediction_type_fails_before_training(
    new_job, tmp_path_factory
) -> None:
    model = build_tiny_base_model(tmp_path_factory.mktemp("sample") / "tiny", prediction_type="sample")
    job = new_job({}, model=False)
    job.add_channel("model", model)
    assert job.run() == 2
    assert "prediction_type 'sample'" in job.failure and "epsilon or v_prediction" in job.failure


# --- steps, precision, attention ----------------------------------------------------------------------------


def test_an_fp16_overflow_step_advances_neither_the_schedule_nor_the_ema() -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)  # what fp16 on a GPU brings
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    ema = EMAModel(model.parameters(), decay=0.5, min_decay=0.5)
    weights = model.weight.detach().clone()

    accelerator.backward(model(torch.ones(1, 2)).sum() * float("inf"))
    assert optimizer_step(accelerator, optimizer, schedule, ema, model) is False
    assert torch.equal(model.weight, weights)
    assert schedule.get_last_lr() == [0.1] and ema.optimization_step == 0

    accelerator.backward(model(torch.ones(1, 2)).sum())
    assert optimizer_step(accelerator, optimizer, schedule, ema, model) is True
    assert schedule.get_last_lr() == [0.05] and ema.optimization_step == 1


def test_bf16_needs_native_support(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.13 counts emulation: a T4 says bf16 is supported and then runs it slowly."""

    def t4_answer(including_emulation: bool = True) -> bool:
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", t4_answer)
    assert effective_mixed_precision("bf16", cuda=True) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert effective_mixed_precision("bf16", cuda=True) == "bf16"
    assert effective_mixed_precision("bf16", cuda=False) == "no"


def test_xformers_that_fails_to_switch_on_falls_back_to_sdpa(monkeypatch, caplog) -> None:
    class UNet(torch.nn.Module):
        processor = None

        def enable_xformers_memory_efficient_attention(self) -> None:
            raise RuntimeError("No operator found for memory_efficient_attention_forward")

        def set_attn_processor(self, processor) -> None:
            self.processor = processor

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(loop.importlib.util, "find_spec", lambda name: object())
    unet = UNet()
    with caplog.at_level(logging.WARNING):
        assert configure_attention(unet, "xformers") == "sdpa"
    assert type(unet.processor).__name__ == "AttnProcessor2_0"
    assert "xformers failed to switch on (No operator found" in caplog.text
    assert configure_attention(UNet(), "sdpa") == "sdpa"


# --- EMA: the exported model carries the averaged weights ---------------------------------------------------


def test_the_exported_unet_holds_the_ema_weights_not_the_raw_ones(new_job) -> None:
    steps = 4
    job = new_job(
        {
            "use_ema": "true",
            "max_train_steps": str(steps),
            "save_steps": str(steps),  # the checkpoint after the last step holds raw and EMA weights
            "output_dtype": "fp32",
            "num_samples": "0",
            "export_single_file": "false",
        }
    )
    assert job.run() == 0
    checkpoint = job.checkpoints_dir / f"step-{steps:08d}"
    assert json.loads((checkpoint / "checkpoint.json").read_text())["step"] == steps
    raw = load_file(checkpoint / "trainable.safetensors")
    shadow = torch.load(checkpoint / "ema.pt", weights_only=False)["shadow_params"]
    unet = UNet2DConditionModel.from_pretrained(job.model_dir / "unet")
    names = [name for name, _ in unet.named_parameters()]  # the order in which EMA holds them
    assert len(names) == len(shadow)
    ema = dict(zip(names, shadow, strict=True))
    exported = load_file(job.model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert set(exported) == set(ema)
    assert max((exported[k] - ema[k]).abs().max().item() for k in ema) == 0
    assert max((exported[k] - raw[f"unet.{k}"]).abs().max().item() for k in ema) > 1e-4
