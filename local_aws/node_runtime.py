"""The Node.js that jsii (the CDK's Python bindings) starts for every synth, and what it prints.

The CDK CLI supports the Node 22 and 24 lines; Node 20 still synthesizes but is end-of-life, and jsii
prints a large banner about it on every process start. The banners for the lines this project runs on
are silenced here (jsii reads the variables when it starts Node); an unknown or untested Node keeps
jsii's own warning, and :func:`node_support_problem` names what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import MutableMapping

SUPPORTED_NODE_MAJORS = (22, 24)  # the CDK CLI's supported lines
END_OF_LIFE_NODE_MAJORS = (20,)  # still synthesizes; upgrade when you can
END_OF_LIFE_VARIABLE = "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"  # comma-separated majors
DEPRECATED_VARIABLE = "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION"  # any value
_VERSION = re.compile(r"^v?(\d+)\.")


def quiet_jsii_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Silence jsii's end-of-life and deprecation banners for Node 20, 22 and 24 (keeps the user's own)."""
    environ = os.environ if environ is None else environ
    listed = [m.strip() for m in environ.get(END_OF_LIFE_VARIABLE, "").split(",") if m.strip()]
    for major in (*END_OF_LIFE_NODE_MAJORS, *SUPPORTED_NODE_MAJORS):
        if str(major) not in listed:
            listed.append(str(major))
    environ[END_OF_LIFE_VARIABLE] = ",".join(listed)
    environ.setdefault(DEPRECATED_VARIABLE, "1")


def node_major(node: str = "node") -> int | None:
    """The major version of ``node`` on PATH, or None when there is none."""
    executable = shutil.which(node)
    if executable is None:
        return None
    try:
        version = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.match(version)
    return int(match.group(1)) if match else None


def node_support_problem(major: int | None) -> tuple[str, str] | None:
    """``(severity, message)`` for a Node the CDK does not support: "note" (works) or "warning" (act)."""
    if major in SUPPORTED_NODE_MAJORS:
        return None
    lines = " or ".join(str(m) for m in SUPPORTED_NODE_MAJORS)
    if major is None:
        return "warning", f"no `node` on PATH: the CDK synth needs Node.js {lines}"
    if major in END_OF_LIFE_NODE_MAJORS:
        return "note", f"Node {major} is end-of-life; synth works, but the CDK CLI supports Node {lines}"
    return "warning", f"Node {major} is not a line the CDK CLI supports: install Node {lines}"
