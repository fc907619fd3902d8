"""infra/trainer_image_build.py: the trainer image built by CodeBuild, and the deploy waiting for it."""

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Match, Template

from infra.trainer_image_build import BUILD_COMMANDS, TrainerImageBuild

REPO_ROOT = Path(__file__).resolve().parents[2]


def one(resources, kind):
    found = [(k, r) for k, r in resources.items() if r["Type"] == kind]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def image_build(resources):
    _, custom = one(resources, "Custom::TrainerImage")
    return custom


def test_repository_scans_on_push_keeps_the_last_images_and_never_overwrites_a_tag(resources):
    _, repository = one(resources, "AWS::ECR::Repository")
    props = repository["Properties"]
    assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert props["ImageTagMutability"] == "IMMUTABLE"
    assert props["EncryptionConfiguration"] == {"EncryptionType": "KMS"}
    policy = json.loads(props["LifecyclePolicy"]["LifecyclePolicyText"])
    (rule,) = policy["rules"]
    assert rule["selection"]["countType"] == "imageCountMoreThan" and rule["selection"]["countNumber"] == 10
    assert rule["action"] == {"type": "expire"}


def test_codebuild_builds_the_source_asset_privileged_and_pushes_to_the_repository(resources, stack_artifact):
    repository_id, _ = one(resources, "AWS::ECR::Repository")
    _, project = one(resources, "AWS::CodeBuild::Project")
    props = project["Properties"]
    assert props["Source"]["Type"] == "S3"
    assert props["Environment"]["PrivilegedMode"] is True
    assert props["Environment"]["ComputeType"] == "BUILD_GENERAL1_LARGE"
    assert "EncryptionKey" in props and props["LogsConfig"]["CloudWatchLogs"]["Status"] == "ENABLED"
    variables = {v["Name"]: v["Value"] for v in props["Environment"]["EnvironmentVariables"]}
    assert repository_id in json.dumps(variables["REPOSITORY_URI"])
    build_text = props["Source"]["BuildSpec"]
    assert "docker build" in build_text and "docker push" in build_text and "ABORT" in build_text
    # The source asset is trainer_image/ without its tests: it holds the Dockerfile the build runs.
    manifest = json.loads(
        Path(stack_artifact.assembly.directory, f"{stack_artifact.stack_name}.assets.json").read_text()
    )
    assert manifest["dockerImages"] == {}
    tag = variables["IMAGE_TAG"]
    staged = Path(stack_artifact.assembly.directory, manifest["files"][tag]["source"]["path"])
    assert (staged / "Dockerfile").is_file() and (staged / "dreambooth_trainer").is_dir()
    assert not (staged / "tests").exists()


def test_the_build_resource_carries_the_source_hash_as_the_tag(resources, image_build):
    props = image_build["Properties"]
    assert props["ImageTag"] == props["SourceHash"]
    assert len(props["SourceHash"]) == 64
    for key in ("ProjectName", "RepositoryName", "RepositoryUri", "ServiceToken"):
        assert key in props


def test_the_provider_polls_the_build_with_is_complete(resources):
    handlers = {
        r["Properties"]["Handler"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and "image_build" in r["Properties"]["Handler"]
    }
    assert handlers == {"lambdas.handlers.image_build.on_event", "lambdas.handlers.image_build.is_complete"}
    waiters = [
        r for k, r in resources.items() if r["Type"] == "AWS::StepFunctions::StateMachine" and "waiter" in k
    ]
    (waiter,) = waiters
    assert waiter["Properties"]["TracingConfiguration"] == {"Enabled": True}
    assert "LoggingConfiguration" not in waiter["Properties"]  # isComplete logs each poll


def test_training_jobs_use_the_built_tag_and_runs_wait_for_the_build(resources, image_build):
    custom_id, _ = one(resources, "Custom::TrainerImage")
    repository_id, _ = one(resources, "AWS::ECR::Repository")
    (state_machine_id,) = [
        k
        for k in resources
        if k.startswith("PipelineRunsStateMachine")
        and resources[k]["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    state_machine = resources[state_machine_id]
    assert custom_id in state_machine["DependsOn"]
    definition = json.dumps(state_machine["Properties"]["DefinitionString"])
    assert f":{image_build['Properties']['ImageTag']}" in definition and repository_id in definition


def test_build_handlers_may_only_touch_their_project_repository_and_log(template):
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": "codebuild:StartBuild",
                                "Resource": {"Fn::GetAtt": [Match.any_value(), "Arn"]},
                            }
                        )
                    ]
                )
            }
        },
    )


def synth_construct(directory: Path) -> dict:
    app = cdk.App()
    stack = cdk.Stack(app, "ImageOnly")
    TrainerImageBuild(stack, "Build", directory=directory, images_kept=3, log_key=kms.Key(stack, "Key"))
    return Template.from_stack(stack).to_json()


def test_only_a_change_under_trainer_image_rebuilds(tmp_path):
    source = tmp_path / "trainer_image"
    shutil.copytree(
        REPO_ROOT / "trainer_image", source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )

    def source_hash() -> str:
        template = synth_construct(source)
        ((_, custom),) = [
            (k, r) for k, r in template["Resources"].items() if r["Type"] == "Custom::TrainerImage"
        ]
        return custom["Properties"]["SourceHash"]

    first = source_hash()
    assert source_hash() == first  # nothing changed: same resource properties, no build
    (source / "tests").mkdir(exist_ok=True)
    (source / "tests" / "test_new.py").write_text("# excluded from the image\n")
    assert source_hash() == first
    (source / "requirements.txt").write_text((source / "requirements.txt").read_text() + "\n# changed\n")
    assert source_hash() != first


FAKE_DIGEST = "sha256:" + "ab" * 32
FAKE_DOCKER = f"""#!/bin/sh
echo "docker $*" >> "$CALLS"
case "$1" in
  pull) [ -z "$PULL_FAILS" ] || {{ echo "pull: registry unreachable" >&2; exit 1; }} ;;
  inspect) echo "public.ecr.aws/docker/library/python@{FAKE_DIGEST}" ;;
esac
"""
CODEBUILD_SHELL = """
for command in "${COMMANDS[@]}"; do
  eval "$command" || { echo "build failed: $command" >&2; exit 1; }
done
"""


def run_build_commands(tmp_path: Path, dockerfile: str, **env: str):
    """BUILD_COMMANDS as CodeBuild runs them (one shell, in order, stop at the first failure), with stand-ins
    for docker and aws that record their calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "aws").write_text("#!/bin/sh\necho secret\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    source = tmp_path / "source"
    source.mkdir()
    (source / "Dockerfile").write_text(dockerfile)
    calls = tmp_path / "calls"
    script = "COMMANDS=(" + " ".join(shlex.quote(c) for c in BUILD_COMMANDS) + ")\n" + CODEBUILD_SHELL
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=source,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "CALLS": str(calls),
            "REPOSITORY_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer",
            "IMAGE_TAG": "abc",
            "AWS_REGION": "us-east-1",
            **env,
        },
    )
    return done, calls.read_text().splitlines() if calls.exists() else []


DOCKERFILE = (REPO_ROOT / "trainer_image" / "Dockerfile").read_text()


def test_an_unpinned_base_is_built_on_its_digest_of_today_and_the_log_says_what_to_commit(tmp_path):
    assert "\nARG BASE_IMAGE_DIGEST=\n" in DOCKERFILE  # the checked-in Dockerfile has no pin yet
    done, calls = run_build_commands(tmp_path, DOCKERFILE)
    assert done.returncode == 0, done.stderr
    assert (
        calls[1]
        == "docker pull --platform linux/amd64 public.ecr.aws/docker/library/python:3.12-slim-bookworm"
    )
    build = calls[3]
    assert build.startswith("docker build --platform linux/amd64 ")
    assert f"--build-arg BASE_IMAGE_DIGEST={FAKE_DIGEST} " in build
    assert calls[4] == "docker push 123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:abc"
    assert f"commit it as ARG BASE_IMAGE_DIGEST={FAKE_DIGEST}" in done.stdout


def test_a_pinned_base_is_built_on_its_pin_without_a_pull(tmp_path):
    pinned = "sha256:" + "cd" * 32
    done, calls = run_build_commands(
        tmp_path, DOCKERFILE.replace("\nARG BASE_IMAGE_DIGEST=\n", f"\nARG BASE_IMAGE_DIGEST={pinned}\n")
    )
    assert done.returncode == 0, done.stderr
    assert not any(call.startswith("docker pull") for call in calls)
    (build,) = [call for call in calls if call.startswith("docker build")]
    assert f"--build-arg BASE_IMAGE_DIGEST={pinned} " in build
    assert "commit it" not in done.stdout


def test_a_base_that_cannot_be_pulled_ends_the_build_before_docker_build(tmp_path):
    done, calls = run_build_commands(tmp_path, DOCKERFILE, PULL_FAILS="1")
    assert done.returncode != 0 and "registry unreachable" in done.stderr
    assert not any(call.startswith(("docker build", "docker push")) for call in calls)
