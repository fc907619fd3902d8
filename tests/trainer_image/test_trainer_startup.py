"""The job pauses the cyclic garbage collector until the base model is loaded, then trains with it on."""

import gc

import pytest
import torch
import torch.optim.optimizer as optimizer

from dreambooth_trainer.families import get_family
from dreambooth_trainer.families.sd import StableDiffusionFamily
from dreambooth_trainer.model_loading import BaseModelSource
from dreambooth_trainer.startup import CollectorPause


@pytest.fixture
def collector_restored():
    """Whatever a test does to the collector, the next test gets it on and unfrozen."""
    yield
    gc.unfreeze()
    gc.enable()


def test_a_job_loads_without_collector_passes_and_trains_with_them(new_job, monkeypatch) -> None:
    seen: dict[str, tuple[bool, int]] = {}
    load = StableDiffusionFamily.load

    def recording_load(self, *args, **kwargs):
        seen["loading"] = (gc.isenabled(), gc.get_freeze_count())
        return load(self, *args, **kwargs)

    def first_step(*_):
        seen.setdefault("training", (gc.isenabled(), gc.get_freeze_count()))

    monkeypatch.setattr(StableDiffusionFamily, "load", recording_load)
    hook = optimizer.register_optimizer_step_post_hook(first_step)
    try:
        assert new_job({"max_train_steps": "2"}).run() == 0
    finally:
        hook.remove()
    assert seen["loading"] == (False, 0)
    enabled, frozen = seen["training"]
    assert enabled and frozen > 100_000  # torch, diffusers and the model: skipped by every pass
    assert gc.isenabled() and gc.get_freeze_count() == 0  # and released when the job ends


def test_a_job_that_fails_before_loading_turns_the_collector_back_on(new_job) -> None:
    job = new_job({"training_method": "dreambooth"})
    assert job.run() == 2
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_caller_with_the_collector_off_keeps_it_off(collector_restored) -> None:
    gc.disable()
    with CollectorPause() as start:
        start.model_loaded()
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    assert not gc.isenabled()


NEW_OBJECTS = 10_000  # a freeze would take these; frozen objects that die (a few) leave the count


def test_a_callers_own_freeze_is_left_alone(collector_restored) -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    with CollectorPause() as start:
        assert not gc.isenabled()
        fresh = [{} for _ in range(NEW_OBJECTS)]
        start.model_loaded()
        assert gc.isenabled() and frozen - 1000 < gc.get_freeze_count() < frozen + len(fresh)
    assert gc.isenabled() and frozen - 1000 < gc.get_freeze_count() < frozen + len(fresh)  # not unfrozen


def test_model_loaded_freezes_once_and_leaving_unfreezes(collector_restored) -> None:
    with CollectorPause() as start:
        start.model_loaded()
        frozen = gc.get_freeze_count()
        assert gc.isenabled() and frozen > 0
        fresh = [{} for _ in range(NEW_OBJECTS)]
        start.model_loaded()
        assert gc.get_freeze_count() < frozen + len(fresh)  # not frozen again
    assert gc.isenabled() and gc.get_freeze_count() == 0


@pytest.mark.parametrize(
    ("name", "quantization"),
    [("sd", "none"), ("sdxl", "none"), ("flux", "none"), ("flux", "nf4"), ("zimage", "int8")],
)
def test_what_loading_leaves_for_the_collector_holds_no_tensor(
    name, quantization, tiny_model, tiny_family_model, cpu_bnb
):
    """Start-up garbage waits, frozen, until the job ends: it must not hold weights (on a GPU, memory)."""
    folder = tiny_model if name == "sd" else tiny_family_model(name)
    family = get_family(name)
    gc.collect()
    with CollectorPause():
        model = family.load(BaseModelSource("folder", str(folder)), quantization=quantization)
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            garbage, gc.garbage[:] = list(gc.garbage), []
        finally:
            gc.set_debug(0)
    assert model.pipeline is not None
    held = [type(o).__name__ for o in garbage if isinstance(o, torch.Tensor | torch.nn.Module)]
    assert held == []
