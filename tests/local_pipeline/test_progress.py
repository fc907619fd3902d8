"""The terminal gets stages, one progress bar and the warnings to act on; the rest goes to the log."""

import io
import logging
import sys
import warnings

from local_pipeline.progress import TrainingProgress, library_output_to, stage, terminal, warn

TRAINER_OUTPUT = [
    "2026-12-05 11:36:50,116 INFO dreambooth_trainer.job: instance images: 6 usable, 0 skipped\n",
    "2026-12-05 11:36:50,355 WARNING bitsandbytes.backends.cpu.ops: Failed to load CPU gemm_4bit_forward\n",
    "[transformers] `CLIPImageProcessor` requires torchvision (not installed)\n",
    "2026-12-05 11:36:51,000 WARNING dreambooth_trainer.job: 2 photo(s) skipped: a.jpg (truncated)\n",
    "local runner: refused S3 key 'uploads/x/../../y.jpg': a '..' segment would leave the folder\n",
] + [f"[metrics] step={step} loss={1 / step:.4f} lr=0.0001\n" for step in range(1, 41)]


def feed(progress: TrainingProgress) -> None:
    for line in TRAINER_OUTPUT:
        progress(line)
    progress.close()


def test_off_a_terminal_the_bar_is_a_plain_line_per_quarter_and_only_real_warnings_show():
    screen, log = io.StringIO(), io.StringIO()
    feed(TrainingProgress(40, stream=screen, log=log))
    assert screen.getvalue().splitlines() == [
        "warning: trainer: 2 photo(s) skipped: a.jpg (truncated)",
        "warning: refused S3 key 'uploads/x/../../y.jpg': a '..' segment would leave the folder",
        "training: 10/40 steps, loss 0.1000",
        "training: 20/40 steps, loss 0.0500",
        "training: 30/40 steps, loss 0.0333",
        "training: 40/40 steps, loss 0.0250",
    ]
    assert log.getvalue().splitlines() == [line.rstrip("\n") for line in TRAINER_OUTPUT[:5]]


def test_verbose_shows_every_line():
    screen = io.StringIO()
    feed(TrainingProgress(40, stream=screen, verbose=True))
    assert "torchvision" in screen.getvalue() and "bitsandbytes" in screen.getvalue()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_it_is_one_tqdm_bar():
    screen = Tty()
    feed(TrainingProgress(40, stream=screen))
    assert "40/40" in screen.getvalue() and "\r" in screen.getvalue()
    assert "torchvision" not in screen.getvalue()


def test_library_output_goes_to_the_log_and_stages_to_the_terminal(capsys):
    log = io.StringIO()
    with library_output_to(log):
        print("library print")
        print("library stderr", file=sys.stderr)
        logging.getLogger("moto.stepfunctions").error("Exception=FailureEventException at ...")
        warnings.warn("a library's UserWarning", stacklevel=1)
        stage("a stage")
        warn("act on this")
        assert terminal() is not sys.stderr
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "==> a stage\nwarning: act on this\n"
    for text in ["library print", "library stderr", "Exception=FailureEventException", "UserWarning"]:
        assert text in log.getvalue()
