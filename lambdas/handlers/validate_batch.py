"""State machine step: validate the sealed batch file by file, skip and report what cannot be used,
and freeze the accepted photos as the run's training input."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.handlers.events import RunRef
from lambdas.pipeline.batch_validation import validate
from lambdas.pipeline.config import PipelineSettings
from lambdas.pipeline.runs import record_validation

logger = Logger(service="dreambooth-pipeline")


@logger.inject_lambda_context
@event_parser(model=RunRef)
def handler(event: RunRef, context: LambdaContext) -> dict:
    logger.append_keys(job_name=event.job_name, run_id=event.run_id)
    settings = PipelineSettings.from_environment()
    result = record_validation(
        event.job_name, event.run_id, validate(event.job_name, event.run_id, settings), settings
    )
    logger.info(
        "batch validated", extra={k: result[k] for k in ("valid", "images", "problems", "skipped", "notes")}
    )
    return result
