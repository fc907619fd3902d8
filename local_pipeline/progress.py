"""What the user sees while the local pipeline runs: stage lines and a training progress bar.

The bar reads the trainer's own ``[metrics]`` log lines with the same regexes SageMaker uses
(``dreambooth_trainer.metrics``), so it shows exactly what CloudWatch would record.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from dreambooth_trainer.metrics import METRICS_TAG, parse_metrics


def stage(message: str, stream: TextIO = sys.stderr) -> None:
    print(f"==> {message}", file=stream, flush=True)


class TrainingProgress:
    """Consumes trainer output lines: the bar advances on metric lines, other lines go to the log stream."""

    def __init__(
        self, total_steps: int | None, *, stream: TextIO = sys.stderr, verbose: bool = False
    ) -> None:
        self._stream = stream
        self._verbose = verbose
        self._bar = tqdm(total=total_steps, desc="training", unit="step", file=stream, leave=True)
        self.last_metrics: dict[str, float] = {}

    def __call__(self, line: str) -> None:
        if METRICS_TAG in line:
            metrics = parse_metrics(line)
            self.last_metrics = metrics
            step = int(metrics.get("train:step", self._bar.n))
            self._bar.update(max(0, step - self._bar.n))
            self._bar.set_postfix(loss=f"{metrics.get('train:loss', float('nan')):.4f}")
        elif self._verbose or _looks_important(line):
            self._bar.write(line.rstrip("\n"), file=self._stream)

    def close(self) -> None:
        self._bar.close()


def _looks_important(line: str) -> bool:
    lowered = line.lower()
    return any(word in lowered for word in ("error", "fail", "skip", "warning", "generat", "saved", "upload"))
