"""Each in-process Lambda invocation keeps its own Powertools log keys.

In AWS a Lambda environment runs one invocation at a time, so Powertools keeps the keys it appends
(``inject_lambda_context``'s ``function_name``, a handler's ``append_keys(job_name=...)``) on the
formatter, shared by every ``Logger`` of a service. The emulator runs many invocations of many
functions in one process at once; without this they would overwrite each other's keys and a log line
of one job would carry another job's name.

While :func:`invocation_log_keys` is active (the emulator wraps each handler call in it), a formatter's
keys live in a per-invocation copy held in a context variable; outside it they are the formatter's own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

_SHARED = "_local_aws_log_format"
_invocation_keys: ContextVar[dict[int, dict[str, Any]] | None] = ContextVar(
    "local_aws_invocation_log_keys", default=None
)
_install_lock = threading.Lock()
_installed = False


def _shared(formatter: LambdaPowertoolsFormatter) -> dict[str, Any]:
    attributes = formatter.__dict__
    if _SHARED not in attributes:  # a formatter made before install() keeps its keys
        attributes[_SHARED] = attributes.pop("log_format", {})
    return attributes[_SHARED]


def _get_log_format(formatter: LambdaPowertoolsFormatter) -> dict[str, Any]:
    scoped = _invocation_keys.get()
    shared = _shared(formatter)
    if scoped is None:
        return shared
    if id(formatter) not in scoped:
        scoped[id(formatter)] = dict(shared)
    return scoped[id(formatter)]


def _set_log_format(formatter: LambdaPowertoolsFormatter, value: dict[str, Any]) -> None:
    scoped = _invocation_keys.get()
    if scoped is None:
        formatter.__dict__[_SHARED] = value
        return
    scoped[id(formatter)] = value
    # A Logger created during an invocation (a handler module imported on first use) also gives the
    # formatter its starting keys, as the module-level Logger of a fresh Lambda environment would.
    formatter.__dict__.setdefault(_SHARED, dict(value))


def install() -> None:
    """Make ``LambdaPowertoolsFormatter.log_format`` per invocation (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        LambdaPowertoolsFormatter.log_format = property(_get_log_format, _set_log_format)
        _installed = True


@contextmanager
def invocation_log_keys() -> Iterator[None]:
    """Log keys appended inside the block belong to this invocation only."""
    install()
    token = _invocation_keys.set({})
    try:
        yield
    finally:
        _invocation_keys.reset(token)
