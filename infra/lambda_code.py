"""The Lambda code asset: ``lambdas/`` plus the trainer's two pure modules, staged without Docker.

CDK calls :class:`CopySources` (a jsii ``ILocalBundling``) at synth; it copies Python files only, so
the asset is a few hundred KB and its hash changes exactly when the shipped code does. pydantic and
Powertools come from the public Powertools layer; boto3 from the Lambda runtime.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAINER_PACKAGE = REPO_ROOT / "trainer_image" / "dreambooth_trainer"
# The trainer's modules the Lambdas import: no torch (image_files needs Pillow: the validation
# Lambda's layer, infra/functions.py). family_table is the one table of model families and aliases;
# subject_defaults says what subject_type decides (prior preservation, class prompt).
TRAINER_MODULES = (
    "__init__.py",
    "family_table.py",
    "hyperparameters.py",
    "image_files.py",
    "metrics.py",
    "subject_defaults.py",
)


def asset_files(repo_root: Path = REPO_ROOT) -> dict[str, Path]:
    """Asset-relative path -> source file, for every file the asset holds."""
    files = {
        path.relative_to(repo_root).as_posix(): path
        for path in sorted((repo_root / "lambdas").rglob("*.py"))
        if "__pycache__" not in path.parts
    }
    trainer = repo_root / "trainer_image" / "dreambooth_trainer"
    for name in TRAINER_MODULES:
        files[f"dreambooth_trainer/{name}"] = trainer / name
    return files


@jsii.implements(ILocalBundling)
class CopySources:
    """Local bundling: copy the files; CDK never falls back to Docker because this always succeeds."""

    def __init__(self, files: Callable[[], dict[str, Path]] = asset_files) -> None:
        self.files = files

    def try_bundle(self, output_dir: str, *args, **kwargs) -> bool:
        out = Path(output_dir)
        for relative, source in self.files().items():
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        return True


def code_asset(source_dir: Path, files: Callable[[], dict[str, Path]]) -> lambda_.Code:
    """A Lambda code asset of exactly ``files`` (asset path -> source), staged without Docker."""
    return lambda_.Code.from_asset(
        str(source_dir),
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            # Never pulled: local bundling always succeeds. CDK requires an image all the same.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.14"),
            local=CopySources(files),
        ),
    )


def pipeline_code() -> lambda_.Code:
    return code_asset(REPO_ROOT / "lambdas", asset_files)
