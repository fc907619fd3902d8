"""The intake Lambda, invoked as deployed (in the emulator) with crafted SQS batches of S3 events."""

import json
import uuid
from urllib.parse import quote_plus

import pytest

from lambdas.jobs import naming
from lambdas.pipeline.runs_table import JobsTable
from local_aws import FAST_CONTEXT, LocalAws, synthesize

INTAKE = "lambdas.handlers.upload_events.handler"


@pytest.fixture(scope="module")
def aws():
    # A quiet period long enough that no batch seals while a test looks at it, however loaded the machine.
    with LocalAws(synthesize({**FAST_CONTEXT, "default_quiet_period_seconds": 120})) as emulator:
        yield emulator


def put_silently(aws, key: str, body: bytes = b"not a photo") -> None:
    """Store an object without its S3 event: the test delivers the event itself."""
    with aws.held_upload_events() as release:
        aws.boto3_client("s3").put_object(Bucket=aws.bucket, Key=key, Body=body)
        release(lambda events: [])


def s3_event(bucket: str, raw_key: str, detail_type: str = "Object Created") -> dict:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-11-24T10:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": raw_key, "size": 11, "etag": "e", "sequencer": "0A1B"},
            "request-id": "R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject",
        },
    }


def sqs_batch(*bodies) -> dict:
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"h{i}",
                "body": body if isinstance(body, str) else json.dumps(body),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1545082649183",
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": "1545082649185",
                },
                "messageAttributes": {},
                "md5OfBody": "098f6bcd4621d373cade4e832627b4f6",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:uploads",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def invoke_intake(aws, event: dict) -> dict:
    function = next(
        name
        for name, r in aws.template["Resources"].items()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == INTAKE
    )
    response = aws.boto3_client("lambda").invoke(
        FunctionName=aws.resolver.ref(function), Payload=json.dumps(event).encode()
    )
    payload = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, payload
    return payload


def batch_of(aws, job: str):
    return JobsTable(aws.table_name, aws.boto3_client("dynamodb")).get_batch(job)


@pytest.mark.parametrize(
    ("stored_key", "raw_key", "job"),
    [
        ("uploads/my dog/IMG 0001.jpg", "uploads/my+dog/IMG+0001.jpg", "my dog"),
        ("uploads/café/photo 1.jpeg", "uploads/caf%C3%A9/photo+1.jpeg", "café"),
        ("uploads/a+b/x.jpg", "uploads/a%2Bb/x.jpg", "a+b"),
        ("uploads/日本の猫/写真.png", quote_plus("uploads/日本の猫/写真.png", safe="/"), "日本の猫"),
        ("uploads/rex/nested/deeper/x.jpg", "uploads/rex/nested/deeper/x.jpg", "rex"),
        # A producer that does not encode: '+' is literal, the decoded key does not exist, the raw one does.
        ("uploads/c+d/x.jpg", "uploads/c+d/x.jpg", "c+d"),
    ],
)
def test_url_encoded_keys_find_their_object_and_job(aws, stored_key, raw_key, job):
    put_silently(aws, stored_key)
    assert invoke_intake(aws, sqs_batch(s3_event(aws.bucket, raw_key))) == {"batchItemFailures": []}
    batch = batch_of(aws, job)
    assert batch is not None and batch.collecting
    (execution,) = aws.runs(job)
    assert execution["name"] == naming.training_job_name(job, batch.run_id)


@pytest.mark.parametrize(
    "body",
    [
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-24T10:00:00Z", "Bucket": "b"},
        "ignored-deleted",
        "ignored/.DS_Store",
        "ignored/Thumbs.db",
        "ignored/folder/",
        "models/ignored/r1/model.safetensors",
        "other-bucket",
    ],
)
def test_test_events_deletions_clutter_and_foreign_keys_start_nothing(aws, body):
    if body == "ignored-deleted":
        body = s3_event(aws.bucket, "uploads/ignored/a.jpg", detail_type="Object Deleted")
    elif body == "other-bucket":
        body = s3_event("someone-elses-bucket", "uploads/ignored/a.jpg")
    elif isinstance(body, str):
        put_silently(aws, body if body.startswith("models/") else f"uploads/{body}")
        body = s3_event(
            aws.bucket, quote_plus(body if body.startswith("models/") else f"uploads/{body}", safe="/")
        )
    assert invoke_intake(aws, sqs_batch(body)) == {"batchItemFailures": []}
    assert batch_of(aws, "ignored") is None
    assert aws.runs("ignored") == []


def test_a_bad_record_fails_alone_and_the_rest_of_the_batch_is_processed(aws):
    put_silently(aws, "uploads/partial/a.jpg")
    response = invoke_intake(
        aws, sqs_batch("this is not JSON", s3_event(aws.bucket, "uploads/partial/a.jpg"))
    )
    assert response == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert batch_of(aws, "partial") is not None


def test_an_object_deleted_before_its_event_is_handled_starts_nothing(aws):
    assert invoke_intake(aws, sqs_batch(s3_event(aws.bucket, "uploads/vanished/a.jpg"))) == {
        "batchItemFailures": []
    }
    assert batch_of(aws, "vanished") is None


def test_job_names_that_slug_alike_get_separate_runs_and_valid_training_job_names(aws):
    jobs = ["My Dog", "my_dog", "my-dog", "my--dog"]
    for job in jobs:
        put_silently(aws, f"uploads/{job}/a.jpg")
    invoke_intake(
        aws, sqs_batch(*[s3_event(aws.bucket, quote_plus(f"uploads/{job}/a.jpg", safe="/")) for job in jobs])
    )
    names = set()
    for job in jobs:
        (execution,) = aws.runs(job)
        assert naming.TRAINING_JOB_NAME_PATTERN.match(execution["name"]) and len(execution["name"]) <= 63
        assert (
            json.loads(
                aws.boto3_client("stepfunctions").describe_execution(executionArn=execution["executionArn"])[
                    "input"
                ]
            )["job_name"]
            == job
        )
        names.add(execution["name"])
    assert len(names) == len(jobs)


def test_a_duplicate_delivery_in_one_batch_joins_the_run_it_opened(aws):
    put_silently(aws, "uploads/twice/a.jpg")
    event = s3_event(aws.bucket, "uploads/twice/a.jpg")
    assert invoke_intake(aws, sqs_batch(event, event)) == {"batchItemFailures": []}
    assert len(aws.runs("twice")) == 1
