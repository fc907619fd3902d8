"""One pipeline Lambda: its own role (least privilege, no managed policies), log group and X-Ray tracing."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.nag import acknowledge

# Powertools for AWS Lambda (Python) v3, public layer by ARN: it bundles pydantic v2. Layer 27 is
# Powertools 3.23.0; the handlers use only APIs that 3.x has had since 3.0 (Logger, batch, parser).
POWERTOOLS_ACCOUNT = "017000801446"
POWERTOOLS_LAYER_VERSION = 27
RUNTIME = lambda_.Runtime.PYTHON_3_11


def powertools_layer_arn() -> str:
    return (
        f"arn:{Aws.PARTITION}:lambda:{Aws.REGION}:{POWERTOOLS_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-python311-x86_64:{POWERTOOLS_LAYER_VERSION}"
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
        environment: dict[str, str],
        timeout: Duration,
        memory_size: int = 256,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self, "Logs", retention=logs.RetentionDays.THREE_MONTHS, removal_policy=RemovalPolicy.DESTROY
        )
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler=handler,
            code=code,
            layers=[layer],
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
                "AwsSolutions-IAM5[Resource::*]": (
                    "X-Ray's PutTraceSegments and PutTelemetryRecords support no resource scoping."
                ),
            },
        )
        acknowledge(
            self.function,
            {
                "AwsSolutions-L1": (
                    "Python 3.11 is the project's one Python version: the trainer image, the tests and "
                    "the local mode run it, so the Lambdas run exactly what is tested."
                ),
            },
        )
