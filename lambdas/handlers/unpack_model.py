"""State machine step (network-isolated runs only): unpack SageMaker's model.tar.gz into the model prefix."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.handlers.events import RunRef
from lambdas.pipeline.aws import client
from lambdas.pipeline.config import PipelineSettings
from lambdas.pipeline.model_handover import unpack_model

logger = Logger(service="dreambooth-pipeline")


@logger.inject_lambda_context
@event_parser(model=RunRef)
def handler(event: RunRef, context: LambdaContext) -> dict:
    logger.append_keys(job_name=event.job_name, run_id=event.run_id)
    settings = PipelineSettings.from_environment()
    unpacked = unpack_model(client("s3"), settings.bucket, event.job_name, event.run_id)
    logger.info("model unpacked", extra=unpacked)
    return unpacked
