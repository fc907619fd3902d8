import pytest

from frontend_api import idempotency
from frontend_api.errors import ApiError


def test_fingerprint_ignores_key_order_and_whitespace_but_not_values():
    assert idempotency.fingerprint({"a": 1, "b": [1, 2]}) == idempotency.fingerprint({"b": [1, 2], "a": 1})
    assert idempotency.fingerprint({"a": 1}) != idempotency.fingerprint({"a": 2})


def test_record_keys_are_per_owner():
    assert idempotency.record_key("user:a", "k") != idempotency.record_key("user:b", "k")


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "é"])
def test_bad_keys_are_refused(key):
    with pytest.raises(ApiError) as caught:
        idempotency.check_key(key)
    assert caught.value.code == "invalid_idempotency_key"
