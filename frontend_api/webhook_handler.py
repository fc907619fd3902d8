"""SQS (subscribed to the notification topic) -> webhook deliveries for jobs created with a webhook_url."""

from __future__ import annotations

import json

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.typing import LambdaContext

from frontend_api.settings import ApiSettings
from frontend_api.store import ApiStore
from frontend_api.webhooks import Delivery, deliver, delivery_body
from lambdas.pipeline.aws import client

logger = Logger(service="dreambooth-api")


def webhook_secret(settings: ApiSettings) -> str:
    if not settings.webhook_secret_id:
        raise RuntimeError("WEBHOOK_SECRET_ID is not set: webhooks cannot be signed")
    provider = SecretsProvider(boto3_client=client("secretsmanager"))
    return str(provider.get(settings.webhook_secret_id, max_age=300))


def result_of(record_body: str) -> dict:
    """The run result from an SNS envelope (or a raw delivery)."""
    body = json.loads(record_body)
    if isinstance(body, dict) and body.get("Type") == "Notification" and "Message" in body:
        return json.loads(body["Message"])
    return body


@logger.inject_lambda_context
def handler(event: dict, context: LambdaContext) -> dict:
    settings = ApiSettings.from_environment()
    store = ApiStore(settings.pipeline.table_name, client("dynamodb"))

    def record_handler(record: SQSRecord) -> None:
        result = result_of(record.body)
        job_name = result.get("job_name")
        job_id = store.job_id_for_name(job_name) if isinstance(job_name, str) and job_name else None
        job = store.get(job_id) if job_id else None
        if job is None or not job.webhook_url:
            return
        status = deliver(
            Delivery(job.webhook_url, delivery_body(job.id, result)),
            webhook_secret(settings),
            allow_local=settings.allow_local_urls,
        )
        logger.info("webhook", extra={"job_id": job.id, "run_id": result.get("run_id"), "status": status})

    processor = BatchProcessor(event_type=EventType.SQS)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
