"""Wheels the GPU benchmark machine lacks, downloaded ahead into an ignored folder (`make gpu-bundle`).

That machine reaches no package registry. It has Python 3.12, torch 2.11 (CUDA 13), accelerate, peft,
transformers 5.17, safetensors and tokenizers, but no diffusers, bitsandbytes or pydantic. This downloads
those (at the trainer's pins in requirements.txt) and their dependencies that torch/transformers do not
bring, as binary wheels for its Python and platform, into `.whl/`; `trainer_image/gpu_bench.sh` installs them
there with `pip install --no-index --no-deps --target` and runs the benchmark.

Everything taken to that machine (the working tree plus this folder) must stay under 64 MiB. The wheels are
added in order of need and one that would cross the budget is left out and reported: bitsandbytes (~41 MiB,
CUDA kernels for every architecture) is last, and without it the benchmark runs with 8-bit Adam off and says
so in its table. huggingface-hub goes into a side folder: the script uses it only when diffusers does not
import with the machine's own hub (transformers 5.17 pins hub < 2; diffusers 0.42 needs >= 1.32).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "trainer_image" / "requirements.txt"
BUDGET_BYTES = 64 * 2**20
# The trainer's own pins, read from requirements.txt (one definition of each version).
FROM_REQUIREMENTS = ("diffusers", "pydantic", "pillow")
# What diffusers and pydantic need beyond what torch/transformers bring, at the versions tested here.
DEPENDENCIES = (
    "pydantic-core==2.50.4",  # pydantic 2.14.3 requires exactly this one
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "typing-extensions==4.16.0",  # pydantic 2.14 needs >= 4.16; the machine's torch may bring an older one
    "importlib-metadata==10.2.0",
    "zipp==4.1.2",
    "requests==2.34.2",  # diffusers imports it; transformers 5 no longer brings it
    "urllib3==2.8.0",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "idna==3.21",
)
HUB = "huggingface-hub==1.33.0"  # satisfies transformers 5.17 (< 2) and diffusers 0.42 (>= 1.32)
LAST = ("bitsandbytes",)  # large, optional: 8-bit Adam
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
HUB_FOLDER = "hub"
RECORD = "bundle.json"


def pinned(name: str) -> str:
    for line in REQUIREMENTS.read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if requirement.lower().startswith(f"{name.lower()}=="):
            return requirement
    raise SystemExit(f"{name} has no '==' pin in {REQUIREMENTS}")


def wanted() -> list[str]:
    """Requirements in order of need; the optional large ones last."""
    return [pinned(n) for n in FROM_REQUIREMENTS] + list(DEPENDENCIES) + [pinned(n) for n in LAST]


def tree_bytes() -> int:
    """Size of the tracked working tree, which travels with the wheels."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return sum(
        (REPO / name).stat().st_size for name in listed.decode().split("\0") if (REPO / name).is_file()
    )


def download(requirement: str, dest: Path, python_version: str) -> Path:
    """One binary wheel for CPython python_version on manylinux x86_64 (no dependencies, nothing built)."""
    before = set(dest.glob("*.whl"))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python_version, "--implementation", "cp", "--dest", str(dest)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    done = subprocess.run([*command, "--quiet", requirement], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip download {requirement} failed: {done.stderr.strip()[-2000:]}")
    name = requirement.split("==")[0].lower().replace("-", "_")
    new = [p for p in set(dest.glob("*.whl")) - before] or [
        p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-")
    ]
    if len(new) != 1:
        raise RuntimeError(f"pip download {requirement}: expected one wheel in {dest}, found {new}")
    return new[0]


def build_bundle(dest: Path, python_version: str = "3.12", budget: int = BUDGET_BYTES) -> dict:
    """Download into dest (emptied of old wheels first); return and write the record of what is in it."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in [*dest.glob("*.whl"), *(dest / HUB_FOLDER).glob("*.whl")]:
        old.unlink()
    used = tree_bytes()
    record: dict = {"python_version": python_version, "tree_bytes": used, "wheels": [], "left_out": []}
    for requirement in [HUB, *wanted()]:
        target = dest / HUB_FOLDER if requirement == HUB else dest
        target.mkdir(exist_ok=True)
        wheel = download(requirement, target, python_version)
        size = wheel.stat().st_size
        if used + size > budget:
            wheel.unlink()
            record["left_out"].append({"requirement": requirement, "bytes": size})
            continue
        used += size
        record["wheels"].append({"file": str(wheel.relative_to(dest)), "bytes": size})
    record["total_bytes"] = used
    record["budget_bytes"] = budget
    (dest / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=REPO / ".whl")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    parser.add_argument("--budget-mib", type=float, default=BUDGET_BYTES / 2**20)
    args = parser.parse_args(argv)
    record = build_bundle(args.dest, args.python_version, int(args.budget_mib * 2**20))
    for wheel in record["wheels"]:
        print(f"{wheel['bytes'] / 2**20:7.2f} MiB  {wheel['file']}")
    print(
        f"total with the working tree: {record['total_bytes'] / 2**20:.1f} MiB "
        f"of {record['budget_bytes'] / 2**20:.0f} MiB"
    )
    for item in record["left_out"]:
        print(f"left out (over budget): {item['requirement']} ({item['bytes'] / 2**20:.1f} MiB)")
        if item["requirement"].startswith("bitsandbytes"):
            print("  -> the benchmark runs without 8-bit Adam and says so in its table")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
