"""Network-isolated training (context training_network_isolation): the UnpackModel step and its rights."""

import json

from tests.infra.test_least_privilege import assert_wildcards_unscopable
from tests.infra.test_training_vpc import train_parameters


def states(resources) -> dict:
    (state_machine,) = [
        r
        for k, r in resources.items()
        if r["Type"] == "AWS::StepFunctions::StateMachine" and k.startswith("PipelineRuns")
    ]
    parts = state_machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    return json.loads("".join(p if isinstance(p, str) else "REF" for p in parts))["States"]


def functions(resources) -> dict[str, dict]:
    return {
        r["Properties"]["Handler"]: r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and "Handler" in r["Properties"]
    }


def role_statements(resources, handler: str) -> list[dict]:
    (role,) = [
        r["Properties"]["Role"]["Fn::GetAtt"][0]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler") == handler
    ]
    return [
        s
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy" and {"Ref": role} in r["Properties"]["Roles"]
        for s in r["Properties"]["PolicyDocument"]["Statement"]
    ]


UNPACK = "lambdas.handlers.unpack_model.handler"


def object_path(resource) -> str:
    """The literal part of bucket.arn_for_objects(...): {"Fn::Join": ["", [<bucket arn>, "/models/*"]]}."""
    return "".join(part for part in resource["Fn::Join"][1] if isinstance(part, str))


def test_an_isolated_run_is_unpacked_before_it_is_summarized(isolation_resources):
    machine = states(isolation_resources)
    assert (
        train_parameters(isolation_resources)["EnableNetworkIsolation.$"]
        == "$.request.EnableNetworkIsolation"
    )
    assert machine["Train"]["Next"] == "ModelInTarball?"
    choice = machine["ModelInTarball?"]
    assert choice["Choices"] == [
        {"Variable": "$.request.EnableNetworkIsolation", "BooleanEquals": True, "Next": "UnpackModel"}
    ]
    assert choice["Default"] == "Summarize"
    unpack = machine["UnpackModel"]
    assert unpack["Next"] == "Summarize" and unpack["TimeoutSeconds"] == 900
    assert unpack["Catch"][0]["Next"] == "UnpackModelFailed"
    assert machine["UnpackModelFailed"]["Result"] == "unpacking the model"


def test_the_unpack_function_reads_sagemaker_output_and_writes_only_models(isolation_resources):
    unpack = functions(isolation_resources)[UNPACK]
    assert unpack["Timeout"] == 900
    assert all(
        f["Environment"]["Variables"]["TRAINING_NETWORK_ISOLATION"] == "true"
        for f in functions(isolation_resources).values()
        if "TRAINING_NETWORK_ISOLATION" in f["Environment"]["Variables"]
    )
    s3 = [s for s in role_statements(isolation_resources, UNPACK) if "s3:" in json.dumps(s["Action"])]
    granted = {
        (action, object_path(s["Resource"]))
        for s in s3
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert granted == {
        ("s3:GetObject", "/sagemaker-output/*"),
        ("s3:PutObject", "/models/*"),
        ("s3:DeleteObject", "/models/*"),
    }
    assert_wildcards_unscopable(isolation_resources)


def test_without_the_context_runs_are_never_isolated(resources):
    assert "UnpackModel" not in states(resources) and states(resources)["Train"]["Next"] == "Summarize"
    assert UNPACK not in functions(resources)
    builder = functions(resources)["lambdas.handlers.build_training_request.handler"]
    assert builder["Environment"]["Variables"]["TRAINING_NETWORK_ISOLATION"] == "false"
