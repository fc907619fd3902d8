"""The image's Python packages as its real platform gets them: requirements.txt resolved from PyPI for
manylinux x86_64 and the image's CPython (no local wheel folders, binary wheels only), and the CUDA builds
of torch, bitsandbytes and xformers compared. Also: the base image comes from ECR Public, pinned by digest.

Needs the package registry; skipped only when it cannot be reached.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

TRAINER_IMAGE = Path(__file__).resolve().parents[2] / "trainer_image"
DOCKERFILE = TRAINER_IMAGE / "Dockerfile"
REQUIREMENTS = TRAINER_IMAGE / "requirements.txt"
GLIBC_MINOR = {"bookworm": 36, "trixie": 41}  # the Debian release of the python image -> glibc 2.x
XFORMERS_CHECKED = "0.0.35"  # the newest xformers on PyPI when this was written
NETWORK_ERRORS = ("NewConnectionError", "Temporary failure in name resolution", "Max retries exceeded")


def _args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S*)$", DOCKERFILE.read_text(), flags=re.MULTILINE))


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        name, _, version = line.split("#", 1)[0].strip().partition("==")
        if name:
            pins[name.lower()] = version
    return pins


def _image_platform() -> tuple[str, list[str]]:
    """(CPython version, pip --platform values) of the base image named by BASE_IMAGE."""
    tag = _args()["BASE_IMAGE"].rsplit(":", 1)[1]  # e.g. 3.12-slim-bookworm
    python = re.match(r"(\d+\.\d+)", tag)[1]
    glibc = GLIBC_MINOR[tag.rsplit("-", 1)[1]]
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(glibc, 4, -1)]
    return python, platforms + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def _pip(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # PyPI only: no local wheel folders, extra indexes or constraints
    python, platforms = _image_platform()
    target = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for platform in platforms:
        target += ["--platform", platform]
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, *target], env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0 and any(marker in done.stderr for marker in NETWORK_ERRORS):
        pytest.skip(f"the package registry cannot be reached: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """name -> {version, wheel} as pip installs requirements.txt in the image."""
    target = tmp_path_factory.mktemp("target")
    report = ["--dry-run", "--ignore-installed", "--quiet", "--report", "-", "--target", str(target)]
    done = _pip("install", *report, "-r", str(REQUIREMENTS))
    return {
        item["metadata"]["name"].lower(): {
            "version": item["metadata"]["version"],
            "wheel": item["download_info"]["url"].rsplit("/", 1)[1],
            "requires": item["metadata"].get("requires_dist", []),
        }
        for item in json.loads(done.stdout)["install"]
    }


def _cuda_of_torch(resolved: dict[str, dict]) -> tuple[int, int]:
    """The CUDA runtime torch's wheel brings (nvidia-cuda-runtime[-cuXY] x.y.z)."""
    [runtime] = [info for name, info in resolved.items() if name.startswith("nvidia-cuda-runtime")]
    major, minor = runtime["version"].split(".")[:2]
    return int(major), int(minor)


def test_from_is_ecr_public_with_a_digest_argument() -> None:
    args = _args()
    [base] = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert base == "${BASE_IMAGE}${BASE_IMAGE_DIGEST:+@${BASE_IMAGE_DIGEST}}"
    assert args["BASE_IMAGE"].startswith("public.ecr.aws/docker/library/python:")
    # empty until the first build fills it (see the Dockerfile's comment); then a real sha256 digest
    assert re.fullmatch(r"(sha256:[0-9a-f]{64})?", args["BASE_IMAGE_DIGEST"])


def test_requirements_resolve_for_the_image_platform(resolved: dict[str, dict]) -> None:
    pins = _pins()
    for name, version in pins.items():
        assert resolved[name]["version"] == version, name  # exactly: no +cpu, no other build
    python = _image_platform()[0].replace(".", "")
    assert re.search(rf"-cp{python}-cp{python}-manylinux\w*_x86_64\.whl$", resolved["torch"]["wheel"])
    assert all(info["wheel"].endswith(".whl") for info in resolved.values())  # nothing built from source
    assert "torchvision" not in resolved and "xformers" not in resolved
    assert _cuda_of_torch(resolved)[0] >= 12  # the CUDA build, not the CPU one


def test_bitsandbytes_ships_a_library_for_torchs_cuda(resolved: dict[str, dict]) -> None:
    """The same py3-none manylinux wheel is installed here: its files name the CUDA versions it supports."""
    major, minor = _cuda_of_torch(resolved)
    assert metadata.version("bitsandbytes") == resolved["bitsandbytes"]["version"]
    libraries = {Path(str(f)).name for f in metadata.files("bitsandbytes") or []}
    assert f"libbitsandbytes_cuda{major}{minor}.so" in libraries, sorted(libraries)
    torch_requirements = [r.replace(" ", "") for r in resolved["bitsandbytes"]["requires"]]
    assert "torch<3,>=2.4" in torch_requirements  # admits the pinned torch


def test_xformers_stays_out_while_it_links_another_cuda(resolved: dict[str, dict], tmp_path: Path) -> None:
    """xformers accepts this torch by its metadata (torch>=2.10) but its kernels link the CUDA 12 runtime,
    which torch 2.13.0's PyPI wheel does not bring (CUDA 13): installed, it would fail to load its kernels."""
    _pip("download", "--no-deps", "--quiet", "--dest", str(tmp_path), f"xformers=={XFORMERS_CHECKED}")
    [wheel] = tmp_path.glob("xformers-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        record = archive.read(f"xformers-{XFORMERS_CHECKED}.dist-info/METADATA").decode()
        requires = [line for line in record.splitlines() if line.startswith("Requires-Dist: torch")]
        kernels = archive.read("xformers/_C.so")
    assert requires == ["Requires-Dist: torch>=2.10"]
    linked = set(re.findall(rb"libcudart\.so\.(\d+)", kernels))
    torch_cuda = _cuda_of_torch(resolved)[0]
    assert linked == {b"12"} and torch_cuda != 12
    code = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "xformers" in line] and "xformers" not in _pins()
