"""The service's one stack: composes one construct per logical unit and wires grants and outputs."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Annotations, CfnOutput, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.api import Api
from infra.functions import logs_key
from infra.monitoring import Monitoring
from infra.nag import acknowledge
from infra.notifications import Notifications
from infra.pipeline import Pipeline
from infra.settings import ServiceSettings
from infra.storage import Storage
from infra.training import Training
from lambdas.jobs import s3_layout

REPO_ROOT = Path(__file__).resolve().parent.parent


class DreamBoothStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, settings: ServiceSettings, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings

        infra = settings.infra
        self.storage = Storage(
            self,
            "Storage",
            retain_data_on_delete=settings.retain_data_on_delete,
            uploads_retention_days=infra.uploads_retention_days,
            checkpoints_retention_days=infra.checkpoints_retention_days,
            noncurrent_versions_retention_days=infra.noncurrent_versions_retention_days,
        )
        self.notifications = Notifications(self, "Notifications", email=settings.notification_email)

        bucket = self.storage.bucket
        self.logs_key = logs_key(self, "LogsKey")
        self.training = Training(
            self,
            "Training",
            trainer_image_directory=REPO_ROOT / "trainer_image",
            image_build=infra.image_build,
            images_kept=infra.trainer_images_kept,
            log_key=self.logs_key,
            subnet_ids=infra.training_subnet_ids,
            security_group_ids=infra.training_security_group_ids,
        )
        grant_training_data_access(bucket, self.training.execution_role)

        self.pipeline = Pipeline(
            self,
            "Pipeline",
            bucket=bucket,
            topic=self.notifications.topic,
            training_role=self.training.execution_role,
            training_image_uri=self.training.image_uri,
            job_defaults=settings.job_defaults,
            limits=settings.limits,
            retain_data_on_delete=settings.retain_data_on_delete,
            log_key=self.logs_key,
            training_retry_seconds=settings.training_retry_seconds,
            training_queue=settings.training_queue,
            training_vpc_config=self.training.vpc_config,
            training_network_isolation=infra.training_network_isolation,
        )
        # The state machine publishes to the encrypted topic: SNS needs the key on the publisher's behalf.
        self.notifications.encryption_key.grant(
            self.pipeline.state_machine.role, "kms:GenerateDataKey", "kms:Decrypt"
        )

        self.monitoring = Monitoring(
            self,
            "Monitoring",
            state_machine=self.pipeline.state_machine,
            upload_queue=self.pipeline.queue,
            dead_letter_queue=self.pipeline.dead_letter_queue,
            finish_run_logs=self.pipeline.finish_run.log_group,
            notification_topic=self.notifications.topic,
            topic_key=self.notifications.encryption_key,
            ops_email=infra.ops_email,
            alarm_topic_arn=infra.alarm_topic_arn,
        )

        if self.training.image_build is not None:
            # Runs start only once the image they name is in ECR: the deploy waits for the build first.
            self.pipeline.state_machine.node.add_dependency(self.training.image_build.resource)

        self.api = Api(
            self,
            "Api",
            bucket=bucket,
            table=self.pipeline.table,
            topic=self.notifications.topic,
            topic_key=self.notifications.encryption_key,
            state_machine=self.pipeline.state_machine,
            job_defaults=settings.job_defaults,
            limits=settings.limits,
            log_key=self.logs_key,
            auth=self.node.try_get_context("api_auth") or "iam",
            import_buckets=tuple(
                b for b in str(self.node.try_get_context("api_import_buckets") or "").split(",") if b
            ),
        )

        if not settings.notification_email:
            Annotations.of(self).add_warning_v2(
                "dreambooth:no-email",
                "No notification_email in context: nobody is e-mailed when a job ends. "
                "Deploy with: cdk deploy -c notification_email=you@example.com",
            )

        CfnOutput(self, "BucketName", value=bucket.bucket_name)
        CfnOutput(
            self, "UploadPrefix", value=f"s3://{bucket.bucket_name}/{s3_layout.UPLOADS_ROOT}<job-name>/"
        )
        CfnOutput(self, "ModelsPrefix", value=f"s3://{bucket.bucket_name}/{s3_layout.MODELS_ROOT}")
        CfnOutput(self, "NotificationTopicArn", value=self.notifications.topic.topic_arn)
        CfnOutput(self, "TrainerImageUri", value=self.training.image_uri)
        CfnOutput(self, "StateMachineArn", value=self.pipeline.state_machine.state_machine_arn)
        CfnOutput(self, "DashboardUrl", value=self.monitoring.dashboard_url)
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.alarm_topic.topic_arn)
        CfnOutput(self, "JobsTableName", value=self.pipeline.table.table_name)
        CfnOutput(self, "UploadEventsQueueUrl", value=self.pipeline.queue.queue_url)
        CfnOutput(self, "ApiUrl", value=self.api.rest_api.url)
        CfnOutput(self, "WebhookSecretArn", value=self.api.webhook_secret.secret_arn)


# What a training job reads and writes, by key prefix (see lambdas/jobs/s3_layout.py).
# A job reads its run's frozen input, never the live upload folder.
TRAINING_READS = (s3_layout.TRAINING_INPUT_ROOT, s3_layout.CLASS_IMAGES_ROOT, s3_layout.BASE_MODELS_ROOT)
TRAINING_WRITES = (
    s3_layout.MODELS_ROOT,
    s3_layout.CLASS_IMAGES_ROOT,
    s3_layout.CHECKPOINTS_ROOT,
    s3_layout.SAGEMAKER_OUTPUT_ROOT,
)


def grant_training_data_access(bucket: s3.IBucket, role: iam.Role) -> None:
    """Exact actions on exact prefixes: a job can read its inputs and write models, nothing else."""
    readable = sorted(set(TRAINING_READS) | set(TRAINING_WRITES))
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in readable]}},
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bucket.arn_for_objects(f"{prefix}*") for prefix in readable]
        )
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"],
            resources=[bucket.arn_for_objects(f"{prefix}*") for prefix in TRAINING_WRITES],
        )
    )
    bucket_ref = role.stack.get_logical_id(bucket.node.default_child)
    acknowledge(
        role,
        {
            f"AwsSolutions-IAM5[Resource::<{bucket_ref}.Arn>/{prefix}*]": (
                f"Training jobs read or write any object under {prefix}: one folder per job and run."
            )
            for prefix in readable
        },
    )
