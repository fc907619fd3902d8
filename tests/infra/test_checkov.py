"""checkov over the synthesized template: each finding is accepted in infra/checkov-skips.yaml, with why.

checkov runs from its own venv (its dependencies conflict with the project's pins), made by
`make checkov-venv` with the version pinned in requirements-checkov.txt.
"""

import fnmatch
import json
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SKIPS_FILE = REPO_ROOT / "infra" / "checkov-skips.yaml"
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"


def load_skips() -> list[dict]:
    return yaml.safe_load(SKIPS_FILE.read_text())


def covering(skips: list[dict], check_id: str, logical_id: str) -> dict | None:
    return next(
        (
            s
            for s in skips
            if s["id"] == check_id and any(fnmatch.fnmatchcase(logical_id, p) for p in s["resources"])
        ),
        None,
    )


def test_every_skip_names_a_check_resources_and_a_reason():
    skips = load_skips()
    assert skips
    for skip in skips:
        assert set(skip) == {"id", "check", "resources", "reason"}, skip
        assert skip["id"].startswith("CKV_") and skip["resources"]
        assert len(skip["reason"].split()) >= 8, f"{skip['id']}: say why, not just that"
    assert len({s["id"] for s in skips}) == len(skips), "one entry per check"


@pytest.fixture(scope="module")
def checkov_findings(stack_artifact):
    subprocess.run(["make", "-s", "checkov-venv"], cwd=REPO_ROOT, check=True, timeout=900)
    template = Path(stack_artifact.assembly.directory, stack_artifact.template_file)
    result = subprocess.run(
        [
            str(CHECKOV),
            "--quiet",
            "--compact",
            "--framework",
            "cloudformation",
            "-f",
            str(template),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: findings, reported below
    data = json.loads(result.stdout)
    data = data[0] if isinstance(data, list) else data
    assert data["summary"]["parsing_errors"] == 0 and data["summary"]["passed"] > 100
    return [
        (f["check_id"], f["resource"].split(".", 1)[1], f["check_name"])
        for f in data["results"]["failed_checks"]
    ]


def test_checkov_finds_nothing_the_skips_file_does_not_explain(checkov_findings):
    skips = load_skips()
    unexplained = [f for f in checkov_findings if covering(skips, f[0], f[1]) is None]
    assert not unexplained, "fix these, or add them with a reason to infra/checkov-skips.yaml:\n" + "\n".join(
        f"{check} {resource}: {name}" for check, resource, name in unexplained
    )


def test_every_skip_is_still_needed(checkov_findings):
    matches = [covering(load_skips(), check, resource) for check, resource, _ in checkov_findings]
    used = {m["id"] for m in matches if m is not None}
    stale = [s["id"] for s in load_skips() if s["id"] not in used]
    assert not stale, f"no longer found by checkov, remove from infra/checkov-skips.yaml: {stale}"
