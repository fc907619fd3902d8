import hashlib
import hmac

import pytest

from frontend_api import signing


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    expected = hmac.new(b"s3cret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert signing.signature("s3cret", 1700000000, b'{"a":1}') == f"v1={expected}"


def test_verify_accepts_a_fresh_delivery_and_rejects_tampering_and_replays():
    body = b'{"status":"SUCCEEDED"}'
    headers = signing.signed_headers("k", 1000, body)
    signing.verify("k", headers, body, now=1100)
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify("k", headers, body + b" ", now=1100)
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify("other", headers, body, now=1100)
    with pytest.raises(signing.SignatureError, match="window"):
        signing.verify("k", headers, body, now=1000 + signing.REPLAY_WINDOW_SECONDS + 1)
    with pytest.raises(signing.SignatureError, match="malformed"):
        signing.verify("k", {signing.SIGNATURE_HEADER: headers[signing.SIGNATURE_HEADER]}, body, now=1000)
