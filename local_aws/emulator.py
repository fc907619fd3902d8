"""The stack's resources, created in moto from the synthesized template, with the real handlers.

Nothing of the pipeline is re-implemented here: buckets, topic, queues, table, EventBridge rule, Lambda
functions, event source mapping and state machine are created from their template properties (the
state machine's definition is the template's, with references resolved to the emulated ARNs), and
Lambda invocations run the handlers named by each function's ``Handler``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import boto3
import requests
from botocore.config import Config
from moto.server import ThreadedMotoServer

from lambdas.jobs import naming
from local_aws import moto_shims
from local_aws.template import ACCOUNT_ID, Resolver, resources_of_type
from local_aws.training_jobs import TrainingJobRequest, TrainingOutcome, TrainingRunner

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# Resource types the emulator creates; every other resource (policies, keys, log groups, ...) is only
# given a name so references to it resolve.
CREATED_TYPES = (
    "AWS::IAM::Role",
    "AWS::S3::Bucket",
    "AWS::SNS::Topic",
    "AWS::SQS::Queue",
    "AWS::DynamoDB::Table",
    "AWS::Lambda::Function",
    "AWS::StepFunctions::StateMachine",
    "AWS::Lambda::EventSourceMapping",
    "AWS::Events::Rule",
    "AWS::SNS::Subscription",
)
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9-]")
# Execution names are training job names: the slug gets what the run id leaves of 63 characters.
_SLUG_BUDGET = naming.TRAINING_JOB_NAME_MAX - len("20261124-101500-ab12") - 1


class LocalAws:
    """One emulated deployment of a synthesized stack. Use as a context manager; one at a time per process."""

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        stack_name: str = "DreamBoothService",
        region: str = "us-east-1",
        port: int | None = None,
    ) -> None:
        """``port``: where the emulator listens (127.0.0.1); None lets the OS pick a free one."""
        self.template = template
        self.stack_name = stack_name
        self.region = region
        self.resolver = Resolver(template, region=region, stack_name=stack_name)
        self.outputs: dict[str, Any] = {}
        self._server: ThreadedMotoServer | None = None
        self._requested_port = port
        self._port: int | None = None
        self._runner: TrainingRunner | None = None
        self._runner_threads: list[threading.Thread] = []
        self._saved_environ: dict[str, str | None] = {}
        self._subscriber_count = 0

    # --- lifecycle ---

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalAws:
        moto_shims.install()
        if self._requested_port:
            _require_free_port(self._requested_port)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        # Port 0: the OS picks a free one. MOTO_PORT tells the Step Functions interpreter where to call.
        self._server = ThreadedMotoServer(
            ip_address="127.0.0.1", port=self._requested_port or 0, verbose=False
        )
        self._server.start()
        self._port = self._server.get_host_and_port()[1]
        self._set_environ(
            {"MOTO_PORT": str(self._port), **{k: os.environ.get(k) or v for k, v in CREDENTIALS.items()}}
        )
        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=30).raise_for_status()
        requests.post(
            f"{self.endpoint_url}/moto-api/config",
            json={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}},
            timeout=30,
        ).raise_for_status()
        moto_shims.clear_lambda_routes()
        hooks = moto_shims.reset_training_job_hooks()
        hooks.on_created = self._on_training_job_created
        self._create_resources()
        return self

    def stop(self, drain_seconds: float = 10) -> None:
        """Let running executions finish (up to ``drain_seconds``), then shut the emulator down."""
        if self._server is not None and drain_seconds > 0:
            deadline = time.monotonic() + drain_seconds
            while time.monotonic() < deadline and any(
                e["status"] == "RUNNING" for e in self._all_executions()
            ):
                time.sleep(0.2)
        for thread in self._runner_threads:
            thread.join(timeout=5)
        moto_shims.release_s3_events(order=lambda events: [])
        moto_shims.clear_lambda_routes()
        moto_shims.reset_training_job_hooks()
        if self._server is not None:
            self._server.stop()
            self._server = None
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environ.clear()

    def _set_environ(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            self._saved_environ.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    # --- where things are ---

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def bucket(self) -> str:
        return self.outputs["BucketName"]

    @property
    def topic_arn(self) -> str:
        return self.outputs["NotificationTopicArn"]

    @property
    def state_machine_arn(self) -> str:
        return self.outputs["StateMachineArn"]

    @property
    def table_name(self) -> str:
        return self.outputs["JobsTableName"]

    @property
    def queue_url(self) -> str:
        return self.outputs["UploadEventsQueueUrl"]

    @property
    def client_environment(self) -> dict[str, str]:
        """Environment variables that point boto3 (in this process or a subprocess) at the emulator."""
        return {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def boto3_client(self, service: str) -> Any:
        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=CREDENTIALS["AWS_SESSION_TOKEN"],
            config=Config(retries={"max_attempts": 1}, read_timeout=120),
        )

    # --- training jobs ---

    def set_training_runner(self, runner: TrainingRunner | None) -> None:
        """``runner(request) -> TrainingOutcome`` runs, in a thread, for every job created from now on."""
        self._runner = runner

    def reject_create_training_job(self, code: str, message: str, times: int = 1) -> None:
        """The next ``times`` CreateTrainingJob calls fail with this AWS error code (no job is created)."""
        hooks = moto_shims.training_job_hooks()
        with hooks.lock:
            hooks.rejections.extend([(code, message)] * times)

    def training_job_requests(self) -> list[TrainingJobRequest]:
        hooks = moto_shims.training_job_hooks()
        with hooks.lock:
            return [TrainingJobRequest(dict(r)) for r in hooks.requests]

    def wait_for_training_job(self, count: int = 1, timeout: float = 60) -> TrainingJobRequest:
        """The ``count``-th training job created, once it exists."""
        self._poll(lambda: len(self.training_job_requests()) >= count, timeout, f"{count} training job(s)")
        return self.training_job_requests()[count - 1]

    def finish_training_job(self, name: str, outcome: TrainingOutcome | None = None) -> None:
        outcome = outcome or TrainingOutcome()
        moto_shims.set_training_job_status(
            name,
            outcome.status,
            failure_reason=outcome.failure_reason,
            training_seconds=outcome.training_seconds,
            billable_seconds=outcome.billable_seconds,
            account_id=ACCOUNT_ID,
            region=self.region,
        )

    def _on_training_job_created(self, request: dict[str, Any]) -> None:
        runner = self._runner
        if runner is None:
            return  # the caller drives the job with finish_training_job
        job = TrainingJobRequest(dict(request))

        def run() -> None:
            try:
                outcome = runner(job)
            except Exception as err:  # a crashed runner is a failed job, as a crashed container would be
                outcome = TrainingOutcome(
                    "Failed", f"local training runner crashed: {type(err).__name__}: {err}"
                )
            self.finish_training_job(job.name, outcome)

        thread = threading.Thread(target=run, name=f"training-{job.name}", daemon=True)
        self._runner_threads.append(thread)
        thread.start()

    # --- upload events ---

    @contextmanager
    def held_upload_events(self) -> Iterator[Callable[..., int]]:
        """Uploads inside the block emit no event until ``release(order)`` (or the block's end)."""
        moto_shims.hold_s3_events()
        try:
            yield moto_shims.release_s3_events
        finally:
            moto_shims.release_s3_events()

    def redeliver_upload_event(self, key: str, bucket: str | None = None) -> None:
        """S3's "Object Created" event for an existing object, once more (a duplicate or late delivery)."""
        moto_shims.redeliver_object_created(
            bucket or self.bucket, key, account_id=ACCOUNT_ID, region=self.region
        )

    # --- executions ---

    def _all_executions(self) -> list[dict[str, Any]]:
        sfn = self.boto3_client("stepfunctions")
        machines = sfn.list_state_machines()["stateMachines"]
        return [
            e
            for m in machines
            for e in sfn.list_executions(stateMachineArn=m["stateMachineArn"])["executions"]
        ]

    def executions(self) -> list[dict[str, Any]]:
        sfn = self.boto3_client("stepfunctions")
        pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=self.state_machine_arn)
        return [e for page in pages for e in page["executions"]]

    def wait_for_execution(self, execution_arn: str | None = None, *, timeout: float = 60) -> dict[str, Any]:
        """The finished execution (the only one when no ARN is given), described."""
        sfn = self.boto3_client("stepfunctions")
        if execution_arn is None:
            self._poll(lambda: len(self.executions()) == 1, timeout, "an execution")
            execution_arn = self.executions()[0]["executionArn"]
        described: dict[str, Any] = {}

        def finished() -> bool:
            described.update(sfn.describe_execution(executionArn=execution_arn))
            return described["status"] != "RUNNING"

        self._poll(finished, timeout, f"execution {execution_arn} to finish")
        return described

    def wait_for_executions(self, count: int, *, timeout: float = 60) -> list[dict[str, Any]]:
        """All executions, once there are ``count`` and every one has finished."""
        self._poll(lambda: len(self.executions()) >= count, timeout, f"{count} execution(s)")
        return [self.wait_for_execution(e["executionArn"], timeout=timeout) for e in self.executions()]

    def runs(self, job_name: str) -> list[dict[str, Any]]:
        """Executions of one job (named ``<job slug>-<run id>``), oldest first."""
        pattern = re.compile(
            re.escape(naming.job_slug(job_name, max_length=_SLUG_BUDGET)) + r"-\d{8}-\d{6}-[0-9a-f]{4}$"
        )
        found = [e for e in self.executions() if pattern.match(e["name"])]
        return sorted(found, key=lambda e: e["startDate"])

    def wait_for_runs(self, job_name: str, count: int = 1, *, timeout: float = 60) -> list[dict[str, Any]]:
        """The job's executions, described, once there are ``count`` and all have finished."""
        self._poll(lambda: len(self.runs(job_name)) >= count, timeout, f"{count} run(s) of {job_name!r}")
        return [self.wait_for_execution(e["executionArn"], timeout=timeout) for e in self.runs(job_name)]

    def execution_history(self, execution_arn: str) -> list[dict[str, Any]]:
        sfn = self.boto3_client("stepfunctions")
        pages = sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
        return [event for page in pages for event in page["events"]]

    # --- notifications ---

    def subscribe_queue(self, *, raw: bool = False) -> str:
        """A new SQS queue subscribed to the notification topic (as a machine subscriber would be)."""
        self._subscriber_count += 1
        sqs, sns = self.boto3_client("sqs"), self.boto3_client("sns")
        url = sqs.create_queue(QueueName=f"subscriber-{self._subscriber_count}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(
            TopicArn=self.topic_arn,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true" if raw else "false"},
        )
        return url

    def receive_notifications(self, queue_url: str, *, count: int = 1, timeout: float = 30) -> list[dict]:
        """SNS deliveries on a subscriber queue: the envelope (``Message`` as sent to SQS), oldest first."""
        sqs = self.boto3_client("sqs")
        received: list[dict] = []

        def enough() -> bool:
            for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            ):
                received.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            return len(received) >= count

        self._poll(enough, timeout, f"{count} notification(s)")
        return received

    # --- internals ---

    def _poll(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for {what}")
            time.sleep(0.1)

    def _create_resources(self) -> None:
        resources = self.template.get("Resources", {})
        for logical_id, resource in resources.items():
            self._name(logical_id, resource)
        for resource_type in CREATED_TYPES:
            items = resources_of_type(self.template, resource_type)
            if resource_type == "AWS::SQS::Queue":  # dead-letter queues first
                items = dict(
                    sorted(items.items(), key=lambda kv: "RedrivePolicy" in kv[1].get("Properties", {}))
                )
            for logical_id, resource in items.items():
                properties = self.resolver.resolve(resource.get("Properties", {}))
                getattr(self, "_create_" + resource_type.split("::", 1)[1].replace("::", "_").lower())(
                    logical_id, properties
                )
        self.outputs = {
            name: self.resolver.resolve(output["Value"])
            for name, output in self.template.get("Outputs", {}).items()
        }

    def _physical_name(self, logical_id: str, limit: int = 64, lower: bool = False) -> str:
        name = _NAME_UNSAFE.sub("-", f"{self.stack_name}-{logical_id}")[:limit]
        return name.lower() if lower else name

    def _name(self, logical_id: str, resource: dict[str, Any]) -> None:
        """Give every resource the Ref and attributes CloudFormation would, before any is created."""
        kind, props = resource["Type"], resource.get("Properties", {})
        arn = f"arn:aws:{{}}:{self.region}:{ACCOUNT_ID}:{{}}"
        define = self.resolver.define
        if kind == "AWS::S3::Bucket":
            name = props.get("BucketName") or self._physical_name(logical_id, 63, lower=True)
            define(logical_id, name, Arn=f"arn:aws:s3:::{name}", DomainName=f"{name}.s3.amazonaws.com")
        elif kind == "AWS::SNS::Topic":
            name = props.get("TopicName") or self._physical_name(logical_id, 256)
            define(logical_id, arn.format("sns", name), TopicArn=arn.format("sns", name), TopicName=name)
        elif kind == "AWS::SQS::Queue":
            name = props.get("QueueName") or self._physical_name(logical_id, 80)
            url = f"{self.endpoint_url}/{ACCOUNT_ID}/{name}"
            define(logical_id, url, Arn=arn.format("sqs", name), QueueName=name, QueueUrl=url)
        elif kind == "AWS::DynamoDB::Table":
            name = props.get("TableName") or self._physical_name(logical_id, 255)
            define(logical_id, name, Arn=arn.format("dynamodb", f"table/{name}"))
        elif kind == "AWS::Lambda::Function":
            name = props.get("FunctionName") or self._physical_name(logical_id, 64)
            define(logical_id, name, Arn=arn.format("lambda", f"function:{name}"))
        elif kind == "AWS::StepFunctions::StateMachine":
            name = props.get("StateMachineName") or self._physical_name(logical_id, 80)
            state_machine_arn = arn.format("states", f"stateMachine:{name}")
            define(logical_id, state_machine_arn, Arn=state_machine_arn, Name=name)
        elif kind == "AWS::IAM::Role":
            name = props.get("RoleName") or self._physical_name(logical_id, 64)
            define(logical_id, name, Arn=f"arn:aws:iam::{ACCOUNT_ID}:role/{name}", RoleId=f"AROA{name[:16]}")
        elif kind == "AWS::Events::Rule":
            name = props.get("Name") or self._physical_name(logical_id, 64)
            define(logical_id, name, Arn=arn.format("events", f"rule/{name}"))
        else:  # modelled only as far as references to it go
            name = self._physical_name(logical_id)
            service = kind.split("::")[1].lower()
            define(logical_id, name, Arn=arn.format(service, name), KeyId=name, Name=name)

    def _create_iam_role(self, logical_id: str, props: dict) -> None:
        self.boto3_client("iam").create_role(
            RoleName=self.resolver.ref(logical_id),
            AssumeRolePolicyDocument=json.dumps(props.get("AssumeRolePolicyDocument", {})),
        )

    def _create_s3_bucket(self, logical_id: str, props: dict) -> None:
        s3 = self.boto3_client("s3")
        name = self.resolver.ref(logical_id)
        s3.create_bucket(Bucket=name)
        if (
            (props.get("NotificationConfiguration") or {})
            .get("EventBridgeConfiguration", {})
            .get("EventBridgeEnabled")
        ):
            s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}}
            )

    def _create_sns_topic(self, logical_id: str, props: dict) -> None:
        self.boto3_client("sns").create_topic(Name=self.resolver.get_att(logical_id, "TopicName"))

    def _create_sqs_queue(self, logical_id: str, props: dict) -> None:
        attributes = {}
        if "VisibilityTimeout" in props:
            attributes["VisibilityTimeout"] = str(props["VisibilityTimeout"])
        if "MessageRetentionPeriod" in props:
            attributes["MessageRetentionPeriod"] = str(props["MessageRetentionPeriod"])
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        url = self.boto3_client("sqs").create_queue(
            QueueName=self.resolver.get_att(logical_id, "QueueName"), Attributes=attributes
        )["QueueUrl"]
        self.resolver.attributes[logical_id].update(Ref=url, QueueUrl=url)

    def _create_dynamodb_table(self, logical_id: str, props: dict) -> None:
        ddb = self.boto3_client("dynamodb")
        name = self.resolver.ref(logical_id)
        ddb.create_table(
            TableName=name,
            KeySchema=props["KeySchema"],
            AttributeDefinitions=props["AttributeDefinitions"],
            BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
        )
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)

    def _create_lambda_function(self, logical_id: str, props: dict) -> None:
        name = self.resolver.ref(logical_id)
        environment = {k: str(v) for k, v in (props.get("Environment") or {}).get("Variables", {}).items()}
        self.boto3_client("lambda").create_function(
            FunctionName=name,
            Runtime=props["Runtime"],
            Role=props["Role"],
            Handler=props["Handler"],
            Code={"ZipFile": _placeholder_zip()},
            Timeout=int(props.get("Timeout", 3)),
            MemorySize=int(props.get("MemorySize", 128)),
            Environment={"Variables": environment},
        )
        moto_shims.route_lambda(
            name,
            moto_shims.LambdaRoute(
                handler=props["Handler"],
                environment={**environment, **self.client_environment, "AWS_LAMBDA_FUNCTION_NAME": name},
                memory_mb=int(props.get("MemorySize", 128)),
                timeout_s=int(props.get("Timeout", 3)),
            ),
        )

    def _create_stepfunctions_statemachine(self, logical_id: str, props: dict) -> None:
        definition = props["DefinitionString"]
        for key, value in (props.get("DefinitionSubstitutions") or {}).items():
            definition = definition.replace("${" + key + "}", str(value))
        self.boto3_client("stepfunctions").create_state_machine(
            name=self.resolver.get_att(logical_id, "Name"),
            definition=definition,
            roleArn=props["RoleArn"],
            type=props.get("StateMachineType", "STANDARD"),
        )

    def _create_lambda_eventsourcemapping(self, logical_id: str, props: dict) -> None:
        params = {"EventSourceArn": props["EventSourceArn"], "FunctionName": props["FunctionName"]}
        if "BatchSize" in props:
            params["BatchSize"] = int(props["BatchSize"])
        if "FunctionResponseTypes" in props:
            params["FunctionResponseTypes"] = props["FunctionResponseTypes"]
        self.boto3_client("lambda").create_event_source_mapping(**params)

    def _create_events_rule(self, logical_id: str, props: dict) -> None:
        events = self.boto3_client("events")
        name = self.resolver.ref(logical_id)
        events.put_rule(
            Name=name,
            EventPattern=json.dumps(props["EventPattern"]),
            State=props.get("State", "ENABLED"),
            EventBusName=props.get("EventBusName", "default"),
        )
        targets = [{"Id": t["Id"], "Arn": t["Arn"]} for t in props.get("Targets", [])]
        if targets:
            events.put_targets(Rule=name, Targets=targets)

    def _create_sns_subscription(self, logical_id: str, props: dict) -> None:
        if props.get("Protocol") not in {"sqs", "lambda"}:
            return  # e-mail and HTTP endpoints are outside the emulation
        self.boto3_client("sns").subscribe(
            TopicArn=props["TopicArn"], Protocol=props["Protocol"], Endpoint=props["Endpoint"]
        )


def _require_free_port(port: int) -> None:
    """ThreadedMotoServer waits forever when its port is taken: fail first, and say so."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            raise OSError(
                f"port {port} on 127.0.0.1 is in use; pick another or let the emulator choose"
            ) from err


def _placeholder_zip() -> bytes:
    """moto needs a code package; the code that runs is the repository's, routed in-process."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "local_aws routes this function to its handler in-process\n")
    return buffer.getvalue()
