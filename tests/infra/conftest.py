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


@pytest.fixture(scope="session")
def vpc_resources():
    """The stack with training jobs in a VPC (context training_subnet_ids / training_security_group_ids)."""
    app = build_app(
        {
            "stack_name": "Vpc",
            "training_subnet_ids": "subnet-0a1b2c3d,subnet-0e5f6a7b",
            "training_security_group_ids": ["sg-0123abcd"],
        }
    )
    return app.synth().get_stack_by_name("Vpc").template["Resources"]


@pytest.fixture(scope="session")
def isolation_resources():
    """The stack with network-isolated training for S3 base models (context training_network_isolation)."""
    app = build_app({"stack_name": "Isolated", "training_network_isolation": True})
    return app.synth().get_stack_by_name("Isolated").template["Resources"]
