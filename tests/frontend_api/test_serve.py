"""The local HTTP API (`python -m local_pipeline serve`'s server) driven with real HTTP requests."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from frontend_api import signing
from lambdas.jobs import s3_layout
from lambdas.jobs.spec import JobDefaults
from lambdas.jobs.training_slots import holder_id
from lambdas.pipeline.training_slots import TrainingSlots
from local_pipeline.serve import ApiServer
from tests.pipeline.support import fake_trainer

from .support import HeldTrainer, api_over, jpeg, photos_zip, start_api_emulator, zip_of


class Receiver(ThreadingHTTPServer):
    """A webhook receiver and a file server on 127.0.0.1."""

    daemon_threads = True

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.files: dict[str, bytes] = {}
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.deliveries.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:
        data = self.server.files.get(self.path)
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def aws():
    emulator = start_api_emulator()
    yield emulator
    emulator.stop(drain_seconds=0)


@pytest.fixture(scope="module")
def api(aws):
    return api_over(aws)


@pytest.fixture(scope="module")
def base_url(api):
    server = ApiServer(0, api.gateway)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield server.url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def receiver():
    server = Receiver()
    yield server
    server.shutdown()


def wait_for(base_url: str, job_id: str, statuses: set[str], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = requests.get(f"{base_url}/jobs/{job_id}", timeout=30).json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']}"
        time.sleep(0.3)


def create_and_upload(base_url: str, **fields) -> dict:
    images = [{"filename": f"{i}.jpg", "content_type": "image/jpeg"} for i in range(3)]
    response = requests.post(
        f"{base_url}/jobs", json={"images": images, "max_train_steps": 5, **fields}, timeout=30
    )
    assert response.status_code == 201, response.text
    job = response.json()
    for index, target in enumerate(job["uploads"]):
        upload = requests.post(
            target["url"],
            data=target["fields"],
            files={"file": (target["filename"], jpeg(index), "image/jpeg")},
            timeout=30,
        )
        assert upload.status_code in {200, 201, 204}, upload.text
    return job


def test_the_whole_lifecycle_over_http_with_a_signed_webhook(aws, api, base_url, receiver):
    trainer = HeldTrainer(aws)
    aws.set_training_runner(trainer)
    job = create_and_upload(
        base_url, job_name="lifecycle dog", class_word="dog", webhook_url=receiver.url("/hook")
    )
    listed = aws.boto3_client("s3").list_objects_v2(
        Bucket=aws.bucket, Prefix=s3_layout.upload_prefix("lifecycle dog")
    )
    assert listed["KeyCount"] == 3

    started = requests.post(f"{base_url}/jobs/{job['id']}/start", timeout=30)
    assert started.status_code == 202, started.text
    training = wait_for(base_url, job["id"], {"training"})
    assert training["stage"] == "training" and training["run_id"]
    assert training["progress"] is not None and training["model"] is None

    trainer.release.set()
    done = wait_for(base_url, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["failure"]
    paths = {f["path"] for f in done["model"]["files"]}
    assert {"model_index.json", "manifest.json"} <= paths
    assert [s["path"] for s in done["model"]["samples"]] == ["samples/0.png"]
    link = next(f["url"] for f in done["model"]["files"] if f["path"] == "model_index.json")
    assert requests.get(link, timeout=30).content == b"weights"

    deadline = time.monotonic() + 30
    while not receiver.deliveries:
        assert time.monotonic() < deadline, "no webhook delivery"
        time.sleep(0.1)
    headers, body = receiver.deliveries[-1]
    signing.verify(api.secret, headers, body, now=time.time())
    delivered = json.loads(body)
    assert (delivered["event"], delivered["job_id"]) == ("job.ended", job["id"])
    assert delivered["result"]["status"] == "SUCCEEDED" and delivered["result"]["run_id"] == done["run_id"]
    with pytest.raises(signing.SignatureError):
        signing.verify("not-the-secret", headers, body, now=time.time())


def test_a_zip_url_becomes_a_trained_job(aws, base_url, receiver):
    aws.set_training_runner(fake_trainer(aws))
    receiver.files["/photos.zip"] = photos_zip(3)
    response = requests.post(f"{base_url}/jobs", json={"images_url": receiver.url("/photos.zip")}, timeout=60)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["imported_images"] == 3
    assert wait_for(base_url, job["id"], {"succeeded", "failed"})["status"] == "succeeded"


def test_a_zip_url_with_path_tricks_is_refused(base_url, receiver):
    receiver.files["/evil.zip"] = zip_of({"a.jpg": jpeg(0), "../../../etc/cron.d/x.jpg": jpeg(1)})
    response = requests.post(f"{base_url}/jobs", json={"images_url": receiver.url("/evil.zip")}, timeout=60)
    assert response.status_code == 422 and response.json()["code"] == "unsafe_archive"
    response = requests.post(
        f"{base_url}/jobs", json={"images_url": receiver.url("/missing.zip")}, timeout=60
    )
    assert response.status_code == 422 and response.json()["code"] == "images_url_unreachable"


def test_stopping_a_running_job_stops_its_execution_and_purge_deletes_its_data(aws, base_url):
    trainer = HeldTrainer(aws)
    aws.set_training_runner(trainer)
    job = create_and_upload(base_url, job_name="stop-me")
    assert requests.post(f"{base_url}/jobs/{job['id']}/start", timeout=30).status_code == 202
    wait_for(base_url, job["id"], {"training"})

    stopped = requests.delete(f"{base_url}/jobs/{job['id']}", timeout=30)
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "stopped"
    assert stopped.json()["failure"]["kind"] == "training_stopped"
    (execution,) = aws.runs("stop-me")
    described = aws.wait_for_execution(execution["executionArn"], timeout=30)
    assert described["status"] == "ABORTED"
    run_id = json.loads(described["input"])["run_id"]
    slots = TrainingSlots(aws.table_name, aws.boto3_client("dynamodb"))
    assert holder_id("stop-me", run_id) not in slots.holders(int(time.time() * 1000))  # its slot is free

    trainer.release.set()  # the training job ends later: the stopped execution records nothing more
    time.sleep(2)
    assert requests.get(f"{base_url}/jobs/{job['id']}", timeout=30).json()["status"] == "stopped"

    purged = requests.delete(f"{base_url}/jobs/{job['id']}?purge=true", timeout=30).json()
    assert purged["purged"] is True
    listed = aws.boto3_client("s3").list_objects_v2(
        Bucket=aws.bucket, Prefix=s3_layout.upload_prefix("stop-me")
    )
    assert listed.get("KeyCount", 0) == 0


def test_bad_requests_over_http_are_json_4xx(base_url):
    # A JSON create body is checked by the gateway's validator before the function runs (as in AWS) ...
    not_utf8 = b"\xff\xfe not utf-8"
    response = requests.post(
        f"{base_url}/jobs", data=not_utf8, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert (response.status_code, response.json()["code"]) == (422, "validation_failed")
    assert response.json()["message"] == "Invalid request body: not JSON"
    response = requests.post(f"{base_url}/jobs", json={"images": [], "colour": "red"}, timeout=30)
    assert (response.status_code, response.json()["code"]) == (422, "validation_failed")
    assert "'colour' was unexpected" in response.json()["message"]
    # ... another content type has no model there and reaches the function, which refuses it itself.
    response = requests.post(
        f"{base_url}/jobs", data=not_utf8, headers={"Content-Type": "text/plain"}, timeout=30
    )
    assert (response.status_code, response.json()["code"]) == (400, "malformed_json")
    response = requests.get(f"{base_url}/jobs/job-ffffffffffffffff", timeout=30)
    assert (response.status_code, response.json()["code"]) == (404, "job_not_found")
    assert response.headers["Content-Type"] == "application/json"


def test_a_client_slower_than_the_quiet_period_gets_no_run_before_start(aws, base_url):
    aws.set_training_runner(fake_trainer(aws))
    before = len(aws.training_job_requests())
    job = create_and_upload(base_url, job_name="slow client", max_train_steps=7)
    time.sleep(25)  # longer than the 20 s quiet period: the upload targets' hold keeps the batch open
    assert len(aws.training_job_requests()) == before
    assert requests.get(f"{base_url}/jobs/{job['id']}", timeout=30).json()["status"] != "training"
    assert requests.post(f"{base_url}/jobs/{job['id']}/start", timeout=30).status_code == 202
    request = aws.wait_for_training_job(before + 1, timeout=120)
    assert request.hyperparameters["max_train_steps"] == "7"  # the spec reached the one run
    done = wait_for(base_url, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert len(aws.runs("slow client")) == 1


def test_an_upload_target_takes_only_its_image_type_within_the_size_limit(aws, base_url):
    """The emulator makes S3's POST-policy checks: what a target refuses is never stored."""
    images = [{"filename": "a.jpg", "content_type": "image/jpeg"}]
    job = requests.post(f"{base_url}/jobs", json={"images": images}, timeout=30).json()
    (target,) = job["uploads"]
    policy = json.loads(base64.b64decode(target["fields"]["policy"]))
    limit = JobDefaults().max_image_bytes  # the limit the batch check applies to every photo
    assert ["content-length-range", 1, limit] in policy["conditions"]

    def post(body: bytes, **changes: str) -> requests.Response:
        fields = {**target["fields"], **changes}
        files = {"file": ("a.jpg", body, fields.get("Content-Type", "image/jpeg"))}
        return requests.post(target["url"], data=fields, files=files, timeout=60)

    too_big = post(b"\xff" * (limit + 1))
    assert too_big.status_code == 400 and "<Code>EntityTooLarge</Code>" in too_big.text
    assert post(b"").status_code == 400
    wrong_type = post(jpeg(0), **{"Content-Type": "text/html"})
    assert wrong_type.status_code == 403 and "Policy Condition failed" in wrong_type.text
    assert post(jpeg(0), key="uploads/another job/a.jpg").status_code == 403
    s3 = aws.boto3_client("s3")
    assert s3.list_objects_v2(Bucket=aws.bucket, Prefix="uploads/another job/")["KeyCount"] == 0
    prefix = s3_layout.upload_prefix(job["job_name"])
    assert s3.list_objects_v2(Bucket=aws.bucket, Prefix=prefix)["KeyCount"] == 0

    assert post(jpeg(0)).status_code == 204
    assert s3.list_objects_v2(Bucket=aws.bucket, Prefix=prefix)["KeyCount"] == 1
