"""Webhook delivery: signed per attempt, retried with backoff on 5xx, given up on a refusing 4xx."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from frontend_api import signing
from frontend_api.webhook_handler import result_of
from frontend_api.webhooks import Delivery, DeliveryFailed, deliver, delivery_body


class Scripted(ThreadingHTTPServer):
    """Answers POSTs with the next status of ``script``; records what it received."""

    daemon_threads = True

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.received: list[tuple[dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Scripted

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        self.send_response(self.server.script.pop(0) if self.server.script else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver(request):
    server = Scripted(request.param)
    yield server
    server.shutdown()


BODY = delivery_body("job-0123456789abcdef", {"job_name": "dog", "status": "SUCCEEDED"})


@pytest.mark.parametrize("receiver", [[500, 503, 204]], indirect=True)
def test_retries_with_backoff_until_accepted_each_attempt_freshly_signed(receiver):
    sleeps, clock = [], iter([1000, 1001, 1003])
    status = deliver(
        Delivery(receiver.url, BODY), "s", allow_local=True, sleep=sleeps.append, clock=lambda: next(clock)
    )
    assert status == 204 and sleeps == [1.0, 2.0]
    stamps = [headers[signing.TIMESTAMP_HEADER] for headers, _ in receiver.received]
    assert stamps == ["1000", "1001", "1003"]
    for (headers, body), now in zip(receiver.received, (1000, 1001, 1003), strict=True):
        signing.verify("s", headers, body, now=now)


@pytest.mark.parametrize("receiver", [[500, 500, 500, 500]], indirect=True)
def test_a_receiver_that_keeps_failing_raises_for_a_later_redelivery(receiver):
    with pytest.raises(DeliveryFailed, match="HTTP 500"):
        deliver(Delivery(receiver.url, BODY), "s", allow_local=True, sleep=lambda s: None)
    assert len(receiver.received) == 4


@pytest.mark.parametrize("receiver", [[410]], indirect=True)
def test_a_refusing_4xx_is_not_retried(receiver):
    assert deliver(Delivery(receiver.url, BODY), "s", allow_local=True, sleep=lambda s: None) is None
    assert len(receiver.received) == 1


def test_a_private_webhook_url_is_never_posted_to():
    assert deliver(Delivery("https://10.0.0.1/hook", BODY), "s", sleep=lambda s: None) is None


def test_the_result_is_read_from_an_sns_envelope_or_raw():
    result = {"job_name": "dog", "status": "FAILED"}
    envelope = {"Type": "Notification", "Message": json.dumps(result)}
    assert result_of(json.dumps(envelope)) == result == result_of(json.dumps(result))
