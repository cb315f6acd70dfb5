"""Issue 12 item 10: error details never echo submitted text longer than 64 characters, nor markup."""
import json

import pytest

from connect_service import errors

LONG = "x" * 50 + "y" * 50  # 100 characters, no spaces
MARKUP = '<img src=x onerror="alert(1)">'


def echoed(text: str, body: str) -> bool:
    """Whether ``body`` carries more than 64 consecutive characters of ``text``."""
    return any(text[i:i + 65] in body for i in range(max(1, len(text) - 64)))


def assert_safe(response, *submitted):
    body = response.get_data(as_text=True)
    details = response.get_json()["error"].get("details") or {}
    for text in submitted:
        if len(text) > 64:
            assert not echoed(text, body), body
    flat = json.dumps(details, ensure_ascii=False)
    assert "<" not in flat and ">" not in flat, flat


@pytest.mark.parametrize("key", [LONG, MARKUP, "a." + LONG, "ok<b>bold</b>"])
def test_unknown_field_names_are_not_echoed(connect, key):
    r = connect.client.post("/v1/apps", json={"name": "x", "hostname": "e.example", key: 1}, headers=connect.auth)
    assert r.status_code == 400
    assert len(r.get_json()["error"]["details"]) == 1
    assert_safe(r, key)


def test_error_details_are_made_safe_wherever_they_are_raised():
    error = errors.BadRequest({f"spec.{LONG}": f"{LONG!r} is not {MARKUP}", "name": "is required"})
    text = json.dumps(error.body())
    assert not echoed(LONG, text) and "<" not in text and ">" not in text
    assert error.details["name"] == "is required"
    assert list(error.details)[0].startswith("spec.")
    # ordinary sentences are untouched
    sentence = "must be an absolute http(s) URL such as https://helpdesk.example.com/api/v2 (no fragment)"
    assert errors.BadRequest({"url": sentence}).details == {"url": sentence}
    two_quotes = ("no credential for connector 'pipedream' is available to this app: create one with "
                  "POST /v1/credentials (connector_name='pipedream')")
    assert errors.BadRequest({"credential": two_quotes}).details == {"credential": two_quotes}
    route = "link an account: POST /v1/connect/requirements/15db816a-c8d9-59f4-b4fa-4dcc12b76c6c/accounts"
    assert errors.BadRequest({"input": route}).details == {"input": route}
