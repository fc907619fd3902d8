"""Every IAM statement on Resource "*" allows only APIs that have no resource type to scope them to."""

# Action -> the API family that accepts only "*" (the comment beside each grant in infra/ says the same).
UNSCOPABLE = {
    "xray:PutTraceSegments": "X-Ray tracing",
    "xray:PutTelemetryRecords": "X-Ray tracing",
    "xray:GetSamplingRules": "X-Ray tracing",
    "xray:GetSamplingTargets": "X-Ray tracing",
    "logs:CreateLogDelivery": "CloudWatch Logs vended delivery (Step Functions logging)",
    "logs:GetLogDelivery": "CloudWatch Logs vended delivery",
    "logs:UpdateLogDelivery": "CloudWatch Logs vended delivery",
    "logs:DeleteLogDelivery": "CloudWatch Logs vended delivery",
    "logs:ListLogDeliveries": "CloudWatch Logs vended delivery",
    "logs:PutResourcePolicy": "CloudWatch Logs vended delivery",
    "logs:DescribeResourcePolicies": "CloudWatch Logs vended delivery",
    "logs:DescribeLogGroups": "CloudWatch Logs vended delivery",
    "logs:CreateLogStream": "CloudWatch Logs vended delivery",
    "ecr:GetAuthorizationToken": "ECR registry login",
    "cloudwatch:PutMetricData": "CloudWatch metrics (narrowed by a namespace condition)",
    "ec2:DescribeNetworkInterfaces": "EC2 Describe* (VPC training)",
    "ec2:DescribeVpcs": "EC2 Describe* (VPC training)",
    "ec2:DescribeDhcpOptions": "EC2 Describe* (VPC training)",
    "ec2:DescribeSubnets": "EC2 Describe* (VPC training)",
    "ec2:DescribeSecurityGroups": "EC2 Describe* (VPC training)",
}


def actions(statement):
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def on_everything(statement):
    resource = statement.get("Resource")
    return resource == "*" or (isinstance(resource, list) and "*" in resource)


def assert_wildcards_unscopable(resources):
    found = 0
    for logical_id, resource in resources.items():
        if resource["Type"] not in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::Role"}:
            continue
        documents = [resource["Properties"].get("PolicyDocument")] + [
            p["PolicyDocument"] for p in resource["Properties"].get("Policies", [])
        ]
        for document in filter(None, documents):
            for statement in document["Statement"]:
                if statement["Effect"] != "Allow" or not on_everything(statement):
                    continue
                found += 1
                scopable = [a for a in actions(statement) if a not in UNSCOPABLE]
                assert not scopable, f"{logical_id}: {scopable} on Resource '*'"
                if "cloudwatch:PutMetricData" in actions(statement):
                    assert statement["Condition"]["StringLike"]["cloudwatch:namespace"]
    assert found  # the check looked at something


def test_wildcard_resources_only_carry_apis_without_a_resource_type(resources):
    assert_wildcards_unscopable(resources)


def test_key_policies_open_to_services_are_bound_to_this_account_or_log_groups(resources):
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::KMS::Key":
            continue
        for statement in resource["Properties"]["KeyPolicy"]["Statement"]:
            principal = statement.get("Principal", {})
            assert principal != "*" and principal.get("AWS") != "*", logical_id


def test_vpc_training_adds_only_unscopable_wildcards(vpc_resources):
    assert_wildcards_unscopable(vpc_resources)
