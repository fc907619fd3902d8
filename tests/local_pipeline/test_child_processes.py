"""Stopping the service stops every process it started, grandchildren and SIGTERM-ignorers included."""

import os
import signal
import subprocess
import sys
import time

import pytest

from local_pipeline.child_processes import ChildProcesses, ServiceStopping

# Starts a grandchild, then ignores SIGTERM: only the group SIGKILL after the grace period ends both.
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "time.sleep(60)\n"
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_stop_all_terminates_then_kills_the_whole_group_and_starts_nothing_new():
    processes = ChildProcesses()
    process = processes.popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    grandchild = int(process.stdout.readline())
    time.sleep(0.5)  # the SIGTERM handler is in place
    assert os.getpgid(process.pid) == process.pid != os.getpgid(0), "a group of its own"

    started = time.monotonic()
    assert processes.stop_all(grace_seconds=1) == 1
    assert 1 <= time.monotonic() - started < 10
    assert process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(grandchild)
    with pytest.raises(ServiceStopping):
        processes.popen([sys.executable, "-c", "pass"])


def test_a_child_that_honours_sigterm_ends_at_once():
    processes = ChildProcesses()
    process = processes.popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = time.monotonic()
    assert processes.stop_all(grace_seconds=30) == 1
    assert time.monotonic() - started < 10 and process.returncode == -signal.SIGTERM
