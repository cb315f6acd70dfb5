"""Issue 12 item 4: input that used to cause server errors is a 400 naming the field; output is strict JSON.

Lone surrogates, nesting deeper than 32 levels, NaN/Infinity/overflowing numbers, and cursors
outside their alphabet, in bodies, query arguments, path ids and the hosted page's form posts.
"""
import datetime
import json

import pytest

from connect_service import strict_json
from connect_service.connection_types import OAuth2Provider
from connect_service.db import database
from connect_service.models import App, Connection
from connect_service.oauth import token_settings
from tests.conftest import API_KEY_ONLY, HTTP_API_KEY

SURROGATE = "\ud800"


def strict_loads(data: bytes):
    """A parser as strict as other languages': no NaN/Infinity, no lone surrogates."""
    def refuse(name):
        raise ValueError(f"non-standard constant {name}")

    value = json.loads(data, parse_constant=refuse)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return value


def nested(depth: int, leaf=1):
    value = leaf
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def post_raw(client, path, text, headers):
    return client.post(path, data=text, headers={"Content-Type": "application/json", **headers})


def post_json(client, path, value, headers):
    """Like ``json=`` but serialised by Python's json (the test client would use the app's strict provider)."""
    return post_raw(client, path, json.dumps(value), headers)


# --- lone surrogates ------------------------------------------------------------------------------

def test_lone_surrogate_user_id_is_a_400_and_no_token_is_minted(connect, app_with_key):
    host = {"Host": app_with_key["hostname"]}
    r = post_json(connect.client, "/v1/connect/tokens", {"user_id": "bob" + SURROGATE}, host)
    assert r.status_code == 400, r.data
    assert r.get_json()["error"]["details"] == {"user_id": strict_json.SURROGATE}
    # a raw escaped low surrogate and a reversed pair are lone too
    for text in ('{"user_id": "\\udc00x"}', '{"user_id": "\\ude00\\ud83d"}'):
        r = post_raw(connect.client, "/v1/connect/tokens", text, host)
        assert r.status_code == 400 and set(r.get_json()["error"]["details"]) == {"user_id"}
    # a valid pair is a real character
    r = post_raw(connect.client, "/v1/connect/tokens", '{"user_id": "smile\\ud83d\\ude00"}', host)
    assert r.status_code == 201


def test_lone_surrogates_in_names_config_values_and_keys_are_refused(connect, app_with_key):
    with connect.app.app_context(), database.connection_context():
        apps_before = App.select().count()
    r = post_json(connect.client, "/v1/apps", {"name": "App" + SURROGATE, "hostname": "s.example"}, connect.auth)
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {"name": strict_json.SURROGATE}
    r = post_json(connect.client, "/v1/apps", {"name": "ok", "hostname": "s.example", SURROGATE: 1}, connect.auth)
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {"input": strict_json.SURROGATE}
    token = connect.token(app_with_key, "alice")
    rid = connect.requirement_id(app_with_key, "helpdesk")
    r = post_json(connect.client, f"/v1/connect/requirements/{rid}/credentials",
                  {"type": HTTP_API_KEY, "config": {"url": "https://h.example", "api_key": SURROGATE}},
                  {"Authorization": f"Bearer {token}"})
    assert r.status_code == 400
    assert r.get_json()["error"]["details"] == {"config.api_key": strict_json.SURROGATE}
    with connect.app.app_context(), database.connection_context():
        assert not Connection.select().where(Connection.customer_id == "alice").exists()
        assert App.select().count() == apps_before


def test_query_arguments_and_path_ids_cannot_carry_surrogates(connect, app_with_key):
    # UTF-8 of a surrogate (ED A0 80) is invalid UTF-8: decoded with replacement, never a lone surrogate
    r = connect.client.get("/v1/apps/%ED%A0%80", headers=connect.auth)
    assert r.status_code == 404
    r = connect.client.get("/v1/connections?status=%ED%A0%80", headers=connect.auth)
    assert r.status_code == 400 and set(r.get_json()["error"]["details"]) == {"status"}


# --- nesting --------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_json_nested_deeper_than_32_is_refused_at_parse_time(connect, app_with_key, depth):
    token = connect.token(app_with_key, "alice")
    rid = connect.requirement_id(app_with_key, "helpdesk")
    text = '{"type": "%s", "config": %s}' % (HTTP_API_KEY, "[" * (depth - 1) + "]" * (depth - 1))
    r = post_raw(connect.client, f"/v1/connect/requirements/{rid}/credentials", text,
                 {"Authorization": f"Bearer {token}"})
    assert r.status_code == 400, r.data[:200]
    details = r.get_json()["error"]["details"]
    assert list(details.values()) == [strict_json.TOO_DEEP]
    assert next(iter(details)) in ("input",) or next(iter(details)).startswith("config.0.0")


def test_nesting_of_32_passes_the_parser(connect):
    # judged by the schema (unknown field), not refused as too deep
    r = post_json(connect.client, "/v1/apps", {"name": "x", "hostname": "n.example", "extra": nested(32)}, connect.auth)
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {"extra": "is not a known field"}
    r = post_json(connect.client, "/v1/apps", {"name": "x", "hostname": "n.example", "extra": nested(33)}, connect.auth)
    assert r.status_code == 400 and list(r.get_json()["error"]["details"].values()) == [strict_json.TOO_DEEP]


# --- numbers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 30,
                                    str(2 ** 53), "1" * 5000])
def test_nan_infinity_and_overflowing_numbers_are_refused(connect, number):
    r = post_raw(connect.client, "/v1/apps", '{"name": "x", "hostname": "n.example", "n": %s}' % number,
                 connect.auth)
    assert r.status_code == 400, r.data[:200]
    details = r.get_json()["error"]["details"]
    assert details in ({"n": strict_json.BAD_NUMBER}, {"input": "is not valid JSON"})
    assert number not in r.get_data(as_text=True)


def test_in_range_numbers_still_load():
    assert strict_json.loads(f'[{2 ** 53 - 1}, -{2 ** 53 - 1}, 1.5e300]') == [2 ** 53 - 1, -(2 ** 53 - 1), 1.5e300]
    assert strict_json.problems(strict_json.loads("[NaN]")) == {"0": strict_json.BAD_NUMBER}


# --- cursors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cursor", ["²", "١", "abc!", "%%%", "a b", "x" * 600])
def test_cursors_accept_only_their_alphabet(connect, app_with_key, cursor):
    for path in ("/v1/apps", f"/v1/apps/{app_with_key['id']}/versions", "/v1/connections", "/v1/credentials",
                 "/v1/access-keys", "/v1/connection-types"):
        r = connect.client.get(path, query_string={"cursor": cursor}, headers=connect.auth)
        assert r.status_code == 400, (path, r.data[:200])
        assert r.get_json()["error"]["details"] == {"cursor": "is not a valid cursor"}, path


def test_a_well_formed_cursor_with_foreign_digits_inside_is_refused(connect):
    import base64
    for created in ("２０２６-01-01T00:00:00", "2026-01-01T00:00:0²"):
        raw = json.dumps([created, "app_x"]).encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        r = connect.client.get("/v1/apps", query_string={"cursor": cursor}, headers=connect.auth)
        assert r.status_code == 400 and r.get_json()["error"]["details"] == {"cursor": "is not a valid cursor"}


# --- strict output --------------------------------------------------------------------------------

def test_a_providers_raw_token_response_is_sanitised(connect):
    now = datetime.datetime(2026, 1, 1)
    token = {"access_token": "a", "expires_in": 60, "n": float("nan"), "i": float("inf"), "s": "x" + SURROGATE,
             "deep": nested(40), SURROGATE: "key"}
    with connect.app.app_context():
        settings, _ = token_settings(token, previous=None, provider=OAuth2Provider(), credential=None, now=now)
    raw = settings["oauth"]["credentials"]["raw"]
    assert raw["n"] is None and raw["i"] is None and raw["s"] == "x\ufffd" and raw["\ufffd"] == "key"
    assert strict_json.problems(raw) == {}
    strict_loads(json.dumps(raw, allow_nan=False).encode())


def test_responses_are_strict_json_even_for_a_non_finite_value(connect):
    with connect.app.test_request_context():
        body = connect.app.json.dumps({"a": float("nan"), "b": [float("-inf")], "c": "x" + SURROGATE})
    assert strict_loads(body.encode()) == {"a": None, "b": [None], "c": "x\ufffd"}


def test_the_providers_fast_path_writes_what_sanitise_would(connect):
    """Values that are already strict skip the walk in Python; every other value is written from sanitise."""
    values = [{"data": [{"id": "r1", "title": "Tickets \u00e9\u4e2d", "status": "pending", "n": 1.5, "k": None}]},
              {"emoji": "\U0001F600"},  # a valid pair: escaped as two \\ud… halves, so the slow path runs
              {"lone": "x" + SURROGATE}, {"nan": float("nan")}, [float("inf")], nested(31), nested(32),
              nested(40), {"backslash": "\\udon't"}, [{"a": [1, 2, {"b": "c"}]}] * 20]
    with connect.app.test_request_context():
        for value in values:
            expected = json.dumps(strict_json.sanitise(value), allow_nan=False, ensure_ascii=True,
                                  sort_keys=False)
            assert connect.app.json.dumps(value) == expected, str(value)[:40]


# --- the hosted page's form posts ----------------------------------------------------------------

def test_form_to_config_refuses_deep_surrogate_and_non_finite_json():
    from connect_service.web.forms import form_to_config

    fields = [{"name": "extra", "type": "object", "secret": False, "required": False, "label": "Extra"}]
    for raw, message in (('{"a": "\\ud800"}', strict_json.SURROGATE), ('{"a": NaN}', strict_json.BAD_NUMBER),
                         ("[" * 40 + "]" * 40, strict_json.TOO_DEEP), ("[" * 100_000 + "]" * 100_000,
                                                                         strict_json.TOO_DEEP)):
        config, _, problems = form_to_config(fields, {"config.extra": raw})
        assert problems == {"extra": message} and "extra" not in config, raw[:20]


def test_a_token_response_nested_past_the_parsers_stack_is_a_server_error_not_a_crash():
    from connect_service.oauth.errors import ServerError
    from connect_service.oauth.grants import _decode_body

    class Response:
        status_code = 200
        headers = {"Content-Type": "application/json"}
        content = ('{"access_token": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()

    with pytest.raises(ServerError):
        _decode_body(Response())


def test_form_text_fields_refuse_nul_like_the_api():
    from connect_service.web.forms import form_to_config

    fields = [{"name": "api_key", "type": "string", "secret": True, "required": True, "label": "API key"}]
    config, _, problems = form_to_config(fields, {"config.api_key": "a\x00b"})
    assert problems == {"api_key": strict_json.NUL} and config == {}
