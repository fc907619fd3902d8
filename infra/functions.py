"""One pipeline Lambda: its own role (least privilege, no managed policies), log group and X-Ray tracing."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import jsii
from aws_cdk import (
    ArnFormat,
    AssetHashType,
    Aws,
    BundlingOptions,
    DockerImage,
    Duration,
    ILocalBundling,
    RemovalPolicy,
    Stack,
)
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.nag import acknowledge

# The newest Python that both Lambda (CDK 2.275: Runtime.PYTHON_3_14) and the Powertools v3 layer
# support: the layer is published per runtime as AWSLambdaPowertoolsPythonV3-python314-<arch>.
RUNTIME = lambda_.Runtime.PYTHON_3_14
# Powertools for AWS Lambda (Python) v3, public layer by ARN: it bundles pydantic v2. Layer 27 is
# Powertools 3.23.0; the handlers use only APIs that 3.x has had since 3.0 (Logger, batch, parser).
POWERTOOLS_ACCOUNT = "017000801446"
POWERTOOLS_LAYER_VERSION = 27
LOG_RETENTION = logs.RetentionDays.THREE_MONTHS


def powertools_layer_name(runtime: lambda_.Runtime = RUNTIME, architecture: str = "x86_64") -> str:
    """``python3.14`` -> ``AWSLambdaPowertoolsPythonV3-python314-x86_64`` (Powertools' naming)."""
    return f"AWSLambdaPowertoolsPythonV3-{runtime.name.replace('.', '')}-{architecture}"


REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDA_REQUIREMENTS = REPO_ROOT / "lambdas" / "requirements.txt"
WHEEL_CACHE = REPO_ROOT / ".cache" / "lambda-wheels"
# Layers carry wheels built for the Lambda runtime's Python, not the developer's: manylinux2014 wheels
# load on every Lambda Python runtime (Amazon Linux 2 and 2023).
LAMBDA_PLATFORM = "manylinux2014_x86_64"
LAMBDA_PYTHON = RUNTIME.name.removeprefix("python")  # "3.14"
LAMBDA_ABI = "cp" + LAMBDA_PYTHON.replace(".", "")  # "cp314"


def powertools_layer_arn() -> str:
    return (
        f"arn:{Aws.PARTITION}:lambda:{Aws.REGION}:{POWERTOOLS_ACCOUNT}:layer:"
        f"{powertools_layer_name()}:{POWERTOOLS_LAYER_VERSION}"
    )


def logs_key(scope: Construct, construct_id: str) -> kms.Key:
    """The stack's key for its Lambda (and build) log groups: CloudWatch Logs of this region may use it."""
    key = kms.Key(
        scope,
        construct_id,
        enable_key_rotation=True,
        description="Encrypts the DreamBooth service's Lambda and image-build log groups.",
    )
    key.add_to_resource_policy(
        iam.PolicyStatement(
            actions=[
                "kms:Encrypt*",
                "kms:Decrypt*",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
                "kms:Describe*",
            ],
            principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
            # The key policy's own resource is the key ("*" in a key policy means this key).
            resources=["*"],
            conditions={
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": Stack.of(scope).format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name="*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                }
            },
        )
    )
    return key


def encrypted_log_group(scope: Construct, construct_id: str, key: kms.IKey) -> logs.LogGroup:
    return logs.LogGroup(
        scope, construct_id, retention=LOG_RETENTION, encryption_key=key, removal_policy=RemovalPolicy.DESTROY
    )


class PipelineFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        description: str,
        code: lambda_.Code,
        layer: lambda_.ILayerVersion,
        log_key: kms.IKey,
        environment: dict[str, str],
        timeout: Duration,
        memory_size: int = 256,
        extra_layers: list[lambda_.ILayerVersion] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = encrypted_log_group(self, "Logs", log_key)
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler=handler,
            code=code,
            layers=[layer, *(extra_layers or [])],
            description=description,
            environment={"POWERTOOLS_SERVICE_NAME": "dreambooth-pipeline", **environment},
            timeout=timeout,
            memory_size=memory_size,
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            tracing=lambda_.Tracing.ACTIVE,
        )
        acknowledge(
            self.role,
            {
                # Resource "*": X-Ray's PutTraceSegments and PutTelemetryRecords (tracing=ACTIVE).
                "AwsSolutions-IAM5[Resource::*]": (
                    "X-Ray's PutTraceSegments and PutTelemetryRecords support no resource scoping."
                ),
            },
        )


def pinned_requirement(name: str, requirements: Path = LAMBDA_REQUIREMENTS) -> str:
    """``name==version`` as pinned in lambdas/requirements.txt (one pin for the tests and the Lambda)."""
    for line in requirements.read_text().splitlines():
        match = re.match(rf"^\s*({re.escape(name)}==[^\s#]+)", line, re.IGNORECASE)
        if match:
            return match.group(1)
    raise ValueError(f"{name} is not pinned in {requirements}")


def lambda_wheel(requirement: str, cache: Path = WHEEL_CACHE) -> Path:
    """The requirement's wheel for the Lambda runtime, downloaded once from the package registry."""
    name, version = requirement.split("==")
    pattern = f"{name.lower()}-{version}-{LAMBDA_ABI}-{LAMBDA_ABI}-*manylinux2014_x86_64*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        command += [
            "--platform",
            LAMBDA_PLATFORM,
            "--python-version",
            LAMBDA_PYTHON,
            "--implementation",
            "cp",
        ]
        result = subprocess.run([*command, "-d", str(cache), requirement], capture_output=True, text=True)
        found = sorted(cache.glob(pattern))
        if result.returncode != 0 or not found:
            raise RuntimeError(
                f"cannot fetch the Lambda wheel for {requirement} ({LAMBDA_PLATFORM}): "
                f"{result.stderr.strip()[-500:]}; check the connection to the package registry"
            )
    return found[-1]


@jsii.implements(ILocalBundling)
class UnpackWheel:
    """Local bundling of a layer: the wheel unpacked under ``python/``; never falls back to Docker."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel

    def try_bundle(self, output_dir: str, *args, **kwargs) -> bool:
        with zipfile.ZipFile(self.wheel) as archive:
            archive.extractall(Path(output_dir) / "python")
        return True


def pillow_layer(scope: Construct) -> lambda_.LayerVersion:
    """Pillow for the validation Lambda, which decodes every photo with the trainer's own rule."""
    wheel = lambda_wheel(pinned_requirement("pillow"))
    return lambda_.LayerVersion(
        scope,
        "PillowLayer",
        code=lambda_.Code.from_asset(
            str(wheel.parent),
            asset_hash=wheel.name,
            asset_hash_type=AssetHashType.CUSTOM,
            bundling=BundlingOptions(
                image=DockerImage.from_registry(f"public.ecr.aws/sam/build-{RUNTIME.name}"),
                local=UnpackWheel(wheel),
            ),
        ),
        compatible_runtimes=[RUNTIME],
        compatible_architectures=[lambda_.Architecture.X86_64],
        description=f"{wheel.name.split('-cp')[0]} ({LAMBDA_PLATFORM}) for image validation",
    )
