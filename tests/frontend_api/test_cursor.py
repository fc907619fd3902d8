import base64
import json

import pytest

from frontend_api import cursor
from frontend_api.errors import ApiError

POSITION = "JOB#1764931200000#job-0123456789abcdef"


def test_a_cursor_round_trips_and_is_opaque():
    text = cursor.encode(POSITION)
    assert "JOB" not in text and "=" not in text
    assert cursor.decode(text) == POSITION


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64!",
        base64.urlsafe_b64encode(b"{").decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 1, "after": "OWNER#x"}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 2, "after": POSITION}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps([POSITION]).encode()).decode(),
        "A" * 500,
    ],
)
def test_anything_else_is_invalid_cursor(text):
    with pytest.raises(ApiError) as caught:
        cursor.decode(text)
    assert (caught.value.code, caught.value.status) == ("invalid_cursor", 400)
