"""State machine steps around Train: wait for a training slot, give it back after an error (or requeue on a
quota error), and give it back when an execution ends without its own cleanup (EventBridge)."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.handlers.events import SlotEvent
from lambdas.pipeline.config import PipelineSettings
from lambdas.pipeline.queue import acquire_slot, after_training_error, release_ended_execution

logger = Logger(service="dreambooth-pipeline")


@logger.inject_lambda_context
@event_parser(model=SlotEvent)
def handler(event: SlotEvent, context: LambdaContext) -> dict:
    settings = PipelineSettings.from_environment()
    if event.action == "execution_ended":
        released = release_ended_execution(event.detail, settings)
        logger.info("execution ended", extra={"released": released, "status": event.detail.get("status")})
        return {"released": released}
    logger.append_keys(job_name=event.job_name, run_id=event.run_id)
    if event.action == "acquire":
        slot = acquire_slot(event.job_name, event.run_id, event.slot, event.job, settings)
        logger.info("training slot", extra=slot)
        return slot
    slot = after_training_error(event.job_name, event.run_id, event.slot, event.error, settings)
    logger.info("training error", extra=slot)
    return slot
