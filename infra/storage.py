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


def retention_rules(
    *, uploads_days: int, checkpoints_days: int, noncurrent_days: int
) -> list[s3.LifecycleRule]:
    """The data bucket's retention (context: uploads/checkpoints/noncurrent_versions_retention_days).

    Models and class images never expire; an overwritten or deleted object stays recoverable as a
    noncurrent version for ``noncurrent_days``.
    """
    return [
        s3.LifecycleRule(
            id="AbortIncompleteUploads", abort_incomplete_multipart_upload_after=Duration.days(1)
        ),
        s3.LifecycleRule(
            id="ExpireUploads", prefix=s3_layout.UPLOADS_ROOT, expiration=Duration.days(uploads_days)
        ),
        s3.LifecycleRule(
            id="ExpireCheckpoints",
            prefix=s3_layout.CHECKPOINTS_ROOT,
            expiration=Duration.days(checkpoints_days),
            # SageMaker rewrites checkpoint files all along a job: their old versions are worth nothing.
            noncurrent_version_expiration=Duration.days(1),
        ),
        s3.LifecycleRule(
            id="ExpireNoncurrentVersions", noncurrent_version_expiration=Duration.days(noncurrent_days)
        ),
        s3.LifecycleRule(id="RemoveExpiredDeleteMarkers", expired_object_delete_marker=True),
        s3.LifecycleRule(
            id="ExpireTrainingInput",
            prefix=s3_layout.TRAINING_INPUT_ROOT,
            expiration=Duration.days(TRAINING_INPUT_EXPIRY_DAYS),
        ),
        s3.LifecycleRule(
            id="ExpireSageMakerOutput",
            prefix=s3_layout.SAGEMAKER_OUTPUT_ROOT,
            expiration=Duration.days(SAGEMAKER_OUTPUT_EXPIRY_DAYS),
        ),
    ]


class Storage(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        retain_data_on_delete: bool,
        uploads_retention_days: int = 30,
        checkpoints_retention_days: int = 7,
        noncurrent_versions_retention_days: int = 30,
    ) -> None:
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
                    # POST: the HTTP API's presigned upload targets, usable from a browser too.
                    allowed_methods=[s3.HttpMethods.PUT, s3.HttpMethods.POST, s3.HttpMethods.GET],
                    allowed_origins=["*"],
                    allowed_headers=["*"],
                    max_age=3000,
                )
            ],
            versioned=True,
            lifecycle_rules=retention_rules(
                uploads_days=uploads_retention_days,
                checkpoints_days=checkpoints_retention_days,
                noncurrent_days=noncurrent_versions_retention_days,
            ),
            removal_policy=removal,
        )
        # Upload events reach the pipeline through EventBridge. Set natively: CDK's `event_bridge_enabled`
        # goes through a notification custom-resource Lambda that the stack does not need.
        data = self.bucket.node.default_child
        data.add_property_override(
            "NotificationConfiguration.EventBridgeConfiguration.EventBridgeEnabled", True
        )
