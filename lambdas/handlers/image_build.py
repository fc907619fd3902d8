"""Deploy-time custom resource: build the trainer image in CodeBuild and wait for it (CDK Provider)."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.pipeline import image_build
from lambdas.pipeline.aws import client

logger = Logger(service="dreambooth-image-build")


@logger.inject_lambda_context
def on_event(event: dict, context: LambdaContext) -> dict:
    result = image_build.start(event, codebuild=client("codebuild"), ecr=client("ecr"))
    logger.info("image build requested", extra={"request": event["RequestType"], "result": result})
    return result


@logger.inject_lambda_context
def is_complete(event: dict, context: LambdaContext) -> dict:
    try:
        result = image_build.check(event, codebuild=client("codebuild"), logs=client("logs"))
    except image_build.ImageBuildFailed as err:
        logger.error("image build failed", extra={"reason": str(err)})
        raise
    logger.info("image build polled", extra=result)
    return result
