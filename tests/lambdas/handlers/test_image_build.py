"""lambdas/handlers/image_build.py: the Provider's onEvent / isComplete handlers, clients stubbed."""

from dataclasses import dataclass

import boto3
import pytest
from botocore.stub import Stubber

from lambdas.handlers import image_build
from lambdas.pipeline.image_build import ImageBuildFailed


@dataclass
class Context:
    function_name: str = "image-build"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:image-build"
    aws_request_id: str = "req-1"


PROPS = {
    "ProjectName": "TrainerImageBuild",
    "RepositoryName": "trainer",
    "RepositoryUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer",
    "ImageTag": "4f2a",
}


@pytest.fixture
def clients(monkeypatch):
    made = {name: boto3.client(name, region_name="us-east-1") for name in ("codebuild", "ecr", "logs")}
    stubbers = {name: Stubber(c) for name, c in made.items()}
    for s in stubbers.values():
        s.activate()
    monkeypatch.setattr(image_build, "client", made.__getitem__)
    yield stubbers
    for s in stubbers.values():
        s.assert_no_pending_responses()


def test_the_provider_round_trip_builds_then_reports_a_failure(clients):
    clients["ecr"].add_client_error("describe_images", service_error_code="ImageNotFoundException")
    clients["codebuild"].add_response("start_build", {"build": {"id": "b:1"}})
    started = image_build.on_event({"RequestType": "Create", "ResourceProperties": PROPS}, Context())
    assert started["Data"]["BuildId"] == "b:1"

    clients["codebuild"].add_response(
        "batch_get_builds", {"builds": [{"id": "b:1", "buildStatus": "IN_PROGRESS"}]}
    )
    event = {"RequestType": "Create", "ResourceProperties": PROPS, **started}
    assert image_build.is_complete(event, Context()) == {"IsComplete": False}

    clients["codebuild"].add_response(
        "batch_get_builds", {"builds": [{"id": "b:1", "buildStatus": "TIMED_OUT", "phases": []}]}
    )
    with pytest.raises(ImageBuildFailed, match="ended TIMED_OUT"):
        image_build.is_complete(event, Context())
