"""infra/functions.py: each pipeline Lambda has its own role, log group, the Powertools layer and tracing."""

import json
import zipfile
from pathlib import Path

from infra.functions import POWERTOOLS_ACCOUNT, POWERTOOLS_LAYER_VERSION, lambda_wheel, pinned_requirement


def test_every_pipeline_function_is_python_311_traced_with_json_logs_and_the_powertools_layer(resources):
    functions = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function"]
    assert len(functions) == 6
    log_groups, roles = set(), set()
    for function in functions:
        props = function["Properties"]
        assert props["Runtime"] == "python3.11"
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        layer = props["Layers"][0]
        arn = "".join(p if isinstance(p, str) else "<ref>" for p in layer["Fn::Join"][1])
        assert arn.endswith(
            f":{POWERTOOLS_ACCOUNT}:layer:AWSLambdaPowertoolsPythonV3-python311-x86_64:{POWERTOOLS_LAYER_VERSION}"
        )
        log_groups.add(props["LoggingConfig"]["LogGroup"]["Ref"])
        roles.add(props["Role"]["Fn::GetAtt"][0])
    assert len(log_groups) == len(roles) == 6
    for log_group in log_groups:
        assert resources[log_group]["Properties"]["RetentionInDays"] == 90


def test_only_validation_gets_the_pillow_layer_built_for_the_lambda_runtime(resources, stack_artifact):
    layers = {logical: r for logical, r in resources.items() if r["Type"] == "AWS::Lambda::LayerVersion"}
    (pillow_id,) = layers
    with_pillow = [
        r["Properties"]["Handler"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and {"Ref": pillow_id} in r["Properties"]["Layers"]
    ]
    assert with_pillow == ["lambdas.handlers.validate_batch.handler"]
    assert layers[pillow_id]["Properties"]["CompatibleRuntimes"] == ["python3.11"]
    manifest = json.loads(
        Path(stack_artifact.assembly.directory, f"{stack_artifact.stack_name}.assets.json").read_text()
    )
    asset_hash = layers[pillow_id]["Properties"]["Content"]["S3Key"].removesuffix(".zip")
    staged = Path(stack_artifact.assembly.directory, manifest["files"][asset_hash]["source"]["path"])
    assert list((staged / "python" / "PIL").glob("_imaging.cpython-311-x86_64-linux-gnu.so"))


def test_the_layer_wheel_is_the_pinned_version_for_amazon_linux_2():
    requirement = pinned_requirement("pillow")
    trainer_pin = (Path(__file__).parents[2] / "trainer_image" / "requirements.txt").read_text()
    assert requirement in trainer_pin.splitlines(), "validation and trainer decode with the same Pillow"
    wheel = lambda_wheel(requirement)
    with zipfile.ZipFile(wheel) as archive:
        tags = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/WHEEL"))).decode()
    assert "Tag: cp311-cp311-manylinux2014_x86_64" in tags  # glibc 2.17: loads on the python3.11 runtime
