"""The service's one data bucket (uploads, models, class images, checkpoints) and its access-log bucket."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.nag import acknowledge
from lambdas.jobs import s3_layout
from lambdas.jobs.spec import MAX_RUNTIME_LIMIT_SECONDS
from lambdas.jobs.training_request import SPOT_WAIT_FACTOR

# A run's frozen input must outlive the longest run any limit allows (runtime plus spot wait), plus a day.
TRAINING_INPUT_EXPIRY_DAYS = -(-MAX_RUNTIME_LIMIT_SECONDS * SPOT_WAIT_FACTOR // 86400) + 1
# SageMaker's own model.tar.gz duplicates the model folder the trainer wrote: nobody needs it long.
SAGEMAKER_OUTPUT_EXPIRY_DAYS = 7


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, retain_data_on_delete: bool) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if retain_data_on_delete else RemovalPolicy.DESTROY

        self.access_logs_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
            removal_policy=removal,
            auto_delete_objects=False,
        )
        acknowledge(
            self.access_logs_bucket,
            {"AwsSolutions-S1": "This is the access-log bucket itself; logging it into itself would loop."},
        )

        self.bucket = s3.Bucket(
            self,
            "Data",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="data-bucket/",
            cors=[
                s3.CorsRule(
                    allowed_methods=[s3.HttpMethods.PUT, s3.HttpMethods.GET],
                    allowed_origins=["*"],
                    allowed_headers=["*"],
                    max_age=3000,
                )
            ],
            lifecycle_rules=[
                s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(7)),
                s3.LifecycleRule(prefix=s3_layout.CHECKPOINTS_ROOT, expiration=Duration.days(30)),
                s3.LifecycleRule(
                    prefix=s3_layout.TRAINING_INPUT_ROOT, expiration=Duration.days(TRAINING_INPUT_EXPIRY_DAYS)
                ),
                s3.LifecycleRule(
                    prefix=s3_layout.SAGEMAKER_OUTPUT_ROOT,
                    expiration=Duration.days(SAGEMAKER_OUTPUT_EXPIRY_DAYS),
                ),
            ],
            removal_policy=removal,
        )
        # Upload events reach the pipeline through EventBridge. Set natively: CDK's `event_bridge_enabled`
        # goes through a notification custom-resource Lambda that the stack does not need.
        data = self.bucket.node.default_child
        data.add_property_override(
            "NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True
        )
