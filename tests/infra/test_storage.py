"""infra/storage.py: versioning and the retention rules, with their context knobs."""

from app import build_app
from infra.storage import SAGEMAKER_OUTPUT_EXPIRY_DAYS, TRAINING_INPUT_EXPIRY_DAYS
from lambdas.jobs.spec import MAX_RUNTIME_LIMIT_SECONDS
from lambdas.jobs.training_request import SPOT_WAIT_FACTOR


def data_bucket(template):
    (bucket,) = [
        r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::S3::Bucket" and "NotificationConfiguration" in r["Properties"]
    ]
    return bucket["Properties"]


def rules_by_id(props):
    return {rule["Id"]: rule for rule in props["LifecycleConfiguration"]["Rules"]}


def test_data_bucket_is_versioned_and_retains_by_the_default_knobs(stack_artifact):
    props = data_bucket(stack_artifact.template)
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = rules_by_id(props)
    assert rules["AbortIncompleteUploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert "Prefix" not in rules["AbortIncompleteUploads"]
    assert (rules["ExpireUploads"]["Prefix"], rules["ExpireUploads"]["ExpirationInDays"]) == ("uploads/", 30)
    checkpoints = rules["ExpireCheckpoints"]
    assert (checkpoints["Prefix"], checkpoints["ExpirationInDays"]) == ("checkpoints/", 7)
    assert checkpoints["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    noncurrent = rules["ExpireNoncurrentVersions"]
    assert noncurrent["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30} and "Prefix" not in noncurrent
    assert rules["RemoveExpiredDeleteMarkers"]["ExpiredObjectDeleteMarker"] is True
    # models/ and class-images/ never expire; a run's frozen input and SageMaker's own output do.
    expiring = {r.get("Prefix"): r["ExpirationInDays"] for r in rules.values() if "ExpirationInDays" in r}
    assert expiring == {
        "uploads/": 30,
        "checkpoints/": 7,
        "training-input/": TRAINING_INPUT_EXPIRY_DAYS,
        "sagemaker-output/": SAGEMAKER_OUTPUT_EXPIRY_DAYS,
    }
    # The input outlives the longest run any limit allows: 28 days of runtime plus the spot wait.
    assert TRAINING_INPUT_EXPIRY_DAYS * 86400 > MAX_RUNTIME_LIMIT_SECONDS * SPOT_WAIT_FACTOR
    assert all(r["Status"] == "Enabled" for r in rules.values())


def test_retention_knobs_come_from_context():
    app = build_app(
        {
            "stack_name": "Retention",
            "uploads_retention_days": "90",
            "checkpoints_retention_days": 3,
            "noncurrent_versions_retention_days": "14",
        }
    )
    rules = rules_by_id(data_bucket(app.synth().get_stack_by_name("Retention").template))
    assert rules["ExpireUploads"]["ExpirationInDays"] == 90
    assert rules["ExpireCheckpoints"]["ExpirationInDays"] == 3
    assert rules["ExpireNoncurrentVersions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 14}


def test_browsers_may_post_to_the_apis_presigned_upload_targets(stack_artifact):
    (rule,) = data_bucket(stack_artifact.template)["CorsConfiguration"]["CorsRules"]
    assert "POST" in rule["AllowedMethods"]
