"""local_aws/post_policy.py: S3's checks of a POST upload against its policy, case by case."""

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from local_aws.post_policy import check_post

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
KEY = "uploads/rex/a.jpg"


def policy(*conditions, expires: datetime = NOW + timedelta(minutes=15)) -> str:
    document = {"expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"), "conditions": list(conditions)}
    return base64.b64encode(json.dumps(document).encode()).decode()


CONDITIONS = (
    {"bucket": "data"},
    {"key": KEY},
    ["starts-with", "$Content-Type", "image/"],
    ["content-length-range", 1, 100],
)


def fields(**changes) -> dict[str, str]:
    return {
        "key": KEY,
        "Content-Type": "image/jpeg",
        "AWSAccessKeyId": "id",
        "signature": "sig",
        "policy": policy(*CONDITIONS),
    } | changes


def test_an_upload_that_meets_every_condition_is_stored():
    assert check_post(fields(), "data", 100, NOW) is None
    assert check_post(fields(), "data", 1, NOW) is None
    assert check_post(fields(**{"x-ignore-note": "anything"}), "data", 50, NOW) is None


@pytest.mark.parametrize(
    ("size", "code"), [(101, "EntityTooLarge"), (0, "EntityTooSmall")], ids=["one byte over", "empty"]
)
def test_a_size_outside_the_range_is_a_400(size, code):
    refusal = check_post(fields(), "data", size, NOW)
    assert (refusal.status, refusal.code) == (400, code)
    assert f"<Code>{code}</Code>" in refusal.xml()


@pytest.mark.parametrize(
    ("changes", "bucket", "failed"),
    [
        ({"key": "uploads/other/a.jpg"}, "data", '{"key": "uploads/rex/a.jpg"}'),
        ({"Content-Type": "text/html"}, "data", '["starts-with", "$Content-Type", "image/"]'),
        ({}, "another-bucket", '{"bucket": "data"}'),
    ],
    ids=["another key", "not an image", "another bucket"],
)
def test_a_broken_condition_is_access_denied_naming_it(changes, bucket, failed):
    refusal = check_post(fields(**changes), bucket, 10, NOW)
    assert (refusal.status, refusal.code) == (403, "AccessDenied")
    assert refusal.message == f"Invalid according to Policy: Policy Condition failed: {failed}"


def test_a_missing_field_fails_its_condition_and_field_names_ignore_case():
    without_type = {k: v for k, v in fields().items() if k != "Content-Type"}
    assert "Policy Condition failed" in check_post(without_type, "data", 10, NOW).message
    assert check_post({**without_type, "content-type": "image/png"}, "data", 10, NOW) is None


def test_a_field_no_condition_covers_is_refused():
    refusal = check_post(fields(acl="public-read"), "data", 10, NOW)
    assert refusal.status == 403 and refusal.message.endswith("Extra input fields: acl")


def test_an_expired_or_unreadable_policy_is_refused():
    expired = fields(policy=policy(*CONDITIONS, expires=NOW))
    assert check_post(expired, "data", 10, NOW).message == "Invalid according to Policy: Policy expired."
    assert check_post(fields(policy="not base64!"), "data", 10, NOW).code == "AccessDenied"
    assert check_post(fields(policy=base64.b64encode(b"[]").decode()), "data", 10, NOW).status == 403


def test_the_message_is_escaped_in_the_xml():
    odd = fields(policy=policy({"bucket": "data"}, {"key": "uploads/<b>&"}))
    xml = check_post(odd, "data", 10, NOW).xml()
    assert '{"key": "uploads/&lt;b&gt;&amp;"}</Message>' in xml
