"""The GPU bundle: downloaded from the registry, installed offline by trainer_image/gpu_bench.sh into a
scratch venv that holds only what the GPU machine has (torch, accelerate, peft, transformers, safetensors,
tokenizers and their dependencies; no diffusers, pydantic, bitsandbytes, Pillow), and the benchmark runs.

The wheels are downloaded for this machine's Python (3.11) instead of the GPU machine's 3.12: the point is
the offline install and the imports. Skipped only when the registry cannot be reached.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from dreambooth_trainer import gpu_bundle

REPO = Path(__file__).resolve().parents[2]
MACHINE_HAS = ("torch", "accelerate", "peft", "transformers", "safetensors", "tokenizers")
NETWORK_ERRORS = ("NewConnectionError", "Temporary failure in name resolution", "Max retries exceeded")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(roots: tuple[str, ...]) -> set[str]:
    """The installed distributions roots need (no extras), by normalized name."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = _normal(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            marker = requirement.split(";", 1)[1] if ";" in requirement else ""
            if 'python_version < "3.11"' in marker or 'sys_platform == "win32"' in marker:
                continue
            todo.append(re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0])
    return seen


def _machine_site(folder: Path, leave_out: set[str]) -> Path:
    """Links to the installed files of what the GPU machine has, minus what the bundle brings."""
    folder.mkdir()
    for name in sorted(_closure(MACHINE_HAS) - leave_out):
        for file in metadata.distribution(name).files or []:
            top = file.parts[0]
            if ".." in file.parts or top.endswith((".dist-info", ".pth")) or top == "__pycache__":
                continue
            source = Path(file.locate()).resolve()
            source = source.parents[len(file.parts) - 2] if len(file.parts) > 1 else source
            if not (folder / top).exists():
                (folder / top).symlink_to(source)
        dist_info = Path(metadata.distribution(name)._path)  # type: ignore[attr-defined]
        if not (folder / dist_info.name).exists():
            (folder / dist_info.name).symlink_to(dist_info)
    return folder


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    dest = tmp_path_factory.mktemp("whl")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        record = gpu_bundle.build_bundle(dest, version)
    except RuntimeError as exc:
        if any(marker in str(exc) for marker in NETWORK_ERRORS):
            pytest.skip(f"the package registry cannot be reached: {exc}")
        raise
    return dest, record


def test_bundle_holds_the_trainers_pins_within_the_budget(bundle) -> None:
    dest, record = bundle
    files = [wheel["file"] for wheel in record["wheels"]]
    for name in ("diffusers", "pydantic", "pillow"):
        version = gpu_bundle.pinned(name).split("==")[1]
        assert any(f.lower().startswith(f"{name}-{version}-") for f in files), (name, files)
    assert record["total_bytes"] <= gpu_bundle.BUDGET_BYTES
    assert record["total_bytes"] == record["tree_bytes"] + sum(w["bytes"] for w in record["wheels"])
    assert json.loads((dest / gpu_bundle.RECORD).read_text()) == record
    # a tight budget leaves bitsandbytes out and says so, instead of failing or overflowing
    tight = gpu_bundle.build_bundle(dest.parent / "tight", record["python_version"], budget=40 * 2**20)
    assert [item["requirement"] for item in tight["left_out"]] == [gpu_bundle.pinned("bitsandbytes")]
    assert tight["total_bytes"] <= 40 * 2**20


def test_offline_install_in_a_bare_venv_runs_the_benchmark(bundle, tmp_path: Path) -> None:
    dest, record = bundle
    # the machine keeps its own huggingface-hub: the bundle's is a fallback for an older one
    bundled = {
        _normal(re.split(r"-\d", Path(w["file"]).name, maxsplit=1)[0])
        for w in record["wheels"]
        if not w["file"].startswith(gpu_bundle.HUB_FOLDER)
    }
    machine = _machine_site(tmp_path / "machine", leave_out=bundled)
    assert not (machine / "diffusers").exists() and not (machine / "pydantic").exists()
    scratch = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(scratch)
    site_packages = next((scratch / "lib").glob("python*/site-packages"))
    (site_packages / "gpu-machine.pth").write_text(f"{machine}\n")
    python = scratch / "bin" / "python"
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("PIP_") and key != "PYTHONPATH"
    }
    env |= {
        "PIP_CONFIG_FILE": os.devnull,  # no index, no local wheel folders: only the bundle
        "PYTHON": str(python),
        "SITE": str(tmp_path / "site"),
        "WHEELS": str(dest),
        "OMP_NUM_THREADS": "1",
        "OUT": str(tmp_path),
    }
    # without the bundle, the benchmark cannot even import: the scratch venv really lacks it
    bare = subprocess.run([python, "-c", "import diffusers"], env=env, capture_output=True, text=True)
    assert bare.returncode != 0 and "diffusers" in bare.stderr
    done = subprocess.run(
        ["bash", str(REPO / "trainer_image" / "gpu_bench.sh"), "--steps", "2"]
        + ["--presets", "lora", "--variants", "optimized", "--families", "flux"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((tmp_path / "gpu-bench.json").read_text())
    assert table["bitsandbytes"] == gpu_bundle.pinned("bitsandbytes").split("==")[1]
    assert [row["error"] for row in table["rows"]] == [None, None]  # SD LoRA, then the tiny FLUX LoRA
    assert table["rows"][1]["family"] == "flux"
    imported = subprocess.run(
        [python, "-c", "import diffusers, pydantic, PIL, bitsandbytes; print(diffusers.__file__)"],
        env=env | {"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.startswith(str(tmp_path / "site"))
