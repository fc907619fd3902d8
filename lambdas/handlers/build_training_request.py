"""State machine step: the per-run fields of CreateTrainingJob for a validated batch."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.handlers.events import TrainingRequestEvent
from lambdas.pipeline.config import PipelineSettings
from lambdas.pipeline.runs import training_request

logger = Logger(service="dreambooth-pipeline")


@logger.inject_lambda_context
@event_parser(model=TrainingRequestEvent)
def handler(event: TrainingRequestEvent, context: LambdaContext) -> dict:
    logger.append_keys(job_name=event.job_name, run_id=event.run_id)
    request = training_request(event.job_name, event.run_id, event.job, PipelineSettings.from_environment())
    logger.info("training request built", extra={"training_job_name": request["TrainingJobName"]})
    return request
