"""From an upload to a notification: jobs table, upload queue, EventBridge rule, Lambdas, state machine.

S3 (EventBridge enabled) -> rule "Object Created under uploads/" -> SQS (encrypted, DLQ) -> intake
Lambda (partial batch failures) -> jobs table + one execution per run of :class:`RunWorkflow`.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.functions import PipelineFunction, pillow_layer, powertools_layer_arn
from infra.lambda_code import pipeline_code
from infra.nag import acknowledge
from infra.workflow import RunWorkflow
from lambdas.jobs import s3_layout
from lambdas.jobs.limits import ServiceLimits
from lambdas.jobs.spec import JobDefaults
from lambdas.jobs.training_slots import QueueSettings
from lambdas.pipeline import config

INTAKE_TIMEOUT = Duration.seconds(60)
STEP_TIMEOUT = Duration.minutes(2)
# Validation downloads and decodes every photo in full (4 at a time): memory for 4 large decoded photos,
# and the CPU share that comes with it; under the state machine's 5-minute task timeout.
VALIDATE_TIMEOUT = Duration.minutes(4)
VALIDATE_MEMORY_MB = 2048
# Streams model.tar.gz through gzip into multipart uploads: a full SD model (~4 GB with its single file)
# in a few minutes on the CPU share of this memory size, under Lambda's 15-minute limit.
UNPACK_TIMEOUT = Duration.minutes(15)
UNPACK_MEMORY_MB = 1769
MAX_RECEIVE_COUNT = 5
INTAKE_TABLE_ACTIONS = ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem")


class Pipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        topic: sns.ITopic,
        training_role: iam.IRole,
        training_image_uri: str,
        job_defaults: JobDefaults,
        retain_data_on_delete: bool,
        limits: ServiceLimits | None = None,
        training_retry_seconds: int = 20,
        training_queue: QueueSettings | None = None,
        log_key: kms.IKey,
        training_vpc_config: dict | None = None,
        training_network_isolation: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if retain_data_on_delete else RemovalPolicy.DESTROY
        limits = limits or ServiceLimits()

        self.table = dynamodb.Table(
            self,
            "Jobs",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute="expires_at",
            removal_policy=removal,
        )

        self.dead_letter_queue = sqs.Queue(
            self,
            "UploadEventsDLQ",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self.dead_letter_queue,
            {"AwsSolutions-SQS3": "This is the dead-letter queue of the upload events queue."},
        )
        self.queue = sqs.Queue(
            self,
            "UploadEvents",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # AWS's advice for Lambda event sources: at least six times the function timeout.
            visibility_timeout=Duration.seconds(INTAKE_TIMEOUT.to_seconds() * 6),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=MAX_RECEIVE_COUNT, queue=self.dead_letter_queue
            ),
        )
        self.rule = events.Rule(
            self,
            "UploadCreated",
            description=f"Objects created under {s3_layout.UPLOADS_ROOT} of the data bucket",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [bucket.bucket_name]},
                    "object": {"key": [{"prefix": s3_layout.UPLOADS_ROOT}]},
                },
            ),
            targets=[targets.SqsQueue(self.queue)],
        )

        code = pipeline_code()
        layer = lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", powertools_layer_arn())
        environment = {
            config.BUCKET_NAME: bucket.bucket_name,
            config.JOBS_TABLE_NAME: self.table.table_name,
            config.JOB_DEFAULTS: job_defaults.model_dump_json(),
            config.SERVICE_LIMITS: limits.model_dump_json(),
            config.TRAINING_QUEUE: (training_queue or QueueSettings()).model_dump_json(),
            config.TRAINING_NETWORK_ISOLATION: "true" if training_network_isolation else "false",
        }

        def function(
            name: str, handler: str, description: str, timeout: Duration, **options
        ) -> PipelineFunction:
            return PipelineFunction(
                self,
                name,
                handler=f"lambdas.handlers.{handler}.handler",
                description=description,
                code=code,
                layer=layer,
                log_key=log_key,
                environment=environment,
                timeout=timeout,
                **options,
            )

        self.check_batch = function(
            "CheckBatch", "check_batch", "Is the batch complete? Seals it for its run.", STEP_TIMEOUT
        )
        self.validate_batch = function(
            "ValidateBatch",
            "validate_batch",
            "Validates a sealed batch before any GPU is paid for and freezes the run's input.",
            VALIDATE_TIMEOUT,
            memory_size=VALIDATE_MEMORY_MB,
            extra_layers=[pillow_layer(self)],
        )
        self.build_training_request = function(
            "BuildTrainingRequest",
            "build_training_request",
            "Per-run CreateTrainingJob fields.",
            STEP_TIMEOUT,
        )
        self.finish_run = function(
            "FinishRun", "finish_run", "Records how a run ended and writes its notification.", STEP_TIMEOUT
        )
        self.training_slot = function(
            "TrainingSlot",
            "training_slot",
            "The queue in front of the GPU quota: takes and frees training slots.",
            STEP_TIMEOUT,
        )
        # Isolated runs hand the model over in SageMaker's model.tar.gz; this unpacks it (streamed).
        self.unpack_model = (
            function(
                "UnpackModel",
                "unpack_model",
                "Unpacks a network-isolated run's model.tar.gz into its model prefix.",
                UNPACK_TIMEOUT,
                memory_size=UNPACK_MEMORY_MB,
            )
            if training_network_isolation
            else None
        )
        self.workflow = RunWorkflow(
            self,
            "Runs",
            check_batch=self.check_batch.function,
            validate_batch=self.validate_batch.function,
            build_training_request=self.build_training_request.function,
            finish_run=self.finish_run.function,
            training_slot=self.training_slot.function,
            topic=topic,
            training_role=training_role,
            training_image_uri=training_image_uri,
            training_retry_seconds=training_retry_seconds,
            instance_types=limits.instance_types,
            table=self.table,
            training_vpc_config=training_vpc_config,
            unpack_model=self.unpack_model.function if self.unpack_model else None,
        )
        self.state_machine = self.workflow.state_machine

        self.intake = PipelineFunction(
            self,
            "Intake",
            handler="lambdas.handlers.upload_events.handler",
            description="Upload events: join the open batch or open a run and start its execution.",
            code=code,
            layer=layer,
            log_key=log_key,
            environment={**environment, config.STATE_MACHINE_ARN: self.state_machine.state_machine_arn},
            timeout=INTAKE_TIMEOUT,
        )
        self.intake.function.add_event_source(
            event_sources.SqsEventSource(self.queue, batch_size=10, report_batch_item_failures=True)
        )
        # An execution stopped by hand (or timed out) runs no cleanup step: free its slot from here.
        self.execution_ended = events.Rule(
            self,
            "RunEnded",
            description="Frees the training slot of a run whose execution ended without its own cleanup",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={
                    "status": ["ABORTED", "TIMED_OUT", "FAILED"],
                    "stateMachineArn": [self.state_machine.state_machine_arn],
                },
            ),
            targets=[
                targets.LambdaFunction(
                    self.training_slot.function,
                    event=events.RuleTargetInput.from_object(
                        {"action": "execution_ended", "detail": events.EventField.from_path("$.detail")}
                    ),
                    retry_attempts=10,
                )
            ],
        )
        self._grant(bucket, Stack.of(self))

    def _grant(self, bucket: s3.IBucket, stack: Stack) -> None:
        uploads = bucket.arn_for_objects(f"{s3_layout.UPLOADS_ROOT}*")
        models = bucket.arn_for_objects(f"{s3_layout.MODELS_ROOT}*")
        # Intake: exactly what JobsTable's intake path calls (get_batch/get_run: GetItem;
        # run_in_progress_covers: Query; join_batch/open_batch: TransactWriteItems of Put and Update;
        # mark_execution_started: UpdateItem). No Scan, DeleteItem or stream reads.
        self.table.grant(self.intake.role, *INTAKE_TABLE_ACTIONS)
        self.table.grant_read_write_data(self.check_batch.role)
        self.table.grant_read_write_data(self.validate_batch.role)
        self.table.grant_read_write_data(self.build_training_request.role)
        self.table.grant_read_write_data(self.finish_run.role)
        self.table.grant(
            self.training_slot.role,
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:Query",
            "dynamodb:ConditionCheckItem",
        )
        self.state_machine.grant_start_execution(self.intake.role)

        def allow(fn: PipelineFunction, actions: list[str], resources: list[str], **kwargs) -> None:
            fn.role.add_to_principal_policy(
                iam.PolicyStatement(actions=actions, resources=resources, **kwargs)
            )

        def list_under(fn: PipelineFunction, *prefixes: str) -> None:
            allow(
                fn,
                ["s3:ListBucket"],
                [bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in prefixes]}},
            )

        allow(self.intake, ["s3:GetObject"], [uploads])  # HeadObject
        list_under(self.intake, s3_layout.UPLOADS_ROOT)  # without it, HeadObject of a deleted key is 403
        training_input = bucket.arn_for_objects(f"{s3_layout.TRAINING_INPUT_ROOT}*")
        allow(self.check_batch, ["s3:GetObject"], [uploads])
        list_under(self.check_batch, s3_layout.UPLOADS_ROOT)
        allow(self.check_batch, ["s3:PutObject"], [training_input])  # the sealed listing
        allow(
            self.validate_batch,
            ["s3:GetObject"],
            [uploads, training_input, bucket.arn_for_objects(f"{s3_layout.BASE_MODELS_ROOT}*")],
        )
        allow(self.validate_batch, ["s3:PutObject"], [training_input])  # the accepted photos and listing
        list_under(self.validate_batch, s3_layout.UPLOADS_ROOT, s3_layout.BASE_MODELS_ROOT)
        list_under(self.build_training_request, s3_layout.CLASS_IMAGES_ROOT)
        allow(self.finish_run, ["s3:GetObject"], [models])
        if self.unpack_model is not None:
            sagemaker_output = bucket.arn_for_objects(f"{s3_layout.SAGEMAKER_OUTPUT_ROOT}*")
            allow(self.unpack_model, ["s3:GetObject"], [sagemaker_output])
            allow(self.unpack_model, ["s3:PutObject", "s3:DeleteObject"], [models])
        list_under(self.finish_run, s3_layout.MODELS_ROOT)
        training_jobs = stack.format_arn(service="sagemaker", resource="training-job", resource_name="*")
        allow(self.finish_run, ["sagemaker:DescribeTrainingJob"], [training_jobs])

        bucket_ref = stack.get_logical_id(bucket.node.default_child)
        table_ref = stack.get_logical_id(self.table.node.default_child)
        object_reason = "Reads objects by prefix: one folder per job, named by the user."
        for fn, prefixes in [
            (self.intake, [s3_layout.UPLOADS_ROOT]),
            (self.check_batch, [s3_layout.UPLOADS_ROOT, s3_layout.TRAINING_INPUT_ROOT]),
            (
                self.validate_batch,
                [s3_layout.UPLOADS_ROOT, s3_layout.TRAINING_INPUT_ROOT, s3_layout.BASE_MODELS_ROOT],
            ),
            (self.build_training_request, []),
            (self.finish_run, [s3_layout.MODELS_ROOT]),
            (self.training_slot, []),
            *(
                [(self.unpack_model, [s3_layout.SAGEMAKER_OUTPUT_ROOT, s3_layout.MODELS_ROOT])]
                if self.unpack_model
                else []
            ),
        ]:
            findings = {
                f"AwsSolutions-IAM5[Resource::<{bucket_ref}.Arn>/{prefix}*]": object_reason
                for prefix in prefixes
            }
            if fn is not self.intake:
                findings[f"AwsSolutions-IAM5[Resource::<{table_ref}.Arn>/index/*]"] = (
                    "CDK's table grant covers the table's indexes (it has none)."
                )
            if fn is self.finish_run:
                findings[
                    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
                    "training-job/*]"
                ] = "Training job names are derived per run (job slug + run id); reads only describe them."
            acknowledge(fn.role, findings)
