"""Every place where moto 5.2.5 needs help to run this stack: five small patches, one module.

1. Lambda: ``LambdaSimpleBackend.invoke`` echoes the payload instead of running code. Patched to call
   the real handler in-process (errors returned the way Lambda returns them, so they reach Retry/Catch),
   with its own environment and its own Powertools log keys (``local_aws.lambda_logging``).
2. Step Functions: ``sagemaker:createTrainingJob.sync`` fails with "Unsupported .sync callback
   procedure". A SageMaker task with a sync resolver (describe until Completed/Failed/Stopped) and AWS's
   error naming (``SageMaker.<Code>``) is registered instead.
3. SageMaker: training jobs are Completed on creation, and duplicate names overwrite. Patched so a job
   starts InProgress, names are unique (ResourceInUse), queued rejections (throttling, quota) can be
   injected, and a listener hears of each creation (tests drive the status, the local mode runs the trainer).
4. S3 -> EventBridge: moto sends the object key raw; S3 URL-encodes it (``+`` for a space, ``/`` kept).
   Patched to encode it the same way, and events can be held and released later (in any order, or
   twice) to reproduce late and duplicate deliveries.
5. S3 POST uploads: moto stores a presigned POST's file whatever its policy says. Patched to make S3's
   checks first (``local_aws.post_policy``: expiration, every condition, size range, no uncovered field).

Each shim is installed once per process by :func:`install` and is covered by a test that fails when
moto no longer needs it or when it stops working.
"""

from __future__ import annotations

import importlib
import json
import threading
import traceback
import types
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote_plus, unquote_plus

import moto

MOTO_VERSION = "5.2.5"
assert moto.__version__ == MOTO_VERSION, (
    f"local_aws's shims are written against moto {MOTO_VERSION}, found {moto.__version__}: "
    "re-check each shim (tests/local_aws/test_moto_shims.py) before moving the pin"
)

from moto.awslambda_simple.models import LambdaSimpleBackend  # noqa: E402
from moto.core.exceptions import ServiceException  # noqa: E402
from moto.s3 import models as s3_models  # noqa: E402
from moto.s3 import notifications as s3_notifications  # noqa: E402
from moto.s3.responses import S3Response  # noqa: E402
from moto.sagemaker import models as sagemaker_models  # noqa: E402
from moto.sagemaker.responses import SageMakerResponse  # noqa: E402
from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails  # noqa: E402
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (  # noqa: E402
    CustomErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (  # noqa: E402
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (  # noqa: E402
    StatesErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (  # noqa: E402
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory  # noqa: E402
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import (  # noqa: E402
    ResourceCondition,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback import (  # noqa: E402,E501
    StateTaskServiceCallback,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_unsupported import (  # noqa: E402,E501
    StateTaskServiceUnsupported,
)
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails  # noqa: E402
from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for  # noqa: E402
from moto.stepfunctions.parser.asl.utils.encoding import to_json_str  # noqa: E402
from moto.utilities.utils import get_partition as aws_partition  # noqa: E402

from lambdas.pipeline.config import function_environment  # noqa: E402
from local_aws.lambda_logging import invocation_log_keys  # noqa: E402
from local_aws.post_policy import check_post  # noqa: E402

_install_lock = threading.Lock()
_installed = False


def install() -> None:
    """Apply all five shims (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        LambdaSimpleBackend.invoke = _invoke_in_process
        state_task_factory.state_task_service_for = _state_task_service_for
        SageMakerResponse.create_training_job = _create_training_job
        s3_notifications._send_event_bridge_message = _send_event_bridge_message
        S3Response._bucket_response_post = _bucket_response_post
        _installed = True


# --- 1. Lambda functions run in-process -------------------------------------------------------------


@dataclass(frozen=True)
class LambdaRoute:
    """Where an emulated function's code lives and the environment it gets."""

    handler: str  # "package.module.function", the template's Handler property
    environment: dict[str, str]
    memory_mb: int = 256
    timeout_s: int = 60


_routes: dict[str, LambdaRoute] = {}
_original_invoke = LambdaSimpleBackend.invoke


def route_lambda(function_name: str, route: LambdaRoute | None) -> None:
    """Send invocations of ``function_name`` to ``route`` (None removes the route)."""
    if route is None:
        _routes.pop(function_name, None)
    else:
        _routes[function_name] = route


def clear_lambda_routes() -> None:
    _routes.clear()


class _Context:
    """The attributes of Lambda's context object that Powertools and handlers read."""

    def __init__(self, function_name: str, arn: str, route: LambdaRoute) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = route.memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._timeout_ms = route.timeout_s * 1000

    def get_remaining_time_in_millis(self) -> int:
        return self._timeout_ms


def _invoke_in_process(
    self: LambdaSimpleBackend,
    function_name: str,
    qualifier: str | None,
    body: Any,
    headers: Any,
    response_headers: Any,
) -> bytes | None:
    name = function_name.split(":function:", 1)[-1].split(":", 1)[0]
    route = _routes.get(name)
    if route is None:
        return _original_invoke(self, function_name, qualifier, body, headers, response_headers)
    module_name, _, attribute = route.handler.rpartition(".")
    handler = getattr(importlib.import_module(module_name), attribute)
    event = json.loads(body) if body else {}
    arn = f"arn:aws:lambda:{self.region_name}:{self.account_id}:function:{name}"
    try:
        with function_environment(route.environment), invocation_log_keys():
            result = handler(event, _Context(name, arn, route))
    except Exception as err:  # returned as Lambda returns an unhandled error
        response_headers["x-amz-function-error"] = "Unhandled"
        payload = {
            "errorMessage": str(err),
            "errorType": type(err).__name__,
            "stackTrace": traceback.format_exception(err)[-8:],
        }
        return json.dumps(payload).encode()
    return json.dumps(result).encode()


# --- 2. Step Functions: sagemaker:createTrainingJob.sync ---------------------------------------------

_original_state_task_service_for = state_task_factory.state_task_service_for
_TERMINAL = {"Completed", "Failed", "Stopped"}


class SageMakerTrainingTask(StateTaskServiceUnsupported):
    """createTrainingJob (request-response or .sync) as Step Functions runs it."""

    def __init__(self) -> None:
        StateTaskServiceCallback.__init__(
            self,
            supported_integration_patterns={ResourceCondition.WaitForTaskToken, ResourceCondition.Sync},
        )

    def _log_unsupported_warning(self) -> None:
        pass  # supported now

    def _from_error(self, env, ex: Exception) -> FailureEvent:
        response = getattr(ex, "response", None)
        if not response or "Error" not in response:
            return super()._from_error(env=env, ex=ex)
        code = response["Error"].get("Code", "UnknownError")
        name = f"SageMaker.{code if code.endswith('Exception') else code + 'Exception'}"
        meta = response.get("ResponseMetadata", {})
        cause = (
            f"{response['Error'].get('Message', '')} (Service: AmazonSageMaker; "
            f"Status Code: {meta.get('HTTPStatusCode', 400)}; Error Code: {code}; "
            f"Request ID: {meta.get('RequestId', '')}; Proxy: null)"
        )
        return FailureEvent(
            env=env,
            error_name=CustomErrorName(name),
            event_type=HistoryEventType.TaskFailed,
            event_details=EventDetails(
                taskFailedEventDetails=TaskFailedEventDetails(
                    error=name,
                    cause=cause,
                    resource=self._get_sfn_resource(),
                    resourceType=self._get_sfn_resource_type(),
                )
            ),
        )

    def _build_sync_resolver(self, env, resource_runtime_part, normalised_parameters, state_credentials):
        client = boto_client_for(
            service="sagemaker", region=resource_runtime_part.region, state_credentials=state_credentials
        )
        env.stack.pop()  # the create response; the job is named in the request
        name = normalised_parameters["TrainingJobName"]

        def resolve() -> dict | None:
            described = client.describe_training_job(TrainingJobName=name)
            described.pop("ResponseMetadata", None)
            status = described["TrainingJobStatus"]
            if status not in _TERMINAL:
                return None
            if status == "Completed":
                return described
            raise FailureEventException(
                FailureEvent(
                    env=env,
                    error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                    event_type=HistoryEventType.TaskFailed,
                    event_details=EventDetails(
                        taskFailedEventDetails=TaskFailedEventDetails(
                            resource=self._get_sfn_resource(),
                            resourceType=self._get_sfn_resource_type(),
                            error=StatesErrorNameType.StatesTaskFailed.to_name(),
                            cause=to_json_str(described),
                        )
                    ),
                )
            )

        return resolve


def _state_task_service_for(service_name: str):
    if service_name == "sagemaker":
        return SageMakerTrainingTask()
    return _original_state_task_service_for(service_name)


# --- 3. SageMaker training jobs: InProgress, unique, rejectable, observable ---------------------------


@dataclass
class TrainingJobHooks:
    """What happens when CreateTrainingJob is called; one instance is active per emulator."""

    rejections: deque[tuple[str, str]] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    on_created: Callable[[dict[str, Any]], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class SageMakerApiError(ServiceException):
    """An AWS error answered by the emulated SageMaker (defined outside moto: moto then serializes it
    with the SageMaker service model instead of looking up a service from the module name)."""


_hooks = TrainingJobHooks()
_original_create_training_job = SageMakerResponse.create_training_job


def training_job_hooks() -> TrainingJobHooks:
    return _hooks


def reset_training_job_hooks() -> TrainingJobHooks:
    global _hooks
    _hooks = TrainingJobHooks()
    return _hooks


def _create_training_job(self: SageMakerResponse):
    request = json.loads(self.body)
    name = request.get("TrainingJobName", "")
    hooks = _hooks
    with hooks.lock:
        if hooks.rejections:
            code, message = hooks.rejections.popleft()
            raise SageMakerApiError(code, message)
        if name in self.sagemaker_backend.training_jobs:
            raise SageMakerApiError(
                "ResourceInUse",
                "Training job names must be unique within an AWS account and region, and a training job "
                f"with this name already exists ({self.sagemaker_backend.training_jobs[name].arn})",
            )
        result = _original_create_training_job(self)
        job = self.sagemaker_backend.training_jobs[name]
        job.training_job_status = "InProgress"
        job.secondary_status = "Starting"
        job.training_end_time = None
        job.algorithm_specification = request.get("AlgorithmSpecification", {})  # moto overwrites metrics
        hooks.requests.append(request)
    if hooks.on_created is not None:
        hooks.on_created(request)
    return result


def set_training_job_status(
    name: str,
    status: str,
    *,
    failure_reason: str | None = None,
    training_seconds: int | None = None,
    billable_seconds: int | None = None,
    account_id: str = "123456789012",
    region: str = "us-east-1",
) -> None:
    """Move an emulated training job to ``status`` (what SageMaker would report when it ends)."""
    job = sagemaker_models.sagemaker_backends[account_id][region].training_jobs[name]
    job.training_job_status = status
    job.secondary_status = {"Completed": "Completed", "Failed": "Failed", "Stopped": "Stopped"}.get(
        status, status
    )
    if status in _TERMINAL:
        job.training_end_time = sagemaker_models.utcnow()
        if training_seconds is not None:
            job.training_time_in_seconds = training_seconds
        if billable_seconds is not None:
            job.billable_time_in_seconds = billable_seconds
    if failure_reason is not None:
        job.failure_reason = failure_reason


# --- 4. S3 -> EventBridge: encoded keys; hold, release and redeliver -----------------------------------


class HeldEvent(NamedTuple):
    account_id: str
    bucket: Any
    event_name: str
    key: Any  # a snapshot of the object (encoded name, size, etag, version) when it was written

    @property
    def object_key(self) -> str:
        return unquote_plus(self.key.name)


_original_send_event_bridge_message = s3_notifications._send_event_bridge_message
_held: list[HeldEvent] | None = None
_held_lock = threading.Lock()


def _send_event_bridge_message(account_id: str, bucket: Any, event_name: str, key: Any) -> None:
    snapshot = types.SimpleNamespace(
        name=quote_plus(key.name, safe="/"), size=key.size, etag=key.etag, version_id=key.version_id
    )
    with _held_lock:
        if _held is not None and "ObjectCreated" in event_name:
            _held.append(HeldEvent(account_id, bucket, event_name, snapshot))
            return
    _original_send_event_bridge_message(account_id, bucket, event_name, snapshot)


def hold_s3_events() -> None:
    """From now on, S3's "Object Created" events are kept instead of sent (see :func:`release_s3_events`)."""
    global _held
    with _held_lock:
        _held = [] if _held is None else _held


def release_s3_events(order: Callable[[list[HeldEvent]], list[HeldEvent]] | None = None) -> int:
    """Stop holding and send the held events; ``order`` may reorder, repeat or drop them. Returns how many."""
    global _held
    with _held_lock:
        held, _held = _held or [], None
    events = order(list(held)) if order else held
    for event in events:
        _original_send_event_bridge_message(*event)
    return len(events)


def redeliver_object_created(bucket_name: str, key_name: str, *, account_id: str, region: str) -> None:
    """Send S3's "Object Created" event for an existing object again: a late or duplicate delivery."""
    bucket = s3_models.s3_backends[account_id][aws_partition(region)].get_bucket(bucket_name)
    key = bucket.keys[key_name]
    _send_event_bridge_message(account_id, bucket, "s3:ObjectCreated:Put", key)


# --- 5. S3 POST uploads meet their policy -----------------------------------------------------------

_original_bucket_response_post = S3Response._bucket_response_post


def _bucket_response_post(self: S3Response, request: Any, bucket_name: str) -> Any:
    """A browser-based upload (a form with a policy) is checked as S3 checks it before anything is stored."""
    fields = {name: value for name, value in self.form_data.items() if name.lower() != "file"}
    if "policy" in {name.lower() for name in fields}:
        body = self.raw_body if isinstance(self.raw_body, bytes) else str(self.raw_body).encode()
        refusal = check_post(fields, bucket_name, len(body))
        if refusal is not None:
            return refusal.status, {"Content-Type": "application/xml"}, refusal.xml()
    return _original_bucket_response_post(self, request, bucket_name)
