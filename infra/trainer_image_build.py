"""The trainer image, built in AWS: ``trainer_image/`` as an S3 asset -> CodeBuild -> the stack's ECR.

No Docker on the deployer's machine. The image tag is the asset's hash of ``trainer_image/``; a custom
resource (CDK Provider: onEvent starts the build, isComplete polls it) makes the deploy wait for the
build and fail with the build log's tail. Its properties carry the hash, so it runs again only when
``trainer_image/`` changes.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CustomResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import custom_resources as cr
from constructs import Construct

from infra.functions import PipelineFunction, encrypted_log_group, powertools_layer_arn
from infra.lambda_code import pipeline_code
from infra.nag import acknowledge
from lambdas.pipeline.image_build_status import image_uri

# What the image does not need: the same exclusions as the local DockerImageAsset.
SOURCE_EXCLUDES = ["tests", "**/__pycache__", "*.egg-info"]
BUILD_TIMEOUT = Duration.minutes(90)
# Provider limit: the waiter state machine gives up after this (CodeBuild's own timeout ends first).
WAIT_TIMEOUT = Duration.hours(2)
POLL_INTERVAL = Duration.seconds(30)

# One shell runs them in order (buildspec 0.2); the first that fails ends the build.
BUILD_COMMANDS = [
    'REGISTRY="${REPOSITORY_URI%%/*}"',
    'aws ecr get-login-password --region "$AWS_REGION"'
    ' | docker login --username AWS --password-stdin "$REGISTRY"',
    # The base by digest: the Dockerfile's pin, or while it has none the digest its tag names today, said
    # in the log so it can be committed. Either way the image's labels record which one it was built on.
    'BASE_IMAGE="$(sed -n "s/^ARG BASE_IMAGE=//p" Dockerfile)"',
    'BASE_IMAGE_DIGEST="$(sed -n "s/^ARG BASE_IMAGE_DIGEST=//p" Dockerfile)"',
    'if [ -z "$BASE_IMAGE_DIGEST" ]; then'
    ' docker pull --platform linux/amd64 "$BASE_IMAGE"'
    ' && BASE_IMAGE_DIGEST="$(docker inspect --format "{{index .RepoDigests 0}}" "$BASE_IMAGE")"'
    ' && BASE_IMAGE_DIGEST="${BASE_IMAGE_DIGEST#*@}"'
    ' && echo "The Dockerfile pins no base digest: building on $BASE_IMAGE@$BASE_IMAGE_DIGEST;'
    ' commit it as ARG BASE_IMAGE_DIGEST=$BASE_IMAGE_DIGEST to make builds reproducible.";'
    " fi",
    'docker build --platform linux/amd64 --build-arg BASE_IMAGE_DIGEST="$BASE_IMAGE_DIGEST"'
    ' --tag "$REPOSITORY_URI:$IMAGE_TAG" .',
    'docker push "$REPOSITORY_URI:$IMAGE_TAG"',
]


class TrainerImageBuild(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        directory: Path,
        images_kept: int,
        log_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.source = s3_assets.Asset(self, "Source", path=str(directory), exclude=SOURCE_EXCLUDES)
        self.tag = self.source.asset_hash

        self.repository = ecr.Repository(
            self,
            "Repository",
            image_scan_on_push=True,
            # One tag per source hash, never overwritten: a job always runs the image it was given.
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            encryption=ecr.RepositoryEncryption.KMS,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    description=f"Keep the last {images_kept} trainer images",
                    max_image_count=images_kept,
                )
            ],
            # Images a finished job ran stay inspectable; deleting the stack keeps the repository.
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.image_uri = image_uri(self.repository.repository_uri, self.tag)

        self.build_logs = encrypted_log_group(self, "BuildLogs", log_key)
        self.project = codebuild.Project(
            self,
            "Project",
            description="Builds the DreamBooth trainer image from trainer_image/ and pushes it to ECR.",
            source=codebuild.Source.s3(bucket=self.source.bucket, path=self.source.s3_object_key),
            environment=codebuild.BuildEnvironment(
                build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                # A CUDA PyTorch image and its pip installs: 8 vCPU, 15 GB memory, 128 GB disk.
                compute_type=codebuild.ComputeType.LARGE,
                privileged=True,  # docker build needs the Docker daemon
            ),
            environment_variables={
                "REPOSITORY_URI": codebuild.BuildEnvironmentVariable(value=self.repository.repository_uri),
                "IMAGE_TAG": codebuild.BuildEnvironmentVariable(value=self.tag),
            },
            build_spec=codebuild.BuildSpec.from_object(
                {"version": "0.2", "phases": {"build": {"on-failure": "ABORT", "commands": BUILD_COMMANDS}}}
            ),
            encryption_key=log_key,
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=self.build_logs)
            ),
            timeout=BUILD_TIMEOUT,
            concurrent_build_limit=1,
        )
        self.repository.grant_pull_push(self.project)

        layer = lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", powertools_layer_arn())
        code = pipeline_code()

        def handler(name: str, function: str, description: str) -> PipelineFunction:
            return PipelineFunction(
                self,
                name,
                handler=f"lambdas.handlers.image_build.{function}",
                description=description,
                code=code,
                layer=layer,
                log_key=log_key,
                environment={},
                timeout=Duration.minutes(1),
            )

        self.on_event = handler("StartBuild", "on_event", "Starts the trainer image build (deploy time).")
        self.is_complete = handler(
            "CheckBuild", "is_complete", "Polls the trainer image build (deploy time)."
        )
        self.on_event.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["ecr:DescribeImages"], resources=[self.repository.repository_arn])
        )
        self.on_event.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["codebuild:StartBuild"], resources=[self.project.project_arn])
        )
        self.is_complete.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["codebuild:BatchGetBuilds"], resources=[self.project.project_arn])
        )
        self.is_complete.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["logs:GetLogEvents"], resources=[self.build_logs.log_group_arn])
        )

        self.provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=self.on_event.function,
            is_complete_handler=self.is_complete.function,
            query_interval=POLL_INTERVAL,
            total_timeout=WAIT_TIMEOUT,
            log_group=encrypted_log_group(self, "ProviderLogs", log_key),
            # The waiter only loops isComplete, whose encrypted log records every poll. Its own logging
            # would need CDK's grant of logs:PutLogEvents on "*", which least privilege rules out.
            disable_waiter_state_machine_logging=True,
        )
        self._trace_and_acknowledge()
        self.resource = CustomResource(
            self,
            "Image",
            service_token=self.provider.service_token,
            resource_type="Custom::TrainerImage",
            properties={
                "ProjectName": self.project.project_name,
                "RepositoryName": self.repository.repository_name,
                "RepositoryUri": self.repository.repository_uri,
                "ImageTag": self.tag,
                # A new trainer_image/ hash is a new resource; the same hash never rebuilds.
                "SourceHash": self.source.asset_hash,
            },
        )
        self.resource.node.add_dependency(self.project)

    def _trace_and_acknowledge(self) -> None:
        stack = Stack.of(self)
        waiter = self.provider.node.find_child("waiter-state-machine")
        waiter.node.default_child.add_property_override("TracingConfiguration.Enabled", True)
        waiter_role = waiter.node.find_child("Role")
        # Resource "*": X-Ray's PutTraceSegments/PutTelemetryRecords/GetSampling* have no resource type.
        waiter_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "xray:PutTraceSegments",
                    "xray:PutTelemetryRecords",
                    "xray:GetSamplingRules",
                    "xray:GetSamplingTargets",
                ],
                resources=["*"],
            )
        )

        def ref(construct: Construct) -> str:
            return stack.get_logical_id(construct.node.default_child)

        project_ref = ref(self.project)
        acknowledge(
            self.project.role,
            {
                "AwsSolutions-IAM5[Action::s3:GetBucket*]": "CDK's read grant on the build's source asset.",
                "AwsSolutions-IAM5[Action::s3:GetObject*]": "CDK's read grant on the build's source asset.",
                "AwsSolutions-IAM5[Action::s3:List*]": "CDK's read grant on the build's source asset.",
                "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]": "CDK's grant on the build's key.",
                "AwsSolutions-IAM5[Action::kms:ReEncrypt*]": "CDK's grant on the build's key.",
                # Resource "*": ecr:GetAuthorizationToken (the registry login) has no resource type.
                "AwsSolutions-IAM5[Resource::*]": "ecr:GetAuthorizationToken supports no resource scoping.",
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:"
                f"log-group:/aws/codebuild/<{project_ref}>:*]": "CodeBuild's default log group.",
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:codebuild:<AWS::Region>:<AWS::AccountId>:"
                f"report-group/<{project_ref}>-*]": "CodeBuild's report groups of this project only.",
            },
        )
        acknowledge(
            self.project,
            {
                "AwsSolutions-CB3": "docker build needs privileged mode: it builds the trainer image.",
            },
        )
        handlers = (self.on_event.function, self.is_complete.function)
        framework = [
            self.provider.node.find_child(name)
            for name in ("framework-onEvent", "framework-isComplete", "framework-onTimeout")
        ]
        invoke_findings = {
            f"AwsSolutions-IAM5[Resource::<{ref(fn)}.Arn>:*]": (
                "CDK's invoke grant also covers the function's versions and aliases."
            )
            for fn in (*handlers, *framework)
        }
        for function in framework:
            acknowledge(
                function.role,
                {
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole]": (
                        "CDK's custom-resource Provider framework functions come with this role."
                    ),
                    **invoke_findings,
                },
            )
        acknowledge(
            waiter_role, {**invoke_findings, "AwsSolutions-IAM5[Resource::*]": "X-Ray tracing actions."}
        )
        acknowledge(
            waiter.node.default_child,
            {
                "AwsSolutions-SF1": (
                    "The waiter only loops isComplete, whose encrypted log group records every poll."
                ),
                "AwsSolutions-SF2": "Tracing is on through a property override, which cdk-nag does not read.",
            },
        )
