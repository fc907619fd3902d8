"""infra/storage.py: a run's frozen input and SageMaker's own output expire; checkpoints too."""

from infra.storage import SAGEMAKER_OUTPUT_EXPIRY_DAYS, TRAINING_INPUT_EXPIRY_DAYS
from lambdas.jobs.spec import MAX_RUNTIME_LIMIT_SECONDS
from lambdas.jobs.training_request import SPOT_WAIT_FACTOR


def test_frozen_inputs_and_sagemaker_output_expire_and_uploads_and_models_never_do(resources):
    (data,) = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::S3::Bucket" and "NotificationConfiguration" in r["Properties"]
    ]
    rules = data["Properties"]["LifecycleConfiguration"]["Rules"]
    expiry = {r.get("Prefix"): r.get("ExpirationInDays") for r in rules if "ExpirationInDays" in r}
    assert expiry == {
        "checkpoints/": 30,
        "training-input/": TRAINING_INPUT_EXPIRY_DAYS,
        "sagemaker-output/": SAGEMAKER_OUTPUT_EXPIRY_DAYS,
    }
    # The input outlives the longest run any limit allows: 28 days of runtime plus the spot wait.
    assert TRAINING_INPUT_EXPIRY_DAYS * 86400 > MAX_RUNTIME_LIMIT_SECONDS * SPOT_WAIT_FACTOR
