"""The synthesized template, as CloudFormation will see it (cdk-nag runs during this synth)."""

import json
import subprocess
import sys
from pathlib import Path

from aws_cdk.assertions import Match, Template

from app import build_app

REPO_ROOT = Path(__file__).resolve().parents[2]
EMAIL = "owner@example.com"  # what tests/infra/conftest.py synthesizes with


def test_data_bucket_is_private_encrypted_logged_and_sends_events_to_eventbridge(template):
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "LoggingConfiguration": Match.object_like({"LogFilePrefix": "data-bucket/"}),
            "NotificationConfiguration": {"EventBridgeConfiguration": {"EventBridgeEnabled": True}},
        },
    )
    template.resource_count_is("AWS::S3::Bucket", 2)
    template.resource_count_is("Custom::S3BucketNotifications", 0)


def test_buckets_refuse_plain_http(template):
    policies = template.find_resources("AWS::S3::BucketPolicy")
    assert len(policies) == 2
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        )


def test_topic_is_encrypted_with_a_rotating_key_and_emails_the_owner(template):
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    template.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": EMAIL})


def test_without_an_email_there_is_no_subscription_and_a_warning():
    app = build_app({"stack_name": "NoMail"})
    cloud_assembly = app.synth()
    artifact = cloud_assembly.get_stack_by_name("NoMail")
    emails = Template.from_json(artifact.template).find_resources(
        "AWS::SNS::Subscription", {"Properties": {"Protocol": "email"}}
    )
    assert emails == {}
    warnings = [m.entry.data for m in artifact.messages if m.level.name == "WARNING"]
    assert any("notification_email" in str(w) for w in warnings)


def test_sagemaker_role_reads_inputs_and_writes_models_by_prefix_only(template):
    roles = template.find_resources(
        "AWS::IAM::Role",
        {
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Statement": [Match.object_like({"Principal": {"Service": "sagemaker.amazonaws.com"}})]
                }
            }
        },
    )
    assert len(roles) == 1
    role_id = next(iter(roles))
    policies = template.find_resources("AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": role_id}]}})
    statements = [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    text = json.dumps(statements)
    for prefix in [
        "training-input/*",
        "class-images/*",
        "base-models/*",
        "models/*",
        "checkpoints/*",
        "sagemaker-output/*",
    ]:
        assert prefix in text
    # A job reads the run's frozen input, never the live upload folder.
    assert "uploads/*" not in text
    actions = {
        a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert "s3:*" not in actions and not any(a.startswith("s3:") and a.endswith("*") for a in actions)
    writes = [s for s in statements if "s3:PutObject" in s["Action"]]
    assert writes and "uploads/*" not in json.dumps(writes), "training must never overwrite user uploads"
    assert "training-input/*" not in json.dumps(writes), "training must never change its own input"


def test_with_image_build_local_the_trainer_image_is_a_docker_asset_of_trainer_image():
    stack_artifact = (
        build_app({"stack_name": "LocalImage", "image_build": "local"})
        .synth()
        .get_stack_by_name("LocalImage")
    )
    kinds = {r["Type"] for r in stack_artifact.template["Resources"].values()}
    assert not kinds & {"AWS::CodeBuild::Project", "AWS::ECR::Repository", "Custom::TrainerImage"}
    manifest = json.loads(
        Path(stack_artifact.assembly.directory, f"{stack_artifact.stack_name}.assets.json").read_text()
    )
    images = manifest["dockerImages"].values()
    assert len(images) == 1
    source = next(iter(images))["source"]
    staged = Path(stack_artifact.assembly.directory, source["directory"])
    assert (staged / "Dockerfile").is_file()
    assert (staged / "requirements.txt").read_text() == (
        REPO_ROOT / "trainer_image/requirements.txt"
    ).read_text()
    assert source.get("platform") == "linux/amd64"


def test_outputs_tell_the_user_where_to_upload_and_where_models_land(template):
    outputs = template.find_outputs("*")
    assert {
        "BucketName",
        "UploadPrefix",
        "ModelsPrefix",
        "NotificationTopicArn",
        "TrainerImageUri",
        "StateMachineArn",
        "JobsTableName",
        "UploadEventsQueueUrl",
        "DashboardUrl",
        "AlarmTopicArn",
    } <= set(outputs)


def test_the_image_uri_output_is_the_image_training_jobs_run(resources, template):
    value = template.find_outputs("TrainerImageUri")["TrainerImageUri"]["Value"]
    (custom,) = [r for r in resources.values() if r["Type"] == "Custom::TrainerImage"]
    assert value["Fn::Join"][1][-1] == f":{custom['Properties']['ImageTag']}"
    (state_machine,) = [
        r
        for k, r in resources.items()
        if r["Type"] == "AWS::StepFunctions::StateMachine" and k.startswith("PipelineRuns")
    ]
    definition = json.dumps(state_machine["Properties"]["DefinitionString"])
    assert json.dumps(value["Fn::Join"][1][-2])[1:-1] in definition  # same repository reference


def test_cfn_lint_passes(stack_artifact):
    template_file = Path(stack_artifact.assembly.directory, stack_artifact.template_file)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("cfn-lint")),
            "--ignore-checks",
            "W3005",
            "--",
            str(template_file),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
