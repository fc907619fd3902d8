"""What a SageMaker training job runs as: the trainer image (built from ``trainer_image/``) and its role."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.nag import acknowledge
from infra.trainer_image_build import SOURCE_EXCLUDES, TrainerImageBuild

SAGEMAKER_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


class Training(Construct):
    """The image asset and the execution role; bucket grants are wired in the stack."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        trainer_image_directory: Path,
        image_build: str = "codebuild",
        images_kept: int = 10,
        log_key: kms.IKey | None = None,
        subnet_ids: tuple[str, ...] = (),
        security_group_ids: tuple[str, ...] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)

        # The image jobs run: built in AWS by default (no Docker here), or by the deployer's Docker.
        self.image_build: TrainerImageBuild | None = None
        if image_build == "local":
            asset = ecr_assets.DockerImageAsset(
                self,
                "TrainerImage",
                directory=str(trainer_image_directory),
                platform=ecr_assets.Platform.LINUX_AMD64,
                exclude=SOURCE_EXCLUDES,
            )
            self.image_uri, repository = asset.image_uri, asset.repository
        else:
            if log_key is None:
                raise ValueError("building the trainer image in AWS needs the stack's logs key")
            self.image_build = TrainerImageBuild(
                self,
                "TrainerImageBuild",
                directory=trainer_image_directory,
                images_kept=images_kept,
                log_key=log_key,
            )
            self.image_uri, repository = self.image_build.image_uri, self.image_build.repository

        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="Runs DreamBooth training jobs: reads its batch, writes its model.",
        )
        repository.grant_pull(self.execution_role)
        # Resource "*": ecr:GetAuthorizationToken is account-wide (the registry login), no resource type.
        self.execution_role.add_to_policy(
            iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"])
        )
        log_group_arn = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"{SAGEMAKER_LOG_GROUP}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.execution_role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                resources=[log_group_arn],
            )
        )
        # Resource "*": cloudwatch:PutMetricData has no resource type; the namespace condition narrows it.
        self.execution_role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            )
        )
        # Training jobs in your VPC (optional): SageMaker attaches an ENI in one of the subnets.
        self.vpc_config: dict | None = None
        if subnet_ids:
            self.vpc_config = {"Subnets": list(subnet_ids), "SecurityGroupIds": list(security_group_ids)}
            self._grant_vpc_access(stack, subnet_ids, security_group_ids)

        acknowledge(
            self.execution_role,
            {
                "AwsSolutions-IAM5[Resource::*]": (
                    "ecr:GetAuthorizationToken, cloudwatch:PutMetricData and (VPC training only) EC2's "
                    "Describe* support no resource scoping; PutMetricData is limited to SageMaker "
                    "namespaces by condition."
                ),
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
                f"{SAGEMAKER_LOG_GROUP}:*]": "SageMaker names one log stream per job inside this log group.",
            },
        )

    def _grant_vpc_access(
        self, stack: Stack, subnet_ids: tuple[str, ...], security_group_ids: tuple[str, ...]
    ) -> None:
        """What SageMaker's VPC training needs from the execution role (its documented EC2 actions)."""

        def ec2(resource: str, name: str) -> str:
            return stack.format_arn(service="ec2", resource=resource, resource_name=name)

        self.execution_role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "ec2:CreateNetworkInterface",
                    "ec2:CreateNetworkInterfacePermission",
                    "ec2:DeleteNetworkInterface",
                    "ec2:DeleteNetworkInterfacePermission",
                ],
                resources=[
                    ec2("network-interface", "*"),
                    *(ec2("subnet", s) for s in subnet_ids),
                    *(ec2("security-group", g) for g in security_group_ids),
                ],
            )
        )
        # Resource "*": EC2's Describe* APIs support no resource-level permissions.
        self.execution_role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeVpcs",
                    "ec2:DescribeDhcpOptions",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                ],
                resources=["*"],
            )
        )
        acknowledge(
            self.execution_role,
            {
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:"
                "network-interface/*]": "SageMaker creates the job's network interface: its id is new.",
            },
        )
