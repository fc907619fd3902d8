"""State machine step: record how a run ended and write the notification for it."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.handlers.events import FinishEvent
from lambdas.pipeline import run_metrics
from lambdas.pipeline.config import PipelineSettings
from lambdas.pipeline.runs import finish_failed, finish_succeeded

logger = Logger(service="dreambooth-pipeline")


@logger.inject_lambda_context
@event_parser(model=FinishEvent)
def handler(event: FinishEvent, context: LambdaContext) -> dict:
    logger.append_keys(job_name=event.state.job_name, run_id=event.state.run_id)
    finish = finish_succeeded if event.outcome == "succeeded" else finish_failed
    result = finish(event.state.model_dump(), PipelineSettings.from_environment())
    logger.info(
        run_metrics.LOG_MESSAGE,
        extra={"status": result["status"], "subject": result["subject"], **run_metrics.log_fields(result)},
    )
    return result
