"""infra/functions.py: each pipeline Lambda has its own role, log group, the Powertools layer and tracing."""

from infra.functions import POWERTOOLS_ACCOUNT, POWERTOOLS_LAYER_VERSION


def test_every_pipeline_function_is_python_311_traced_with_json_logs_and_the_powertools_layer(resources):
    functions = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function"]
    assert len(functions) == 7  # five pipeline functions, the API and its webhook sender
    log_groups, roles = set(), set()
    for function in functions:
        props = function["Properties"]
        assert props["Runtime"] == "python3.11"
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        (layer,) = props["Layers"]
        arn = "".join(p if isinstance(p, str) else "<ref>" for p in layer["Fn::Join"][1])
        assert arn.endswith(
            f":{POWERTOOLS_ACCOUNT}:layer:AWSLambdaPowertoolsPythonV3-python311-x86_64:{POWERTOOLS_LAYER_VERSION}"
        )
        log_groups.add(props["LoggingConfig"]["LogGroup"]["Ref"])
        roles.add(props["Role"]["Fn::GetAtt"][0])
    assert len(log_groups) == len(roles) == 7
    for log_group in log_groups:
        assert resources[log_group]["Properties"]["RetentionInDays"] == 90
