"""The processes the local service starts (trainers), so that stopping the service stops every one of them.

Each child runs in a process group of its own: Ctrl-C in the terminal reaches only the service, which
then stops its children the way SageMaker stops a container (SIGTERM to the whole group, SIGKILL after a
grace period), and waits for them, so nothing outlives the command that started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

DEFAULT_GRACE_SECONDS = 20.0


class ServiceStopping(RuntimeError):
    """The service is stopping: no new process is started."""


class ChildProcesses:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._stopping = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    def popen(self, command: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """``subprocess.Popen(command, **kwargs)`` in a new process group, tracked until :meth:`release`."""
        with self._lock:
            if self._stopping:
                raise ServiceStopping("the local service is stopping; no new process is started")
            process = subprocess.Popen(list(command), start_new_session=True, **kwargs)
            self._running.add(process)
        return process

    def release(self, process: subprocess.Popen) -> None:
        """The caller has waited for ``process``; what is left of its group is killed."""
        with self._lock:
            self._running.discard(process)
        _signal_group(process.pid, signal.SIGKILL)

    def running(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._running if p.poll() is None]

    def stop_all(self, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> int:
        """SIGTERM every child's group, SIGKILL what is left after ``grace_seconds``; returns how many."""
        with self._lock:
            self._stopping = True
            processes = [p for p in self._running if p.poll() is None]
        for process in processes:
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
            _signal_group(process.pid, signal.SIGKILL)  # anything it started and left behind
        return len(processes)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(pgid, signum)
