"""The shared flow-matching math, checked against values computed by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dreambooth_trainer.families.base import (
    NoisedBatch,
    PromptEmbeddings,
    flow_matching_loss,
    flow_matching_pair,
    sample_flow_timesteps,
)


def test_flow_matching_pair_by_hand() -> None:
    latents = torch.tensor([[[[1.0, -2.0]]], [[[0.5, 4.0]]]])  # (2, 1, 1, 2)
    noise = torch.tensor([[[[3.0, 1.0]]], [[[-1.0, 0.0]]]])
    sigmas = torch.tensor([0.25, 0.5])
    noisy, target = flow_matching_pair(latents, noise, sigmas)
    # sample 0: 0.75 * [1, -2] + 0.25 * [3, 1] = [1.5, -1.25]; sample 1: 0.5 * [0.5, 4] + 0.5 * [-1, 0]
    assert torch.equal(noisy, torch.tensor([[[[1.5, -1.25]]], [[[-0.25, 2.0]]]]))
    assert torch.equal(target, torch.tensor([[[[2.0, 3.0]]], [[[-1.5, -4.0]]]]))


def test_flow_matching_loss_weights_samples_and_splits_the_prior_half() -> None:
    target = torch.zeros(2, 1, 1, 2)
    prediction = torch.tensor([[[[1.0, 3.0]]], [[[2.0, 2.0]]]])  # squared errors: [1, 9] and [4, 4]
    batch = NoisedBatch(
        noisy=target, timesteps=torch.zeros(2), target=target, weighting=torch.tensor([2.0, 0.5])
    )
    total, instance, prior = flow_matching_loss(prediction, batch, prior=False, prior_loss_weight=1.0)
    assert total.item() == instance.item() == (2.0 * 5.0 + 0.5 * 4.0) / 2  # 6.0
    assert prior.item() == 0.0
    total, instance, prior = flow_matching_loss(prediction, batch, prior=True, prior_loss_weight=0.25)
    assert (instance.item(), prior.item()) == (10.0, 2.0)
    assert total.item() == 10.0 + 0.25 * 2.0


def test_timesteps_come_from_the_schedulers_table_at_u_times_n() -> None:
    sigmas = torch.linspace(1.0, 0.001, 1000)
    scheduler = SimpleNamespace(
        config=SimpleNamespace(num_train_timesteps=1000), sigmas=sigmas, timesteps=sigmas * 1000
    )
    timesteps, drawn = sample_flow_timesteps(
        scheduler,
        3,
        torch.Generator().manual_seed(7),
        weighting_scheme="logit_normal",
        logit_mean=0.5,
        logit_std=2.0,
    )
    u = torch.sigmoid(torch.normal(0.5, 2.0, size=(3,), generator=torch.Generator().manual_seed(7)))
    indices = (u * 1000).long()
    assert torch.equal(drawn, sigmas[indices])
    assert torch.equal(timesteps, sigmas[indices] * 1000)


def test_prompt_rows_pick_tensors_and_lists_and_keep_shared_values() -> None:
    embeddings = PromptEmbeddings(
        {"a": torch.tensor([[0.0], [1.0], [2.0]]), "b": [torch.zeros(1), torch.ones(2), torch.ones(3)]},
        {"ids": torch.arange(4)},
    )
    rows = embeddings.rows([2, 0])
    assert torch.equal(rows["a"], torch.tensor([[2.0], [0.0]]))
    assert [len(t) for t in rows["b"]] == [3, 1]
    assert torch.equal(rows["ids"], torch.arange(4))


def test_a_single_file_without_configs_is_refused_with_what_to_set(tmp_path) -> None:
    from diffusers import FluxPipeline, FluxTransformer2DModel

    from dreambooth_trainer.errors import BaseModelError
    from dreambooth_trainer.families.base import load_pipeline
    from dreambooth_trainer.model_loading import BaseModelSource

    source = BaseModelSource("single_file", str(tmp_path / "flux.safetensors"))
    with pytest.raises(BaseModelError, match="set base_model_config to a diffusers folder or Hub id"):
        load_pipeline(FluxPipeline, source, FluxTransformer2DModel)
