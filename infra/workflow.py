"""The run state machine: wait for the batch, validate, train on SageMaker, notify — or notify the failure.

::

    CheckBatch ─ready?─ no ─▶ WaitForUploads ─▶ CheckBatch
        │ yes
    Validate ─valid?─ no ───────────────────────────────┐
        │ yes                                           ▼
    BuildTrainingRequest ─▶ Train (.sync) ─▶ Summarize ─▶ NotifySuccess ─▶ RunSucceeded
        │ any error (each step's Catch) ─▶ <Step>Failed ─▶ RecordFailure ─▶ NotifyFailure ─▶ RunFailed

Every failure reaches RecordFailure (which records the run and writes the reason) and a notification
before the execution fails; if even RecordFailure fails, a plain fallback message is published.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from dreambooth_trainer.metrics import METRIC_DEFINITIONS
from infra.nag import acknowledge
from lambdas.jobs.spec import MAX_RUNTIME_LIMIT_SECONDS
from lambdas.jobs.training_request import SPOT_WAIT_FACTOR

TRAIN_RESOURCE = "arn:{partition}:states:::sagemaker:createTrainingJob.sync"
# Only errors that guarantee no job was created are retried, so a retry never collides on the name.
THROTTLING_ERRORS = ["SageMaker.ThrottlingException", "SageMaker.SageMakerThrottlingException"]
# The job's own MaxRuntime/MaxWait end it first; this only bounds a lost .sync wait.
TRAIN_TIMEOUT_SECONDS = MAX_RUNTIME_LIMIT_SECONDS * SPOT_WAIT_FACTOR + 3600
# Fields the per-run request (BuildTrainingRequest's output) fills in.
REQUEST_FIELDS = (
    "TrainingJobName",
    "HyperParameters",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "Tags",
)


def train_state_json(
    *, partition: str, image_uri: str, role_arn: str, vpc_config: dict | None = None
) -> dict:
    """createTrainingJob.sync with spot and checkpoint fields CDK's task lacks; image and role fixed here."""
    parameters = {f"{name}.$": f"$.request.{name}" for name in REQUEST_FIELDS}
    parameters["RoleArn"] = role_arn
    parameters["AlgorithmSpecification"] = {
        "TrainingImage": image_uri,
        "TrainingInputMode": "File",
        "MetricDefinitions": METRIC_DEFINITIONS,
    }
    if vpc_config:  # the deployment's network (context training_subnet_ids / training_security_group_ids)
        parameters["VpcConfig"] = vpc_config
    return {
        "Type": "Task",
        "Resource": TRAIN_RESOURCE.format(partition=partition),
        "Parameters": parameters,
        # The .sync output is DescribeTrainingJob with datetimes; keep only what later steps read.
        "ResultSelector": {
            "TrainingJobName.$": "$.TrainingJobName",
            "TrainingJobArn.$": "$.TrainingJobArn",
            "TrainingJobStatus.$": "$.TrainingJobStatus",
        },
        "ResultPath": "$.training",
        "TimeoutSeconds": TRAIN_TIMEOUT_SECONDS,
    }


class RunWorkflow(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        check_batch: lambda_.IFunction,
        validate_batch: lambda_.IFunction,
        build_training_request: lambda_.IFunction,
        finish_run: lambda_.IFunction,
        topic: sns.ITopic,
        training_role: iam.IRole,
        training_image_uri: str,
        training_retry_seconds: int = 20,
        training_vpc_config: dict | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        run_ref = {"job_name.$": "$.job_name", "run_id.$": "$.run_id"}

        def invoke(
            name: str, function: lambda_.IFunction, payload: dict, result_path: str
        ) -> tasks.LambdaInvoke:
            return tasks.LambdaInvoke(
                self,
                name,
                lambda_function=function,
                payload=sfn.TaskInput.from_object(payload),
                payload_response_only=True,
                result_path=result_path,
                task_timeout=sfn.Timeout.duration(Duration.minutes(5)),
            )

        def publish_notification(name: str) -> tasks.SnsPublish:
            """The message finish_run built: e-mail text plus JSON for every other protocol."""
            return tasks.SnsPublish(
                self,
                name,
                topic=topic,
                subject=sfn.JsonPath.string_at("$.notification.subject"),
                message=sfn.TaskInput.from_json_path_at("$.notification.message"),
                message_per_subscription_type=True,
                result_path=sfn.JsonPath.DISCARD,
            )

        # --- failure path ---
        run_failed = sfn.Fail(
            self, "RunFailed", error="DreamBoothRunFailed", cause="see the failure notification"
        )
        fallback = tasks.SnsPublish(
            self,
            "NotifyFailureFallback",
            topic=topic,
            subject="DreamBooth job failed",
            message=sfn.TaskInput.from_text(
                sfn.JsonPath.format(
                    "DreamBooth job {} (run {}) failed, and describing the failure failed as well. "
                    "Execution state: {}",
                    sfn.JsonPath.string_at("$.job_name"),
                    sfn.JsonPath.string_at("$.run_id"),
                    sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$")),
                )
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        fallback.add_catch(run_failed, result_path="$.notify_error")
        fallback.next(run_failed)
        notify_failure = publish_notification("NotifyFailure")
        notify_failure.add_catch(fallback, result_path="$.notify_error")
        notify_failure.next(run_failed)
        record_failure = invoke(
            "RecordFailure", finish_run, {"outcome": "failed", "state.$": "$"}, "$.notification"
        )
        record_failure.add_catch(fallback, result_path="$.finish_error")
        record_failure.next(notify_failure)

        def on_failure(task: sfn.TaskStateBase | sfn.CustomState, stage: str) -> None:
            marker = sfn.Pass(
                self,
                f"{task.node.id}Failed",
                result=sfn.Result.from_string(stage),
                result_path="$.failed_state",
            )
            marker.next(record_failure)
            task.add_catch(marker, errors=[sfn.Errors.ALL], result_path="$.error")

        # --- success path ---
        check = invoke("CheckBatch", check_batch, run_ref, "$.batch")
        on_failure(check, "waiting for the batch")
        wait = sfn.Wait(self, "WaitForUploads", time=sfn.WaitTime.seconds_path("$.batch.wait_seconds"))
        wait.next(check)

        validate = invoke("Validate", validate_batch, run_ref, "$.validation")
        on_failure(validate, "validation")
        build = invoke(
            "BuildTrainingRequest",
            build_training_request,
            {**run_ref, "job.$": "$.validation.job"},
            "$.request",
        )
        on_failure(build, "building the training request")

        train = sfn.CustomState(
            self,
            "Train",
            state_json=train_state_json(
                partition=Aws.PARTITION,
                image_uri=training_image_uri,
                role_arn=training_role.role_arn,
                vpc_config=training_vpc_config,
            ),
        )
        train.add_retry(
            errors=THROTTLING_ERRORS,
            interval=Duration.seconds(training_retry_seconds),
            max_attempts=5,
            backoff_rate=2,
        )
        on_failure(train, "training")

        summarize = invoke(
            "Summarize", finish_run, {"outcome": "succeeded", "state.$": "$"}, "$.notification"
        )
        on_failure(summarize, "summarizing the result")
        notify_success = publish_notification("NotifySuccess")
        notify_success.add_catch(run_failed, result_path="$.notify_error")

        definition = check.next(
            sfn.Choice(self, "BatchReady?")
            .when(
                sfn.Condition.boolean_equals("$.batch.ready", True),
                validate.next(
                    sfn.Choice(self, "BatchValid?")
                    .when(
                        sfn.Condition.boolean_equals("$.validation.valid", True),
                        build.next(train)
                        .next(summarize)
                        .next(notify_success)
                        .next(sfn.Succeed(self, "RunSucceeded")),
                    )
                    .otherwise(record_failure)
                ),
            )
            .otherwise(wait)
        )

        self.log_key = kms.Key(
            self, "LogKey", enable_key_rotation=True, description="Encrypts the run state machine's logs."
        )
        self.log_key.grant_encrypt_decrypt(iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com"))
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/vendedlogs/states/{stack.stack_name}-runs",
            encryption_key=self.log_key,
            retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_type=sfn.StateMachineType.STANDARD,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            comment="One DreamBooth run: batch, validation, SageMaker training, notification.",
        )
        self._grant_training(stack, training_role)
        functions = (check_batch, validate_batch, build_training_request, finish_run)
        acknowledge(
            self.state_machine.role,
            {
                **{
                    f"AwsSolutions-IAM5[Resource::<{stack.get_logical_id(fn.node.default_child)}.Arn>:*]": (
                        "CDK's invoke grant also covers the function's versions and aliases."
                    )
                    for fn in functions
                },
                "AwsSolutions-IAM5[Resource::*]": (
                    "X-Ray tracing and CloudWatch Logs delivery actions support no resource scoping."
                ),
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
                "training-job/*]": (
                    "Training job names are derived per run (job slug + run id), so they cannot be listed "
                    "in advance; the actions are only those createTrainingJob.sync needs."
                ),
            },
        )

    def _grant_training(self, stack: Stack, training_role: iam.IRole) -> None:
        """Exactly what createTrainingJob.sync needs (Step Functions' documented policy for it)."""
        role = self.state_machine.role
        training_jobs = stack.format_arn(service="sagemaker", resource="training-job", resource_name="*")
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:AddTags",
                    "sagemaker:ListTags",
                ],
                resources=[training_jobs],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[training_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(
                        service="events",
                        resource="rule",
                        resource_name="StepFunctionsGetEventsForSageMakerTrainingJobsRule",
                    )
                ],
            )
        )
