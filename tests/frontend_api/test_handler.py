"""frontend_api.handler driven with API Gateway REST proxy events, over the emulated stack."""

from __future__ import annotations

import json

import pytest

from lambdas.jobs import s3_layout

from .support import IMPORTS_BUCKET, api_over, photos_zip, start_api_emulator, zip_of

IMAGE = {"filename": "a.jpg", "content_type": "image/jpeg"}


@pytest.fixture(scope="module")
def aws():
    emulator = start_api_emulator()
    yield emulator
    emulator.stop(drain_seconds=0)


@pytest.fixture(scope="module")
def api(aws):
    return api_over(aws, validate_bodies=False)  # the function's own checks (test_serve: the gateway's too)


def test_create_returns_presigned_targets_scoped_to_the_jobs_upload_folder(api):
    status, job = api.call(
        "POST",
        "/jobs",
        {"images": [IMAGE, {**IMAGE, "filename": "b.png", "content_type": "image/png"}], "class_word": "dog"},
    )
    assert status == 201, job
    assert job["status"] == "awaiting_upload" and job["job_name"] == job["id"]
    assert job["spec"] == {"class_word": "dog"}
    first, second = job["uploads"]
    assert first["fields"]["key"] == s3_layout.upload_prefix(job["id"]) + "a.jpg"
    assert first["fields"]["Content-Type"] == "image/jpeg" and second["fields"]["Content-Type"] == "image/png"
    assert "policy" in first["fields"] and first["url"].endswith(api.aws.bucket)
    status, fetched = api.call("GET", f"/jobs/{job['id']}")
    assert status == 200 and fetched["status"] == "awaiting_upload" and "uploads" not in fetched


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "malformed_json"),
        ("", 400, "invalid_body"),
        ("[1, 2]", 400, "invalid_body"),
        ({"images": [IMAGE], "colour": "red"}, 422, "validation_failed"),
        ({"images": [IMAGE], "max_train_steps": "lots"}, 422, "validation_failed"),
        ({"images": [IMAGE], "max_train_steps": -1}, 422, "validation_failed"),
        ({"images": [IMAGE], "max_train_steps": 10**30}, 422, "validation_failed"),
        ({"images": [IMAGE], "with_prior_preservation": [True]}, 422, "validation_failed"),
        ({"images": [{**IMAGE, "filename": f"{i}.jpg"} for i in range(21)]}, 413, "too_many_images"),
        ({"images": [{**IMAGE, "filename": f"{i}.jpg"} for i in range(1001)]}, 422, "validation_failed"),
        ({"images": [{**IMAGE, "filename": "../../models/x.jpg"}]}, 422, "validation_failed"),
        ({"images": [IMAGE], "job_name": "../other-job"}, 422, "validation_failed"),
        ({"images": [IMAGE], "job_name": ".."}, 422, "validation_failed"),
        ({"images": [IMAGE], "webhook_url": "https://169.254.169.254/latest/meta-data"}, 422, "unsafe_url"),
        ({"images_url": "https://10.0.0.1/photos.zip"}, 422, "unsafe_url"),
        ({"images_url": "s3://someone-elses-bucket/photos.zip"}, 422, "unsafe_url"),
        ("x" * 300_000, 413, "body_too_large"),
        ({"images": [IMAGE], "instance_type": "ml.p5.48xlarge"}, 422, "limit_exceeded"),
        ({"images": [IMAGE], "max_runtime_seconds": 28 * 24 * 3600}, 422, "limit_exceeded"),
        ({"images": [IMAGE], "hyperparameters": {"resolution": 2048}}, 422, "limit_exceeded"),
        ({"images": [IMAGE], "base_model": "../../etc"}, 422, "validation_failed"),
    ],
)
def test_bad_create_requests_are_4xx_with_their_code(api, body, status, code):
    got_status, error = api.call("POST", "/jobs", body)
    assert (got_status, error["code"]) == (status, code), error
    assert error["message"] and "Traceback" not in error["message"]


def test_a_limit_is_refused_at_create_naming_the_context_key_that_raises_it(api):
    status, error = api.call("POST", "/jobs", {"images": [IMAGE], "instance_type": "ml.p5.48xlarge"})
    assert (status, error["code"]) == (422, "limit_exceeded")
    assert "ml.p5.48xlarge" in error["message"] and "limit_instance_types" in error["message"]
    assert "job.json" not in error["message"]


def test_validation_errors_name_each_field(api):
    status, error = api.call("POST", "/jobs", {"images": [IMAGE], "colour": "red", "max_train_steps": 0})
    assert status == 422
    assert {d["field"] for d in error["details"]} == {"colour", "max_train_steps"}


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/jobs/job-0000000000000000", 404, "job_not_found"),
        ("GET", "/jobs/..%2F..%2Fetc%2Fpasswd", 400, "invalid_job_id"),
        ("DELETE", "/jobs/%2E%2E", 400, "invalid_job_id"),
        ("POST", "/jobs/job-0000000000000000/start", 404, "job_not_found"),
        ("GET", "/nowhere", 404, "route_not_found"),
        ("GET", "/jobs?limit=0", 400, "invalid_query"),
        ("GET", "/jobs?limit=abc", 400, "invalid_query"),
        ("GET", "/jobs?status=dancing", 400, "invalid_query"),
        ("GET", "/jobs?cursor=bm9wZQ", 400, "invalid_cursor"),
        ("GET", "/jobs?colour=red", 400, "invalid_query"),
        ("DELETE", "/jobs/job-0000000000000000?purge=maybe", 400, "invalid_query"),
    ],
)
def test_bad_ids_routes_and_queries_are_4xx_with_their_code(api, method, path, status, code):
    got_status, error = api.call(method, path)
    assert (got_status, error["code"]) == (status, code), error


def test_an_idempotency_key_returns_the_same_job_and_refuses_another_body(api):
    body = {"images": [IMAGE], "token": "zwx"}
    first_status, first = api.call("POST", "/jobs", body, {"Idempotency-Key": "retry-1"})
    again_status, again = api.call("POST", "/jobs", body, {"Idempotency-Key": "retry-1"})
    assert (first_status, again_status) == (201, 200)
    assert (
        again["id"] == first["id"]
        and again["uploads"][0]["fields"]["key"] == first["uploads"][0]["fields"]["key"]
    )
    status, error = api.call("POST", "/jobs", {**body, "token": "other"}, {"Idempotency-Key": "retry-1"})
    assert (status, error["code"]) == (409, "idempotency_key_reused")
    _, fresh = api.call("POST", "/jobs", body)
    assert fresh["id"] != first["id"]
    status, error = api.call("POST", "/jobs", body, {"Idempotency-Key": "has space"})
    assert (status, error["code"]) == (400, "invalid_idempotency_key")


def test_a_job_name_in_use_is_a_conflict_whether_api_or_s3_drop(api):
    status, _ = api.call("POST", "/jobs", {"images": [IMAGE], "job_name": "Rex the dog"})
    assert status == 201
    status, error = api.call("POST", "/jobs", {"images": [IMAGE], "job_name": "Rex the dog"})
    assert (status, error["code"]) == (409, "job_name_taken")
    api.aws.boto3_client("s3").put_object(Bucket=api.aws.bucket, Key="uploads/dropped/1.jpg", Body=b"x")
    _wait_for_batch(api, "dropped")
    status, error = api.call("POST", "/jobs", {"images": [IMAGE], "job_name": "dropped"})
    assert (status, error["code"]) == (409, "job_name_taken")


def _wait_for_batch(api, job_name, timeout=20):
    import time

    from lambdas.pipeline.runs_table import JobsTable

    table = JobsTable(api.aws.table_name, api.aws.boto3_client("dynamodb"))
    deadline = time.monotonic() + timeout
    while table.get_batch(job_name) is None:
        assert time.monotonic() < deadline, f"no batch for {job_name}"
        time.sleep(0.1)


def test_start_without_uploads_says_to_upload_first(api):
    _, job = api.call("POST", "/jobs", {"images": [IMAGE]})
    status, error = api.call("POST", f"/jobs/{job['id']}/start")
    assert (status, error["code"]) == (422, "no_images")


def test_list_is_newest_first_with_an_opaque_cursor_and_a_status_filter(api):
    ids = [api.call("POST", "/jobs", {"images": [IMAGE]})[1]["id"] for _ in range(3)]
    status, page = api.call("GET", "/jobs?limit=2")
    assert status == 200 and [j["id"] for j in page["jobs"]] == ids[::-1][:2]
    status, rest = api.call("GET", f"/jobs?limit=2&cursor={page['next_cursor']}")
    assert status == 200 and rest["jobs"][0]["id"] == ids[0]
    seen = [j["id"] for j in page["jobs"] + rest["jobs"]]
    assert len(seen) == len(set(seen))
    _, waiting = api.call("GET", "/jobs?status=awaiting_upload&limit=100")
    assert set(ids) <= {j["id"] for j in waiting["jobs"]}
    _, succeeded = api.call("GET", "/jobs?status=succeeded")
    assert not set(ids) & {j["id"] for j in succeeded["jobs"]}


def _put_zip(api, key: str, data: bytes) -> str:
    api.aws.boto3_client("s3").put_object(Bucket=IMPORTS_BUCKET, Key=key, Body=data)
    return f"s3://{IMPORTS_BUCKET}/{key}"


@pytest.mark.parametrize(
    ("entries", "status", "code"),
    [
        ({"ok.jpg": b"x", "../../escape.jpg": b"x"}, 422, "unsafe_archive"),
        ({f"{i}.jpg": b"" for i in range(10_000)}, 413, "archive_too_many_files"),
        ({f"{i}.jpg": b"x" for i in range(21)}, 413, "too_many_images"),
        ({"readme.md": b"no photos"}, 422, "no_images"),
    ],
)
def test_unsafe_or_oversized_zips_are_refused_and_nothing_is_uploaded(api, entries, status, code):
    url = _put_zip(api, f"bad-{code}.zip", zip_of(entries))
    got_status, error = api.call("POST", "/jobs", {"images_url": url, "job_name": f"zip-{code}"})
    assert (got_status, error["code"]) == (status, code), error
    listed = api.aws.boto3_client("s3").list_objects_v2(Bucket=api.aws.bucket, Prefix="uploads/zip-")
    assert listed.get("KeyCount", 0) == 0
    status, _ = api.call("POST", "/jobs", {"images": [IMAGE], "job_name": f"zip-{code}"})
    assert status == 201  # the refused create claimed nothing


def test_an_s3_zip_is_imported_and_committed(api):
    url = _put_zip(api, "good.zip", photos_zip(3))
    status, job = api.call("POST", "/jobs", {"images_url": url, "max_train_steps": 5})
    assert status == 201, job
    assert job["imported_images"] == 3 and job["uploads"] == []
    s3 = api.aws.boto3_client("s3")
    keys = {
        o["Key"]
        for o in s3.list_objects_v2(Bucket=api.aws.bucket, Prefix=f"uploads/{job['id']}/")["Contents"]
    }
    prefix = s3_layout.upload_prefix(job["id"])
    assert keys == {prefix + f"photos/{i}.jpg" for i in range(3)} | {prefix + "job.json"}
    spec = s3.get_object(Bucket=api.aws.bucket, Key=prefix + "job.json")["Body"].read()
    assert spec == b'{"max_train_steps": 5}'
    status, error = api.call("POST", f"/jobs/{job['id']}/start")
    assert (status, error["code"]) == (409, "job_already_started")


def test_with_cognito_each_user_sees_only_their_own_jobs(aws):
    from frontend_api import settings as api_settings
    from local_pipeline.serve_gateway import prepare_local_functions, rest_event

    environment = prepare_local_functions(
        aws.boto3_client("lambda"), aws.client_environment, {api_settings.AUTH_MODE: "cognito"}
    )
    function = environment["API_FUNCTION_NAME"]

    def call(user: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        event = rest_event(
            method, path, {"Content-Type": "application/json"}, json.dumps(body).encode() if body else b""
        )
        event["requestContext"]["authorizer"] = {"claims": {"sub": user, "email": f"{user}@example.com"}}
        response = aws.boto3_client("lambda").invoke(
            FunctionName=function, Payload=json.dumps(event).encode()
        )
        payload = json.loads(response["Payload"].read())
        return payload["statusCode"], json.loads(payload["body"])

    try:
        status, alice_job = call("alice", "POST", "/jobs", {"images": [IMAGE]})
        assert status == 201
        assert call("alice", "GET", f"/jobs/{alice_job['id']}")[0] == 200
        status, error = call("bob", "GET", f"/jobs/{alice_job['id']}")
        assert (status, error["code"]) == (404, "job_not_found")
        assert call("bob", "DELETE", f"/jobs/{alice_job['id']}")[0] == 404
        assert call("bob", "POST", f"/jobs/{alice_job['id']}/start")[0] == 404
        assert [j["id"] for j in call("alice", "GET", "/jobs")[1]["jobs"]] == [alice_job["id"]]
        assert call("bob", "GET", "/jobs")[1]["jobs"] == []
    finally:
        api_over(aws, validate_bodies=False)  # the module's routing again
