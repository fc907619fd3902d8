"""infra/lambda_code.py: the asset holds the handlers and the trainer's pure modules, and imports alone."""

import json
import subprocess
import sys
from pathlib import Path

from infra.lambda_code import asset_files


def test_asset_ships_the_lambdas_and_only_the_pure_trainer_modules():
    files = asset_files()
    assert "lambdas/handlers/upload_events.py" in files and "lambdas/jobs/spec.py" in files
    trainer = sorted(name for name in files if name.startswith("dreambooth_trainer/"))
    assert trainer == [
        "dreambooth_trainer/__init__.py",
        "dreambooth_trainer/family_table.py",
        "dreambooth_trainer/hyperparameters.py",
        "dreambooth_trainer/image_files.py",
        "dreambooth_trainer/metrics.py",
        "dreambooth_trainer/subject_defaults.py",
    ]
    assert not any("__pycache__" in name or not name.endswith(".py") for name in files)


def lambda_asset_directory(stack_artifact) -> Path:
    manifest = json.loads(
        Path(stack_artifact.assembly.directory, f"{stack_artifact.stack_name}.assets.json").read_text()
    )
    function = next(
        r
        for r in stack_artifact.template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"].startswith("lambdas.handlers.")
    )
    asset_hash = function["Properties"]["Code"]["S3Key"].removesuffix(".zip")
    source = manifest["files"][asset_hash]["source"]
    return Path(stack_artifact.assembly.directory, source["path"])


def test_the_staged_asset_imports_every_handler_without_the_repository_or_torch(stack_artifact, tmp_path):
    """What Lambda will run: the asset folder alone on the path (plus the layer's pydantic/Powertools)."""
    asset = lambda_asset_directory(stack_artifact)
    assert (asset / "dreambooth_trainer" / "hyperparameters.py").is_file()
    script = (
        "import sys; sys.path = [p for p in sys.path if 'work/main' not in p or 'site-packages' in p]\n"
        f"sys.path.insert(0, {str(asset)!r})\n"
        "import lambdas.handlers.upload_events, lambdas.handlers.check_batch\n"
        "import lambdas.handlers.validate_batch, lambdas.handlers.build_training_request\n"
        "import lambdas.handlers.finish_run, lambdas.handlers.image_build\n"
        "import dreambooth_trainer, dreambooth_trainer.family_table, dreambooth_trainer.subject_defaults\n"
        f"assert dreambooth_trainer.__file__.startswith({str(asset)!r}), dreambooth_trainer.__file__\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
