"""infra/functions.py: each pipeline Lambda has its own role, encrypted log group, the Powertools layer."""

import json
import zipfile
from pathlib import Path

from aws_cdk import aws_lambda as lambda_

from infra.functions import (
    POWERTOOLS_ACCOUNT,
    POWERTOOLS_LAYER_VERSION,
    RUNTIME,
    lambda_wheel,
    pinned_requirement,
    powertools_layer_name,
)


def pipeline_functions(resources):
    return [
        r
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"].startswith("lambdas.handlers.")
    ]


def test_the_powertools_layer_name_follows_the_runtime():
    assert (
        powertools_layer_name(lambda_.Runtime.PYTHON_3_13) == "AWSLambdaPowertoolsPythonV3-python313-x86_64"
    )
    assert powertools_layer_name(lambda_.Runtime.PYTHON_3_14, "arm64") == (
        "AWSLambdaPowertoolsPythonV3-python314-arm64"
    )
    assert RUNTIME.name == "python3.14"


def test_every_pipeline_function_is_python_314_traced_with_json_logs_and_the_powertools_layer(resources):
    functions = pipeline_functions(resources)
    assert len(functions) == 8  # six pipeline steps, and the image build's onEvent and isComplete
    log_groups, roles = set(), set()
    for function in functions:
        props = function["Properties"]
        assert props["Runtime"] == "python3.14"
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        layer = props["Layers"][0]
        arn = "".join(p if isinstance(p, str) else "<ref>" for p in layer["Fn::Join"][1])
        assert arn.endswith(
            f":{POWERTOOLS_ACCOUNT}:layer:AWSLambdaPowertoolsPythonV3-python314-x86_64:{POWERTOOLS_LAYER_VERSION}"
        )
        log_groups.add(props["LoggingConfig"]["LogGroup"]["Ref"])
        roles.add(props["Role"]["Fn::GetAtt"][0])
    assert len(log_groups) == len(roles) == 8
    for log_group in log_groups:
        assert resources[log_group]["Properties"]["RetentionInDays"] == 90


def test_only_validation_gets_the_pillow_layer_built_for_the_lambda_runtime(resources, stack_artifact):
    layers = {logical: r for logical, r in resources.items() if r["Type"] == "AWS::Lambda::LayerVersion"}
    (pillow_id,) = layers
    with_pillow = [
        r["Properties"]["Handler"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and {"Ref": pillow_id} in r["Properties"].get("Layers", [])
    ]
    assert with_pillow == ["lambdas.handlers.validate_batch.handler"]
    assert layers[pillow_id]["Properties"]["CompatibleRuntimes"] == ["python3.14"]
    manifest = json.loads(
        Path(stack_artifact.assembly.directory, f"{stack_artifact.stack_name}.assets.json").read_text()
    )
    asset_hash = layers[pillow_id]["Properties"]["Content"]["S3Key"].removesuffix(".zip")
    staged = Path(stack_artifact.assembly.directory, manifest["files"][asset_hash]["source"]["path"])
    assert list((staged / "python" / "PIL").glob("_imaging.cpython-314-x86_64-linux-gnu.so"))


def test_the_layer_wheel_is_the_pinned_version_for_the_lambda_runtime():
    requirement = pinned_requirement("pillow")
    trainer_pin = (Path(__file__).parents[2] / "trainer_image" / "requirements.txt").read_text()
    assert requirement in trainer_pin.splitlines(), "validation and trainer decode with the same Pillow"
    wheel = lambda_wheel(requirement)
    with zipfile.ZipFile(wheel) as archive:
        tags = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/WHEEL"))).decode()
    assert "Tag: cp314-cp314-manylinux2014_x86_64" in tags  # glibc 2.17: loads on every Lambda runtime


def test_every_lambda_log_group_is_encrypted_with_the_stacks_rotating_logs_key(resources):
    keys = {
        logical_id
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::KMS::Key" and "Lambda" in r["Properties"].get("Description", "")
    }
    assert len(keys) == 1
    (key,) = keys
    assert resources[key]["Properties"]["EnableKeyRotation"] is True
    statements = resources[key]["Properties"]["KeyPolicy"]["Statement"]
    logs_statement = next(
        s
        for s in statements
        if s.get("Principal", {}).get("Service", {})
        == {"Fn::Join": ["", ["logs.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}
    )
    assert "kms:EncryptionContext:aws:logs:arn" in logs_statement["Condition"]["ArnLike"]
    for function in pipeline_functions(resources):
        log_group = resources[function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]]
        assert log_group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key, "Arn"]}


def test_no_log_group_is_left_unencrypted(resources):
    log_groups = [r for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup"]
    assert len(log_groups) >= 10
    assert all("KmsKeyId" in r["Properties"] for r in log_groups)
