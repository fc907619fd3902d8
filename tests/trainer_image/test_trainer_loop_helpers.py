"""The loop's small deterministic pieces: data order, checkpoint cadence, stop handling, benchmark."""

from __future__ import annotations

import json
import os
import signal

import pytest

from dreambooth_trainer.benchmark import main as benchmark_main
from dreambooth_trainer.hyperparameters import TrainingHyperparameters
from dreambooth_trainer.loop import batch_indices, checkpoint_interval
from dreambooth_trainer.sagemaker_contract import SageMakerPaths, StopRequested, StopSignal, write_failure


def test_batches_cover_each_epoch_once_and_are_recomputable() -> None:
    n, batch = 5, 2
    stream = [i for step in range(10) for i in batch_indices(n, batch, step, seed=3, stream=0)]
    for epoch in range(4):
        assert sorted(stream[epoch * n : (epoch + 1) * n]) == list(range(n))
    # A resumed run asks for step 7 directly and gets what the uninterrupted run got.
    assert batch_indices(n, batch, 7, seed=3, stream=0) == stream[14:16]
    assert stream != [i for step in range(10) for i in batch_indices(n, batch, step, seed=4, stream=0)]


def test_checkpoint_interval_in_steps_or_epochs() -> None:
    hp = TrainingHyperparameters(instance_prompt="x", save_steps=3, train_batch_size=2)
    assert checkpoint_interval(hp, num_instance=10) == 3
    by_epochs = hp.model_copy(update={"save_use_epochs": True})
    assert checkpoint_interval(by_epochs, num_instance=10) == 15  # 3 epochs of 5 steps
    assert checkpoint_interval(hp.model_copy(update={"save_steps": 0}), 10) == 0
    # By default a quarter of the run: the 400-step default gets checkpoints at 100, 200, 300 and 400.
    assert checkpoint_interval(TrainingHyperparameters(instance_prompt="x"), num_instance=10) == 100


def test_sigterm_interrupts_outside_the_loop_and_is_deferred_inside() -> None:
    stop = StopSignal()
    with stop.installed():
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested and stop.signal_name == "SIGTERM"
        with pytest.raises(StopRequested):
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again


def test_failure_reason_is_trimmed_to_what_sagemaker_shows(tmp_path) -> None:
    paths = SageMakerPaths(tmp_path)
    write_failure(paths, "x" * 5000)
    assert len(paths.failure_file.read_text()) == 1024


def test_opt_ml_paths_follow_the_base_dir(tmp_path) -> None:
    paths = SageMakerPaths.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path)})
    assert paths.resolve("/opt/ml/input/data/images/") == tmp_path / "input/data/images"
    assert str(paths.resolve("/data/elsewhere")) == "/data/elsewhere"
    assert SageMakerPaths.from_env({}).model_dir.as_posix() == "/opt/ml/model"


def test_benchmark_runs_both_loops(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert (
        benchmark_main(
            ["--rounds", "1", "--steps", "4", "--warmup", "1", "--resolution", "32", "--json", str(out)]
        )
        == 0
    )
    summary = json.loads(out.read_text())
    assert summary["ours"]["steps_per_second"] > 0 and summary["reference"]["steps_per_second"] > 0
    assert summary["ours"]["peak_rss_mb"] > 0 and summary["speedup"] > 0
