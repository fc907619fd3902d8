"""SQS batch of S3 upload events (via EventBridge) -> join the open batch or open a run."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.handlers.events import S3TestEvent, UploadEventRecord
from lambdas.pipeline.config import PipelineSettings
from lambdas.pipeline.intake import handle_object_created

logger = Logger(service="dreambooth-pipeline")


@logger.inject_lambda_context
def handler(event: dict, context: LambdaContext) -> dict:
    settings = PipelineSettings.from_environment()

    def record_handler(record: UploadEventRecord) -> None:
        body = record.body
        if isinstance(body, S3TestEvent):
            logger.info("skipped s3:TestEvent")
            return
        if body.detail_type != "Object Created":
            logger.info("skipped event", extra={"detail_type": body.detail_type})
            return
        result = handle_object_created(body.detail.bucket.name, body.detail.object.key, settings)
        logger.info(
            "upload event",
            extra={
                "outcome": result.outcome,
                "job_name": result.job_name,
                "run_id": result.run_id,
                "detail": result.detail,
                "raw_key": body.detail.object.key,
            },
        )

    # A processor per invocation: in-process emulation may run two invocations at once.
    processor = BatchProcessor(event_type=EventType.SQS, model=UploadEventRecord)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
