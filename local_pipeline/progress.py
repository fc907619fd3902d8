"""What the user sees while the local pipeline runs: stage lines, warnings and one training progress bar.

Everything else that prints in this process (the in-process Lambdas' structured logs, moto, jsii's Node
banners, transformers, bitsandbytes, tqdm bars of other libraries, Python warnings) goes to the log file
while :func:`library_output_to` is active; the terminal gets only what :func:`stage`, :func:`warn` and
:class:`TrainingProgress` write.

The bar reads the trainer's own ``[metrics]`` log lines with the same regexes SageMaker uses
(``dreambooth_trainer.metrics``), so it shows exactly what CloudWatch would record.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import TextIO

from tqdm import tqdm

from dreambooth_trainer.metrics import METRICS_TAG, parse_metrics
from local_pipeline.training_runner import RUNNER_TAG

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A line the trainer's own code logged at WARNING: something the user must know (the rest is in the log).
_TRAINER_WARNING = re.compile(r"^\S+ \S+ WARNING (dreambooth_trainer[\w.]*): (.*)$")
_terminal: TextIO | None = None


def terminal() -> TextIO:
    """The stream the user watches (stderr, also while library output is routed to the log)."""
    return _terminal if _terminal is not None else sys.stderr


@contextmanager
def library_output_to(log: TextIO) -> Iterator[None]:
    """Route ``sys.stdout``, ``sys.stderr``, logging (WARNING and up) and warnings to ``log``.

    Threads and child writers that look ``sys.stderr`` up when they write (moto's server threads, jsii's
    stderr pump, tqdm bars of libraries) follow; :func:`terminal` still names the user's stderr.
    """
    global _terminal
    previous = _terminal
    _terminal = terminal()
    root = logging.getLogger()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.WARNING)
    root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        with redirect_stdout(log), redirect_stderr(log):
            yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        _terminal = previous


def stage(message: str, stream: TextIO | None = None) -> None:
    print(f"==> {message}", file=stream or terminal(), flush=True)


def warn(message: str, stream: TextIO | None = None) -> None:
    """A warning the user must act on: always on the terminal."""
    print(f"warning: {message}", file=stream or terminal(), flush=True)


class TrainingProgress:
    """Consumes trainer output lines: metric lines advance the bar, every other line goes to ``log``.

    On the terminal: the bar (a tqdm bar on a TTY; a plain line per quarter elsewhere, so a captured
    stderr holds no carriage returns), the trainer's own warnings, and what the local runner reports.
    ``verbose`` shows every line there too.
    """

    def __init__(
        self,
        total_steps: int | None,
        *,
        stream: TextIO | None = None,
        log: TextIO | None = None,
        verbose: bool = False,
    ) -> None:
        self._stream = stream or terminal()
        self._log = log
        self._verbose = verbose
        self._total = total_steps
        self._step = 0
        self._loss: float | None = None
        self._reported_quarter = 0
        interactive = bool(getattr(self._stream, "isatty", lambda: False)())
        self._bar = (
            tqdm(total=total_steps, desc="training", unit="step", file=self._stream, leave=True)
            if interactive
            else None
        )
        self.last_metrics: dict[str, float] = {}

    def __call__(self, line: str) -> None:
        line = line.rstrip("\n")
        if METRICS_TAG in line:
            self._advance(parse_metrics(line))
            return
        if self._log is not None:
            print(line, file=self._log, flush=True)
        if self._verbose:
            self._show(line)
        elif line.startswith(RUNNER_TAG):
            self._show(f"warning: {line[len(RUNNER_TAG) :]}")
        elif match := _TRAINER_WARNING.match(line):
            self._show(f"warning: trainer: {match.group(2)}")

    def _advance(self, metrics: dict[str, float]) -> None:
        self.last_metrics = metrics
        self._step = max(self._step, int(metrics.get("train:step", self._step)))
        self._loss = metrics.get("train:loss", self._loss)
        if self._bar is not None:
            self._bar.update(max(0, self._step - self._bar.n))
            if self._loss is not None:
                self._bar.set_postfix(loss=f"{self._loss:.4f}")
        elif self._total:
            quarter = min(4, self._step * 4 // self._total)
            if quarter > self._reported_quarter:
                self._reported_quarter = quarter
                self._print_plain()

    def _print_plain(self) -> None:
        total = f"/{self._total}" if self._total else ""
        loss = f", loss {self._loss:.4f}" if self._loss is not None else ""
        print(f"training: {self._step}{total} steps{loss}", file=self._stream, flush=True)

    def _show(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._step and self._reported_quarter < 4:
            self._print_plain()
