"""The local service, client side: model copy-out stays inside local-output; any message is survived."""

import json
import types

import boto3
import pytest
from moto import mock_aws

from local_pipeline.service import copy_model_out, parse_notification


@pytest.fixture
def endpoint():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="bkt")
        client.put_object(Bucket="bkt", Key="models/rex/r1/model_index.json", Body=b"{}")
        client.put_object(Bucket="bkt", Key="models/rex/r1/../../../../escaped.txt", Body=b"evil")
        yield types.SimpleNamespace(client=lambda service: client)


def notification(job_name):
    return {"job_name": job_name, "status": "SUCCEEDED", "model": {"s3_prefix": "s3://bkt/models/rex/r1/"}}


def test_the_model_is_copied_into_the_jobs_folder_and_traversal_keys_are_refused(endpoint, tmp_path, capsys):
    root = tmp_path / "out" / "local-output"
    target = copy_model_out(endpoint, notification("rex (2)"), root)
    assert target == root / "rex (2)"
    assert (target / "model_index.json").read_bytes() == b"{}"
    assert not list(tmp_path.rglob("escaped.txt"))
    assert "warning: refused S3 key 'models/rex/r1/../../../../escaped.txt'" in capsys.readouterr().err


@pytest.mark.parametrize("job_name", ["..", "../../x", "/tmp/abs"])
def test_a_job_name_that_leaves_local_output_is_not_followed(endpoint, tmp_path, capsys, job_name):
    root = tmp_path / "out" / "local-output"
    root.mkdir(parents=True)
    assert copy_model_out(endpoint, notification(job_name), root) is None
    assert list(tmp_path.rglob("model_index.json")) == []
    assert "the model is not copied out" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("message", "parsed"),
    [
        (json.dumps({"job_name": "a", "status": "FAILED"}), {"job_name": "a", "status": "FAILED"}),
        ("Traceback (most recent call last):\n  plain text", None),
        ("[1, 2]", None),
        ("", None),
    ],
)
def test_only_a_json_object_is_a_notification(message, parsed):
    assert parse_notification(message) == parsed
