"""The CDK app synthesizes offline through the pinned, locally installed CLI, as `npx cdk synth` does."""

import json
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_pinned_cdk_cli_synthesizes_the_app_offline(tmp_path):
    package = json.loads((REPO_ROOT / "package.json").read_text())
    pinned = package["devDependencies"]["aws-cdk"]
    installed = json.loads((REPO_ROOT / "node_modules/aws-cdk/package.json").read_text())["version"]
    assert installed == pinned

    result = subprocess.run(
        [
            "npx",
            "--no-install",
            "cdk",
            "synth",
            "--quiet",
            "--output",
            str(tmp_path / "cdk.out"),
            "-c",
            "notification_email=owner@example.com",
        ],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "CDK_DISABLE_CLI_TELEMETRY": "true",
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    template = json.loads((tmp_path / "cdk.out" / "DreamBoothService.template.json").read_text())
    kinds = {resource["Type"] for resource in template["Resources"].values()}
    assert {"AWS::S3::Bucket", "AWS::StepFunctions::StateMachine", "AWS::SNS::Subscription"} <= kinds
    # The default builds the trainer image in AWS: no Docker was needed for this synth.
    assert {"AWS::CodeBuild::Project", "AWS::ECR::Repository", "Custom::TrainerImage"} <= kinds
