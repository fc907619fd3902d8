"""The deploy's trainer-image build, as a custom resource backed by CodeBuild (AWS calls only).

``start``: on Create/Update, start a build of the image tag (the ``trainer_image/`` hash) unless the
repository already holds that tag; ``check``: poll the build, and on failure raise with its log's tail.
The CDK Provider framework calls them as its onEvent / isComplete handlers.
"""

from __future__ import annotations

from typing import Any

from lambdas.pipeline.aws import error_code
from lambdas.pipeline.image_build_status import (
    ImageBuildFailed,
    image_uri,
    physical_id,
    progress,
)

BUILD_ID = "BuildId"
IMAGE_URI = "ImageUri"


def image_exists(ecr: Any, repository_name: str, tag: str) -> bool:
    try:
        ecr.describe_images(repositoryName=repository_name, imageIds=[{"imageTag": tag}])
    except Exception as err:
        if error_code(err) == "ImageNotFoundException":
            return False
        raise
    return True


def start(event: dict[str, Any], *, codebuild: Any, ecr: Any) -> dict[str, Any]:
    """onEvent: the physical id and, when a build was started, its id for ``check``."""
    props = event["ResourceProperties"]
    repository, tag = props["RepositoryName"], props["ImageTag"]
    response = {
        "PhysicalResourceId": physical_id(repository, tag),
        "Data": {IMAGE_URI: image_uri(props["RepositoryUri"], tag), BUILD_ID: ""},
    }
    if event["RequestType"] == "Delete":
        # Old images stay until the repository's lifecycle rule expires them: a job may still use one.
        return {"PhysicalResourceId": event["PhysicalResourceId"]}
    if image_exists(ecr, repository, tag):
        return response  # same source already built (e.g. a stack re-created or rolled back)
    build = codebuild.start_build(
        projectName=props["ProjectName"],
        environmentVariablesOverride=[{"name": "IMAGE_TAG", "value": tag, "type": "PLAINTEXT"}],
    )["build"]
    response["Data"][BUILD_ID] = build["id"]
    return response


def check(event: dict[str, Any], *, codebuild: Any, logs: Any) -> dict[str, Any]:
    """isComplete: ``{"IsComplete": False}`` while building; raises :class:`ImageBuildFailed` on failure."""
    build_id = (event.get("Data") or {}).get(BUILD_ID)
    if event["RequestType"] == "Delete" or not build_id:
        return {"IsComplete": True}
    (build,) = codebuild.batch_get_builds(ids=[build_id])["builds"]
    state = progress(build)
    if not state.complete:
        return {"IsComplete": False}
    if state.failure is None:
        return {"IsComplete": True}
    raise ImageBuildFailed(progress(build, log_tail(logs, build)).failure)


def log_tail(logs: Any, build: dict[str, Any], lines: int = 60) -> list[str]:
    """The last ``lines`` lines of the build's CloudWatch log; empty when it never wrote one."""
    where = build.get("logs") or {}
    if not where.get("groupName") or not where.get("streamName"):
        return []
    try:
        events = logs.get_log_events(
            logGroupName=where["groupName"],
            logStreamName=where["streamName"],
            limit=lines,
            startFromHead=False,
        )["events"]
    except Exception as err:
        if error_code(err) == "ResourceNotFoundException":
            return []
        raise
    return [line for event in events for line in event["message"].splitlines()]
