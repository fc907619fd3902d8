"""The run state machine: wait for the batch, validate, train on SageMaker, notify — or notify the failure.

::

    CheckBatch ─ready?─ no ─▶ WaitForUploads ─▶ CheckBatch
        │ yes
    Validate ─valid?─ no ───────────────────────────────┐
        │ yes                                           ▼
    EnterQueue ─▶ AcquireTrainingSlot ─acquired?─ no ─▶ WaitForTrainingSlot ─▶ AcquireTrainingSlot
        │ yes
    BuildTrainingRequest ─▶ Train (.sync) ─▶ Summarize ─▶ NotifySuccess ─▶ RunSucceeded
        │ (training_network_isolation) isolated run? ─▶ UnpackModel (its model.tar.gz) ─▶ Summarize
        │ Train's error ─▶ TrainingError (frees the slot) ─quota, tries left?─▶ WaitBeforeRequeue ─▶ Acquire…
        │ any error (each step's Catch) ─▶ <Step>Failed ─▶ RecordFailure ─▶ NotifyFailure ─▶ RunFailed

Every failure reaches RecordFailure (which records the run and writes the reason) and a notification
before the execution fails; if even RecordFailure fails, a fallback message in the same documented JSON
shape (``dreambooth.run-result/1``) is published, so subscribers that parse JSON never break.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
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
from lambdas.jobs import batch_state, failures, notification
from lambdas.jobs.spec import MAX_RUNTIME_LIMIT_SECONDS
from lambdas.jobs.training_request import SPOT_WAIT_FACTOR

TRAIN_RESOURCE = "arn:{partition}:states:::sagemaker:createTrainingJob.sync"
# Only errors that guarantee no job was created are retried, so a retry never collides on the name.
THROTTLING_ERRORS = ["SageMaker.ThrottlingException", "SageMaker.SageMakerThrottlingException"]
# The job's own MaxRuntime/MaxWait end it first; this only bounds a lost .sync wait.
TRAIN_TIMEOUT_SECONDS = MAX_RUNTIME_LIMIT_SECONDS * SPOT_WAIT_FACTOR + 3600
STEP_TASK_TIMEOUT = Duration.minutes(5)
# Unpacking an isolated run's model.tar.gz (the function's own timeout is 15 minutes, Lambda's limit).
UNPACK_TIMEOUT = Duration.minutes(15)
# Fields the per-run request (BuildTrainingRequest's output) fills in.
REQUEST_FIELDS = (
    "TrainingJobName",
    "HyperParameters",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "EnableManagedSpotTraining",
    "EnableNetworkIsolation",
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
        training_slot: lambda_.IFunction,
        topic: sns.ITopic,
        training_role: iam.IRole,
        training_image_uri: str,
        training_retry_seconds: int = 20,
        instance_types: tuple[str, ...] = (),
        table: dynamodb.ITable | None = None,
        training_vpc_config: dict | None = None,
        unpack_model: lambda_.IFunction | None = None,
    ) -> None:
        """unpack_model: with training_network_isolation, the step that unpacks an isolated run's
        model.tar.gz into its model prefix before Summarize reads it."""
        super().__init__(scope, construct_id)
        self.instance_types = tuple(instance_types)
        stack = Stack.of(self)
        run_ref = {"job_name.$": "$.job_name", "run_id.$": "$.run_id"}

        def invoke(
            name: str,
            function: lambda_.IFunction,
            payload: dict,
            result_path: str,
            timeout: Duration = STEP_TASK_TIMEOUT,
        ) -> tasks.LambdaInvoke:
            return tasks.LambdaInvoke(
                self,
                name,
                lambda_function=function,
                payload=sfn.TaskInput.from_object(payload),
                payload_response_only=True,
                result_path=result_path,
                task_timeout=sfn.Timeout.duration(timeout),
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
        # Built by the state machine itself (no Lambda left to trust): the documented failure shape.
        fallback_message = sfn.Pass(
            self,
            "DescribeFailureFallback",
            parameters={
                "schema": notification.SCHEMA,
                "status": notification.FAILED,
                "job_name.$": "$.job_name",
                "run_id.$": "$.run_id",
                "training_job_name": None,
                "model": None,
                "failure": {
                    "kind": failures.INTERNAL,
                    "reason": "The run failed, and describing the failure failed as well.",
                    "advice": [
                        "See the execution's history in the Step Functions console.",
                        failures.RETRY_HINT,
                    ],
                    "problems": [],
                    "problem_count": 0,
                },
            },
            result_path="$.fallback_payload",
        )
        fallback = tasks.SnsPublish(
            self,
            "NotifyFailureFallback",
            topic=topic,
            subject="DreamBooth job failed",
            message=sfn.TaskInput.from_text(
                sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.fallback_payload"))
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        if table is None:
            fallback_message.next(fallback)
        else:
            close = self._fallback_close_run(table, fallback)
            fallback_message.next(close)
        fallback.add_catch(run_failed, result_path="$.notify_error")
        fallback.next(run_failed)
        notify_failure = publish_notification("NotifyFailure")
        notify_failure.add_catch(fallback_message, result_path="$.notify_error")
        notify_failure.next(run_failed)
        record_failure = invoke(
            "RecordFailure", finish_run, {"outcome": "failed", "state.$": "$"}, "$.notification"
        )
        record_failure.add_catch(fallback_message, result_path="$.finish_error")
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

        # --- the queue in front of the GPU quota (lambdas/jobs/training_slots.py) ---
        enter_queue = sfn.Pass(
            self,
            "EnterQueue",
            result=sfn.Result.from_object({"quota_attempts": 0, "queued_ms": 0}),
            result_path="$.slot",
        )
        acquire = invoke(
            "AcquireTrainingSlot",
            training_slot,
            {**run_ref, "action": "acquire", "slot.$": "$.slot", "job.$": "$.validation.job"},
            "$.slot",
        )
        on_failure(acquire, "waiting for a training slot")
        wait_for_slot = sfn.Wait(
            self, "WaitForTrainingSlot", time=sfn.WaitTime.seconds_path("$.slot.wait_seconds")
        )
        wait_for_slot.next(acquire)

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
        # A training error frees the slot; ResourceLimitExceeded goes back in line (bounded, with backoff).
        train_failed = sfn.Pass(
            self, "TrainFailed", result=sfn.Result.from_string("training"), result_path="$.failed_state"
        )
        train_failed.next(record_failure)
        training_error = invoke(
            "TrainingError",
            training_slot,
            {**run_ref, "action": "training_error", "slot.$": "$.slot", "error.$": "$.error"},
            "$.slot",
        )
        training_error.add_catch(train_failed, errors=[sfn.Errors.ALL], result_path="$.slot_error")
        train.add_catch(training_error, errors=[sfn.Errors.ALL], result_path="$.error")
        requeue_wait = sfn.Wait(
            self, "WaitBeforeRequeue", time=sfn.WaitTime.seconds_path("$.slot.wait_seconds")
        )
        requeue_wait.next(acquire)
        training_error.next(
            sfn.Choice(self, "Requeue?")
            .when(sfn.Condition.boolean_equals("$.slot.requeue", True), requeue_wait)
            .otherwise(train_failed)
        )

        summarize = invoke(
            "Summarize", finish_run, {"outcome": "succeeded", "state.$": "$"}, "$.notification"
        )
        on_failure(summarize, "summarizing the result")
        after_training: sfn.IChainable = summarize
        if unpack_model is not None:
            unpack = invoke("UnpackModel", unpack_model, run_ref, "$.unpacked", UNPACK_TIMEOUT)
            on_failure(unpack, "unpacking the model")
            unpack.next(summarize)
            after_training = (
                sfn.Choice(self, "ModelInTarball?")
                .when(sfn.Condition.boolean_equals("$.request.EnableNetworkIsolation", True), unpack)
                .otherwise(summarize)
            )
        notify_success = publish_notification("NotifySuccess")
        notify_success.add_catch(run_failed, result_path="$.notify_error")
        summarize.next(notify_success).next(sfn.Succeed(self, "RunSucceeded"))

        definition = check.next(
            sfn.Choice(self, "BatchReady?")
            .when(
                sfn.Condition.boolean_equals("$.batch.ready", True),
                validate.next(
                    sfn.Choice(self, "BatchValid?")
                    .when(
                        sfn.Condition.boolean_equals("$.validation.valid", True),
                        enter_queue.next(acquire).next(
                            sfn.Choice(self, "SlotAcquired?")
                            .when(
                                sfn.Condition.boolean_equals("$.slot.acquired", True),
                                build.next(train).next(after_training),
                            )
                            .otherwise(wait_for_slot)
                        ),
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
        functions = (check_batch, validate_batch, build_training_request, finish_run, training_slot)
        functions += (unpack_model,) if unpack_model is not None else ()
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

    def _fallback_close_run(self, table: dynamodb.ITable, then: sfn.IChainable) -> sfn.IChainable:
        """Without a Lambda to trust: close the batch (later uploads open a new run) and mark the run
        failed, so no run stays ``collecting``. Each update is conditional and best effort; the
        notification follows either way."""
        job_pk = {"S.$": f"States.Format('{batch_state.JOB_PREFIX}{{}}', $.job_name)"}

        def update(
            name: str, sort_key: dict, expression: str, condition: str, values: dict
        ) -> tasks.CallAwsService:
            task = tasks.CallAwsService(
                self,
                name,
                service="dynamodb",
                action="updateItem",
                iam_resources=[table.table_arn],
                parameters={
                    "TableName": table.table_name,
                    "Key": {"pk": job_pk, "sk": sort_key},
                    "UpdateExpression": expression,
                    "ConditionExpression": condition,
                    "ExpressionAttributeValues": values,
                },
                result_path=sfn.JsonPath.DISCARD,
            )
            return task

        close_batch = update(
            "CloseBatchFallback",
            {"S": batch_state.BATCH_SK},
            "SET batch_state = :sealed",
            "run_id = :run AND batch_state = :collecting",
            {
                ":sealed": {"S": batch_state.SEALED},
                ":collecting": {"S": batch_state.COLLECTING},
                ":run": {"S.$": "$.run_id"},
            },
        )
        mark_failed = update(
            "MarkRunFailedFallback",
            {"S.$": f"States.Format('{batch_state.RUN_PREFIX}{{}}', $.run_id)"},
            "SET run_state = :failed",
            "attribute_exists(pk)",
            {":failed": {"S": batch_state.RUN_FAILED}},
        )
        close_batch.add_catch(mark_failed, result_path="$.close_error")
        mark_failed.add_catch(then, result_path="$.close_error")
        return close_batch.next(mark_failed.next(then))

    def _grant_training(self, stack: Stack, training_role: iam.IRole) -> None:
        """Exactly what createTrainingJob.sync needs (Step Functions' documented policy for it)."""
        role = self.state_machine.role
        training_jobs = stack.format_arn(service="sagemaker", resource="training-job", resource_name="*")
        if self.instance_types:
            # The deployment's instance allow-list, in IAM: no Lambda bug can create a job outside it.
            # ForAllValues passes a request without the key, hence the Null condition beside it.
            create_conditions = {
                "ForAllValues:StringEquals": {"sagemaker:InstanceTypes": list(self.instance_types)},
                "Null": {"sagemaker:InstanceTypes": "false"},
            }
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["sagemaker:CreateTrainingJob"],
                    resources=[training_jobs],
                    conditions=create_conditions,
                )
            )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    *([] if self.instance_types else ["sagemaker:CreateTrainingJob"]),
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
