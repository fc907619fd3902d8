"""Training jobs in the deployer's VPC (context training_subnet_ids / training_security_group_ids)."""

import json

from infra.workflow import train_state_json

SUBNETS = ["subnet-0a1b2c3d", "subnet-0e5f6a7b"]  # what tests/infra/conftest.py's vpc_resources uses
GROUPS = ["sg-0123abcd"]


def execution_role_statements(resources):
    (role_id,) = [
        k
        for k, r in resources.items()
        if r["Type"] == "AWS::IAM::Role" and "sagemaker.amazonaws.com" in json.dumps(r["Properties"])
    ]
    return [
        s
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in r["Properties"]["Roles"]
        for s in r["Properties"]["PolicyDocument"]["Statement"]
    ]


def train_parameters(resources) -> dict:
    """The Train state's Parameters, references replaced by a placeholder (they sit inside JSON strings)."""
    (state_machine,) = [
        r
        for k, r in resources.items()
        if r["Type"] == "AWS::StepFunctions::StateMachine" and k.startswith("PipelineRuns")
    ]
    parts = state_machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    definition = json.loads("".join(p if isinstance(p, str) else "REF" for p in parts))
    return definition["States"]["Train"]["Parameters"]


def test_the_train_state_runs_jobs_in_the_given_subnets_and_security_groups(vpc_resources):
    assert train_parameters(vpc_resources)["VpcConfig"] == {"Subnets": SUBNETS, "SecurityGroupIds": GROUPS}


def test_without_vpc_context_jobs_have_no_vpc_config(resources):
    assert "VpcConfig" not in train_parameters(resources)
    assert "VpcConfig" not in train_state_json(partition="aws", image_uri="i", role_arn="r")


def test_the_execution_role_may_attach_network_interfaces_only_in_those_subnets(vpc_resources, resources):
    statements = execution_role_statements(vpc_resources)
    (create,) = [s for s in statements if "ec2:CreateNetworkInterface" in s["Action"]]
    text = json.dumps(create["Resource"])
    assert all(f"subnet/{s}" in text for s in SUBNETS) and f"security-group/{GROUPS[0]}" in text
    assert "network-interface/*" in text
    assert not any("ec2:" in json.dumps(s["Action"]) for s in execution_role_statements(resources))
