"""The HTTP API: API Gateway (REST) -> the API Lambda; webhooks: topic -> SQS -> the webhook Lambda.

Every method needs SigV4 (IAM) by default, or a Cognito user pool's JWT with ``-c api_auth=cognito``
(each user then sees only their own jobs). The gateway validates the create body against the same
pydantic model the handler uses, throttles, traces, and writes JSON access logs; its own errors are
rewritten to the API's ``{"code", "message"}`` shape.
"""

from __future__ import annotations

import json
from pathlib import Path

from aws_cdk import (
    ArnFormat,
    Duration,
    RemovalPolicy,
    Stack,
)
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from frontend_api import settings as api_settings
from frontend_api.openapi import gateway_schema
from infra.functions import PipelineFunction, powertools_layer_arn
from infra.lambda_code import asset_files, code_asset
from infra.nag import acknowledge
from lambdas.jobs import s3_layout
from lambdas.jobs.limits import ServiceLimits
from lambdas.jobs.spec import JobDefaults
from lambdas.pipeline import config

REPO_ROOT = Path(__file__).resolve().parent.parent
AUTH_MODES = ("iam", "cognito")
THROTTLE_RATE = 20
THROTTLE_BURST = 40
API_TIMEOUT = Duration.seconds(29)  # API Gateway's integration limit
WEBHOOK_TIMEOUT = Duration.seconds(60)
# The gateway's own errors, in the API's error shape: (response type, status, code).
GATEWAY_ERRORS = [
    (apigw.ResponseType.BAD_REQUEST_BODY, "422", "validation_failed", "$context.error.validationErrorString"),
    (
        apigw.ResponseType.BAD_REQUEST_PARAMETERS,
        "400",
        "invalid_query",
        "$context.error.validationErrorString",
    ),
    (apigw.ResponseType.UNAUTHORIZED, "401", "unauthorized", "$context.error.messageString"),
    (apigw.ResponseType.ACCESS_DENIED, "403", "forbidden", "$context.error.messageString"),
    (apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "403", "forbidden", "$context.error.messageString"),
    (apigw.ResponseType.THROTTLED, "429", "throttled", "$context.error.messageString"),
    (apigw.ResponseType.DEFAULT_4_XX, None, "bad_request", "$context.error.messageString"),
    (apigw.ResponseType.DEFAULT_5_XX, None, "internal_error", "$context.error.messageString"),
]


def api_asset_files(repo_root: Path = REPO_ROOT) -> dict[str, Path]:
    """The pipeline's asset plus ``frontend_api/`` (Python files only)."""
    files = asset_files(repo_root)
    for path in sorted((repo_root / "frontend_api").rglob("*.py")):
        if "__pycache__" not in path.parts:
            files[path.relative_to(repo_root).as_posix()] = path
    return files


def api_code() -> lambda_.Code:
    return code_asset(REPO_ROOT / "frontend_api", api_asset_files)


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        table: dynamodb.ITable,
        topic: sns.ITopic,
        topic_key: kms.IKey,
        state_machine: sfn.StateMachine,
        job_defaults: JobDefaults,
        limits: ServiceLimits,
        log_key: kms.IKey,
        auth: str = "iam",
        import_buckets: tuple[str, ...] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        if auth not in AUTH_MODES:
            raise ValueError(f"api_auth={auth!r}: expected one of {', '.join(AUTH_MODES)}")
        stack = Stack.of(self)
        self.webhook_secret = secretsmanager.Secret(
            self,
            "WebhookSecret",
            description="Signs webhook deliveries (HMAC-SHA256); share it with webhook receivers.",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=48, exclude_punctuation=True
            ),
        )
        acknowledge(
            self.webhook_secret,
            {
                "AwsSolutions-SMG4": (
                    "Receivers verify signatures with this secret; rotating it is a coordinated change "
                    "with them (update the secret, then the receivers), not an automatic one."
                )
            },
        )
        environment = {
            config.BUCKET_NAME: bucket.bucket_name,
            config.JOBS_TABLE_NAME: table.table_name,
            config.JOB_DEFAULTS: job_defaults.model_dump_json(),
            config.SERVICE_LIMITS: limits.model_dump_json(),
            config.STATE_MACHINE_ARN: state_machine.state_machine_arn,
            api_settings.AUTH_MODE: auth,
            api_settings.TOPIC_ARN: topic.topic_arn,
            api_settings.WEBHOOK_SECRET_ID: self.webhook_secret.secret_arn,
            api_settings.IMPORT_BUCKETS: ",".join(import_buckets),
        }
        code = api_code()
        layer = lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", powertools_layer_arn())
        self.handler = PipelineFunction(
            self,
            "Handler",
            handler="frontend_api.handler.handler",
            description="The HTTP API: create, start, list, read and stop jobs.",
            code=code,
            layer=layer,
            log_key=log_key,
            environment=environment,
            timeout=API_TIMEOUT,
            memory_size=1024,
        )
        self.webhooks = PipelineFunction(
            self,
            "Webhooks",
            handler="frontend_api.webhook_handler.handler",
            description="Signs and delivers each job's result to its webhook_url.",
            code=code,
            layer=layer,
            log_key=log_key,
            environment=environment,
            timeout=WEBHOOK_TIMEOUT,
        )
        self._log_key = log_key
        self._webhook_queue(topic)
        self._grant(bucket, table, topic, topic_key, state_machine, import_buckets, stack)
        self.rest_api = self._rest_api(auth)

    def _webhook_queue(self, topic: sns.ITopic) -> None:
        self.webhook_dlq = sqs.Queue(
            self,
            "WebhooksDLQ",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self.webhook_dlq, {"AwsSolutions-SQS3": "This is the dead-letter queue of the webhook queue."}
        )
        self.webhook_queue = sqs.Queue(
            self,
            "WebhookDeliveries",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            # Lambda's advice: six times the function timeout; each redelivery is a later retry.
            visibility_timeout=Duration.seconds(WEBHOOK_TIMEOUT.to_seconds() * 6),
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=5, queue=self.webhook_dlq),
        )
        topic.add_subscription(subscriptions.SqsSubscription(self.webhook_queue))
        self.webhooks.function.add_event_source(
            event_sources.SqsEventSource(self.webhook_queue, batch_size=5, report_batch_item_failures=True)
        )

    def _grant(
        self,
        bucket: s3.IBucket,
        table: dynamodb.ITable,
        topic: sns.ITopic,
        topic_key: kms.IKey,
        state_machine: sfn.StateMachine,
        import_buckets: tuple[str, ...],
        stack: Stack,
    ) -> None:
        role = self.handler.role
        table.grant_read_write_data(role)
        table.grant_read_data(self.webhooks.role)
        self.webhook_secret.grant_read(self.webhooks.role)
        topic.grant_publish(role)
        job_prefixes = (s3_layout.UPLOADS_ROOT, s3_layout.MODELS_ROOT, s3_layout.CHECKPOINTS_ROOT)

        def allow(actions: list[str], resources: list[str], **kwargs) -> None:
            role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=resources, **kwargs))

        # Presigned POST targets and imports write uploads; links read models; purge deletes all three.
        allow(["s3:PutObject"], [bucket.arn_for_objects(f"{s3_layout.UPLOADS_ROOT}*")])
        allow(["s3:GetObject"], [bucket.arn_for_objects(f"{s3_layout.MODELS_ROOT}*")])
        allow(["s3:DeleteObject"], [bucket.arn_for_objects(f"{p}*") for p in job_prefixes])
        allow(
            ["s3:ListBucket"],
            [bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in job_prefixes]}},
        )
        if import_buckets:
            allow(["s3:GetObject"], [f"arn:{stack.partition}:s3:::{name}/*" for name in import_buckets])
        executions = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{state_machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        allow(["states:StopExecution"], [executions])
        training_jobs = stack.format_arn(service="sagemaker", resource="training-job", resource_name="*")
        allow(["sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob"], [training_jobs])

        bucket_ref = stack.get_logical_id(bucket.node.default_child)
        table_ref = stack.get_logical_id(table.node.default_child)
        findings = {
            f"AwsSolutions-IAM5[Resource::<{bucket_ref}.Arn>/{p}*]": (
                "Jobs are folders named by users: the API reads, writes or deletes one job's folder "
                "at a time."
            )
            for p in job_prefixes
        }
        findings[f"AwsSolutions-IAM5[Resource::<{table_ref}.Arn>/index/*]"] = (
            "CDK's table grant covers the table's indexes (it has none)."
        )
        findings[
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:training-job/*]"
        ] = "Training job names are derived per run (job slug + run id); the API describes or stops one."
        sm_ref = stack.get_logical_id(state_machine.node.default_child)
        findings[
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:<{sm_ref}.Name>:*]"
        ] = "Stops one run's execution of the service's own state machine; executions are named per run."
        findings["AwsSolutions-IAM5[Action::kms:GenerateDataKey*]"] = (
            "SNS's grant on the topic's key: publishing to an encrypted topic needs data keys."
        )
        for name in import_buckets:
            findings[f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{name}/*]"] = (
                "images_url may name any zip in a bucket the deployment lists in api_import_buckets."
            )
        acknowledge(role, findings)
        acknowledge(
            self.webhooks.role,
            {
                f"AwsSolutions-IAM5[Resource::<{table_ref}.Arn>/index/*]": (
                    "CDK's table grant covers the table's indexes (it has none)."
                )
            },
        )
        self._executions_resource = executions

    def _rest_api(self, auth: str) -> apigw.RestApi:
        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            encryption_key=self._log_key,
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        authorizer = None
        if auth == "cognito":
            self.user_pool = cognito.UserPool(
                self,
                "Users",
                self_sign_up_enabled=False,
                sign_in_aliases=cognito.SignInAliases(email=True),
                password_policy=cognito.PasswordPolicy(
                    min_length=12,
                    require_digits=True,
                    require_lowercase=True,
                    require_uppercase=True,
                    require_symbols=True,
                ),
                mfa=cognito.Mfa.OPTIONAL,
                mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
                removal_policy=RemovalPolicy.RETAIN,
            )
            self.user_pool_client = self.user_pool.add_client(
                "ApiClient", auth_flows=cognito.AuthFlow(user_srp=True), generate_secret=False
            )
            acknowledge(
                self.user_pool,
                {
                    "AwsSolutions-COG2": (
                        "MFA is offered (TOTP) and left to each user: the API serves back ends that sign in "
                        "non-interactively."
                    ),
                    "AwsSolutions-COG8": "Threat protection (Plus plan) is paid: a per-deployment choice.",
                },
            )
            authorizer = apigw.CognitoUserPoolsAuthorizer(
                self, "Authorizer", cognito_user_pools=[self.user_pool]
            )
            method_options = apigw.MethodOptions(
                authorization_type=apigw.AuthorizationType.COGNITO, authorizer=authorizer
            )
        else:
            method_options = apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM)

        api = apigw.RestApi(
            self,
            "Http",
            description="DreamBooth fine-tuning jobs over HTTP (see frontend_api/openapi.yaml).",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY,  # execution logs (ERROR level)
            default_method_options=method_options,
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                throttling_rate_limit=THROTTLE_RATE,
                throttling_burst_limit=THROTTLE_BURST,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                metrics_enabled=True,
                tracing_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
            ),
        )
        acknowledge(
            api,
            {
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]": (
                    "API Gateway's account-level logging role: AWS's own policy for exactly this purpose."
                )
            },
        )
        for response_type, status, code, message in GATEWAY_ERRORS:
            api.add_gateway_response(
                f"Error{code.title().replace('_', '')}{response_type.response_type}",
                type=response_type,
                status_code=status,
                templates={
                    "application/json": json.dumps({"code": code, "message": "MESSAGE"}).replace(
                        '"MESSAGE"', f'"{message}"'
                    )
                },
            )
        validator = api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        create_model = api.add_model(
            "CreateJobRequest",
            content_type="application/json",
            model_name="CreateJobRequest",
            schema=apigw.JsonSchema(schema=apigw.JsonSchemaVersion.DRAFT4, title="CreateJobRequest"),
        )
        # The full schema (draft 4, refs inlined) from the handler's pydantic model.
        create_model.node.default_child.add_property_override("Schema", gateway_schema())

        integration = apigw.LambdaIntegration(self.handler.function, proxy=True)
        jobs = api.root.add_resource("jobs")
        jobs.add_method(
            "POST",
            integration,
            request_validator=validator,
            request_models={"application/json": create_model},
            request_parameters={"method.request.header.Idempotency-Key": False},
        )
        jobs.add_method(
            "GET",
            integration,
            request_validator=validator,
            request_parameters={
                "method.request.querystring.status": False,
                "method.request.querystring.limit": False,
                "method.request.querystring.cursor": False,
            },
        )
        job = jobs.add_resource("{job_id}")
        job.add_method("GET", integration, request_validator=validator)
        job.add_method(
            "DELETE",
            integration,
            request_validator=validator,
            request_parameters={"method.request.querystring.purge": False},
        )
        job.add_resource("start").add_method("POST", integration, request_validator=validator)

        acknowledge(
            api,
            {
                "AwsSolutions-APIG3": (
                    "WAF is a per-deployment choice (cost); every method needs SigV4 or a JWT and the "
                    "stage is throttled."
                ),
            },
        )
        if auth == "iam":
            acknowledge(
                api,
                {
                    "AwsSolutions-COG4": (
                        "IAM (SigV4) authorizes every method; Cognito is the api_auth=cognito option."
                    )
                },
            )
        return api
