"""A Powertools-logging handler the log-key tests run as two functions at once (imported by dotted name)."""

import io
import threading

from aws_lambda_powertools import Logger

LOG = io.StringIO()
logger = Logger(service="local-aws-logging-fixture", stream=LOG)
# Both invocations append their keys, then wait for each other before logging: the worst interleaving.
together = threading.Barrier(2, timeout=20)


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    logger.append_keys(job_name=event["job_name"])
    together.wait()
    logger.info("working")
    return {"job_name": event["job_name"]}
