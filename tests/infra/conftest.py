"""One synth (cdk-nag included) shared by every infra test module: a synth takes seconds."""

import pytest
from aws_cdk.assertions import Template

from app import build_app

EMAIL = "owner@example.com"
STACK_NAME = "TestDreamBooth"


@pytest.fixture(scope="session")
def stack_artifact():
    app = build_app({"notification_email": EMAIL, "stack_name": STACK_NAME})
    return app.synth().get_stack_by_name(STACK_NAME)


@pytest.fixture(scope="session")
def template(stack_artifact):
    return Template.from_json(stack_artifact.template)


@pytest.fixture(scope="session")
def resources(stack_artifact):
    return stack_artifact.template["Resources"]
