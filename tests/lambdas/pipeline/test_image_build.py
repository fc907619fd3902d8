"""lambdas/pipeline/image_build.py: start and poll the CodeBuild build, against stubbed AWS clients."""

import boto3
import pytest
from botocore.stub import Stubber

from lambdas.pipeline.image_build import ImageBuildFailed, check, start

PROPS = {
    "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:provider",
    "ProjectName": "TrainerImageBuild",
    "RepositoryName": "trainer",
    "RepositoryUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer",
    "ImageTag": "4f2a",
    "SourceHash": "4f2a",
}
URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:4f2a"


@pytest.fixture
def stubbed():
    clients = {name: boto3.client(name, region_name="us-east-1") for name in ("codebuild", "ecr", "logs")}
    stubbers = {name: Stubber(c) for name, c in clients.items()}
    for s in stubbers.values():
        s.activate()
    yield clients, stubbers
    for s in stubbers.values():
        s.assert_no_pending_responses()
        s.deactivate()


def expect_no_image(stubbers):
    stubbers["ecr"].add_client_error(
        "describe_images",
        service_error_code="ImageNotFoundException",
        expected_params={"repositoryName": "trainer", "imageIds": [{"imageTag": "4f2a"}]},
    )


def test_create_starts_a_build_of_the_tag(stubbed):
    clients, stubbers = stubbed
    expect_no_image(stubbers)
    stubbers["codebuild"].add_response(
        "start_build",
        {"build": {"id": "TrainerImageBuild:1"}},
        {
            "projectName": "TrainerImageBuild",
            "environmentVariablesOverride": [{"name": "IMAGE_TAG", "value": "4f2a", "type": "PLAINTEXT"}],
        },
    )
    result = start(
        {"RequestType": "Create", "ResourceProperties": PROPS},
        codebuild=clients["codebuild"],
        ecr=clients["ecr"],
    )
    assert result == {
        "PhysicalResourceId": "trainer:4f2a",
        "Data": {"ImageUri": URI, "BuildId": "TrainerImageBuild:1"},
    }


def test_an_image_already_in_the_repository_is_not_built_again(stubbed):
    clients, stubbers = stubbed
    stubbers["ecr"].add_response("describe_images", {"imageDetails": [{"imageTags": ["4f2a"]}]})
    result = start(
        {"RequestType": "Update", "ResourceProperties": PROPS},
        codebuild=clients["codebuild"],
        ecr=clients["ecr"],
    )
    assert result["Data"] == {"ImageUri": URI, "BuildId": ""}
    assert check(
        {"RequestType": "Update", **result}, codebuild=clients["codebuild"], logs=clients["logs"]
    ) == {"IsComplete": True}


def test_delete_keeps_the_image_and_calls_nothing(stubbed):
    clients, _ = stubbed
    event = {"RequestType": "Delete", "PhysicalResourceId": "trainer:old", "ResourceProperties": PROPS}
    assert start(event, codebuild=clients["codebuild"], ecr=clients["ecr"]) == {
        "PhysicalResourceId": "trainer:old"
    }
    assert check(event, codebuild=clients["codebuild"], logs=clients["logs"]) == {"IsComplete": True}


def poll_event():
    return {
        "RequestType": "Create",
        "ResourceProperties": PROPS,
        "PhysicalResourceId": "trainer:4f2a",
        "Data": {"ImageUri": URI, "BuildId": "TrainerImageBuild:1"},
    }


def test_a_running_build_is_not_complete_and_a_succeeded_one_is(stubbed):
    clients, stubbers = stubbed
    for status in ["IN_PROGRESS", "SUCCEEDED"]:
        stubbers["codebuild"].add_response(
            "batch_get_builds",
            {"builds": [{"id": "TrainerImageBuild:1", "buildStatus": status}]},
            {"ids": ["TrainerImageBuild:1"]},
        )
    assert check(poll_event(), codebuild=clients["codebuild"], logs=clients["logs"]) == {"IsComplete": False}
    assert check(poll_event(), codebuild=clients["codebuild"], logs=clients["logs"]) == {"IsComplete": True}


def test_a_failed_build_fails_the_deploy_with_its_log_tail(stubbed):
    clients, stubbers = stubbed
    stubbers["codebuild"].add_response(
        "batch_get_builds",
        {
            "builds": [
                {
                    "id": "TrainerImageBuild:1",
                    "buildStatus": "FAILED",
                    "phases": [
                        {
                            "phaseType": "BUILD",
                            "phaseStatus": "FAILED",
                            "contexts": [{"message": "COMMAND_EXECUTION_ERROR: docker build exit status 1"}],
                        }
                    ],
                    "logs": {"groupName": "/build/logs", "streamName": "s1"},
                }
            ]
        },
    )
    stubbers["logs"].add_response(
        "get_log_events",
        {
            "events": [
                {"message": "Step 5/9 : RUN pip install\n"},
                {"message": "ERROR: No matching distribution\n"},
            ]
        },
        {"logGroupName": "/build/logs", "logStreamName": "s1", "limit": 60, "startFromHead": False},
    )
    with pytest.raises(ImageBuildFailed) as failed:
        check(poll_event(), codebuild=clients["codebuild"], logs=clients["logs"])
    message = str(failed.value)
    assert "ended FAILED in phase BUILD: COMMAND_EXECUTION_ERROR: docker build exit status 1" in message
    assert message.endswith("Step 5/9 : RUN pip install\nERROR: No matching distribution")


def test_other_ecr_errors_are_not_mistaken_for_a_missing_image(stubbed):
    clients, stubbers = stubbed
    stubbers["ecr"].add_client_error("describe_images", service_error_code="AccessDeniedException")
    with pytest.raises(Exception, match="AccessDenied"):
        start(
            {"RequestType": "Create", "ResourceProperties": PROPS},
            codebuild=clients["codebuild"],
            ecr=clients["ecr"],
        )
