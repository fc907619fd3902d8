"""Start-up without the cyclic garbage collector's full passes.

Importing torch, transformers and diffusers and loading a base model create ~760,000 long-lived objects that
the cyclic collector tracks, and every full pass walks all of them: on the tiny model that was 8 passes
and about 0.9 CPU s, a fifth of the time to the first step (BENCHMARKS.md). So the job pauses the collector
from its start until the base model is loaded, then freezes what exists (`gc.freeze`: later passes skip it)
and collects as usual from there on. On leaving, it unfreezes, so whatever start-up left unreachable (about
12,000 small objects on the tiny model, no tensors) is collected after all, and a process that runs jobs
in turn (the tests) does not keep a frozen heap. That garbage holds no tensor or module for any family,
quantized or not (tests/trainer_image/test_trainer_startup.py): frozen weights would hold GPU memory.
"""

from __future__ import annotations

import gc
from types import TracebackType


class CollectorPause:
    """`with CollectorPause() as start:` ... `start.model_loaded()` ...: the collector is off until then.

    A caller that had the collector off already keeps it off; one that froze objects itself keeps its
    freeze (nothing more is frozen, so leaving does not unfreeze what it froze).
    """

    def __init__(self) -> None:
        self._paused = False
        self._frozen = False

    def __enter__(self) -> CollectorPause:
        if gc.isenabled():
            gc.disable()
            self._paused = True
        return self

    def model_loaded(self) -> None:
        """The long-lived objects exist: freeze them and turn the collector back on (once)."""
        if not self._paused:
            return
        if gc.get_freeze_count() == 0:
            gc.freeze()
            self._frozen = True
        gc.enable()
        self._paused = False

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._frozen:
            gc.unfreeze()
        if self._paused:
            gc.enable()
        self._paused = self._frozen = False
