"""State machine step: is the batch complete (job.json or quiet)? When it is, seal it for this run."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.handlers.events import RunRef
from lambdas.pipeline.batch_checks import check_batch
from lambdas.pipeline.config import PipelineSettings

logger = Logger(service="dreambooth-pipeline")


@logger.inject_lambda_context
@event_parser(model=RunRef)
def handler(event: RunRef, context: LambdaContext) -> dict:
    logger.append_keys(job_name=event.job_name, run_id=event.run_id)
    result = check_batch(event.job_name, event.run_id, PipelineSettings.from_environment())
    logger.info("batch checked", extra=result)
    return result
