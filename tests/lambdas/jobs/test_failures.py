import json

import pytest

from lambdas.jobs import failures


def sagemaker_error(code: str, message: str) -> dict:
    return {
        "Error": f"SageMaker.{code}",
        "Cause": f"{message} (Service: AmazonSageMaker; Status Code: 400; Error Code: {code}; "
        "Request ID: 1234; Proxy: null)",
    }


def test_a_gpu_quota_of_zero_says_which_quota_and_how_to_raise_it():
    error = sagemaker_error(
        "ResourceLimitExceeded",
        "The account-level service limit 'ml.g4dn.xlarge for spot training job usage' is 0 Instances",
    )
    why = failures.explain_error(error, stage="training", instance_type="ml.g4dn.xlarge", use_spot=True)
    assert why.kind == failures.QUOTA
    assert "'ml.g4dn.xlarge for spot training job usage'" in why.reason
    advice = " ".join(why.advice)
    assert "Service Quotas" in advice and "request-service-quota-increase" in advice
    assert "(Service: AmazonSageMaker" not in why.reason


def test_on_demand_quota_names_the_on_demand_quota():
    error = sagemaker_error("ResourceLimitExceeded", "limit exceeded")
    why = failures.explain_error(error, stage="training", instance_type="ml.g5.xlarge", use_spot=False)
    assert "'ml.g5.xlarge for training job usage'" in why.reason


def test_a_failed_training_job_reports_its_failure_reason():
    described = {
        "TrainingJobName": "rex-r1",
        "TrainingJobStatus": "Failed",
        "FailureReason": "CUDA out of memory",
    }
    error = {"Error": "States.TaskFailed", "Cause": json.dumps(described)}
    why = failures.explain_error(error, stage="training")
    assert why.kind == failures.TRAINING_FAILED
    assert why.reason == "Training job rex-r1 failed: CUDA out of memory"


def test_a_stopped_job_says_what_may_have_stopped_it():
    described = {
        "TrainingJobName": "rex-r1",
        "TrainingJobStatus": "Stopped",
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    why = failures.explain_error(
        {"Error": "States.TaskFailed", "Cause": json.dumps(described)}, stage="training"
    )
    assert why.kind == failures.TRAINING_STOPPED
    assert "MaxRuntime of 600 s" in why.reason and "spot" in why.reason


def test_spot_capacity_failures_suggest_on_demand():
    described = {
        "TrainingJobStatus": "Failed",
        "FailureReason": "Training job exceeded MaxWaitTimeInSeconds while waiting for spot capacity",
    }
    why = failures.explain_error(
        {"Error": "States.TaskFailed", "Cause": json.dumps(described)}, stage="training"
    )
    assert '"use_spot": false' in why.advice[0]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (sagemaker_error("ThrottlingException", "Rate exceeded"), failures.THROTTLED),
        (sagemaker_error("ValidationException", "Invalid instance type"), failures.REJECTED),
        ({"Error": "States.Timeout", "Cause": ""}, failures.TIMED_OUT),
        (
            {
                "Error": "BatchLost",
                "Cause": json.dumps({"errorType": "BatchLost", "errorMessage": "not ours"}),
            },
            failures.INTERNAL,
        ),
        ({"Error": "States.Runtime", "Cause": "boom"}, failures.INTERNAL),
        (None, failures.INTERNAL),
    ],
)
def test_other_errors_are_classified(error, kind):
    why = failures.explain_error(error, stage="validation")
    assert why.kind == kind
    assert why.reason


def test_lambda_errors_show_type_and_message_not_the_stack():
    cause = json.dumps({"errorType": "KeyError", "errorMessage": "'job'", "stackTrace": ["  File x"]})
    why = failures.explain_error({"Error": "KeyError", "Cause": cause}, stage="building the training request")
    assert why.reason == "The building the training request step failed: KeyError: 'job'"


def test_invalid_batches_list_each_file():
    why = failures.invalid_batch(
        "s3://b/uploads/rex/",
        [
            {"file": "a.heic", "problem": "HEIC/HEIF image is not supported"},
            {"file": "(batch)", "problem": "too few"},
        ],
    )
    assert why.kind == failures.INVALID_BATCH
    assert "- a.heic: HEIC/HEIF image is not supported" in why.reason
    assert "- (batch): too few" in why.reason
    assert why.as_dict()["problems"][0]["file"] == "a.heic"


def test_huge_causes_are_cut_short():
    why = failures.explain_error({"Error": "States.Runtime", "Cause": "x" * 10_000}, stage="training")
    assert len(why.reason) < 2000


def test_an_unusable_job_folder_name_says_what_to_rename():
    cause = json.dumps(
        {
            "errorType": "InvalidJobName",
            "errorMessage": "the upload folder name '..' is not a folder name: rename",
        }
    )
    failure = failures.explain_error(
        {"Error": "InvalidJobName", "Cause": cause}, stage="waiting for the batch"
    )
    assert failure.kind == failures.INVALID_JOB_NAME
    assert "'..' is not a folder name: rename" in failure.reason
