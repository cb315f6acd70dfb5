"""api/hot.py answers the hot routes' plain case without Flask's machinery: the same answer Flask gives.

Each case sends one request twice, once with the hot lane switched off (Flask answers) and once
with it on, and compares status, headers, body and the access-log line; it also checks which
lane answered, so a case meant for the hot lane cannot pass by quietly falling back to Flask
(and a case meant for Flask cannot be answered by a hot lane that skips one of its rules).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import types

import jwt
import pytest

from connect_service import create_app, ratelimit
from connect_service.access_keys import create_access_key
from connect_service.api.hot import HotRoutes
from connect_service.db import database
from connect_service.models import AuditEvent, Organization, RateLimitHit
from tests.conftest import API_KEY_ONLY, HTTP_API_KEY

CONFIG = {"url": "https://helpdesk.example.com/api", "api_key": "hd_live_9f3a7c1e2b54"}


def hot_routes(app) -> HotRoutes:
    found = app.wsgi_app
    while not isinstance(found, HotRoutes):
        found = getattr(found, "wsgi_app", None) or found.app  # BodySizeLimit, then ProxyFix when configured
    return found


class Lanes:
    """Sends a request through Flask, then through the hot lane, and returns both answers."""

    def __init__(self, connect, caplog):
        self.connect, self.caplog = connect, caplog
        self.hot = hot_routes(connect.app)
        self.flask_calls = 0
        flask_app = self.hot.wsgi_app

        def counted(environ, start_response):
            self.flask_calls += 1
            return flask_app(environ, start_response)

        self.hot.wsgi_app = counted
        caplog.set_level(logging.INFO, logger="connect_service.access")

    def send(self, method: str, url: str, **kwargs):
        """(response, access-log fields, whether Flask's request machinery answered)."""
        self.caplog.clear()
        calls = self.flask_calls
        response = self.connect.client.open(url, method=method, **kwargs)
        lines = [r.fields for r in self.caplog.records  # (the contract client's first fetch of /openapi.json aside)
                 if r.name == "connect_service.access" and r.fields["path"] != "/openapi.json"]
        assert len(lines) == 1, lines
        return response, dict(lines[0], duration_ms=None), self.flask_calls > calls

    def both(self, method: str, url: str, *, hot: bool, same_body: bool = True, **kwargs):
        """Flask's answer and the hot lane's; asserts they agree, and that the hot lane answered iff ``hot``."""
        headers = {"X-Request-Id": "req-hot-1", **kwargs.pop("headers", {})}
        self.hot.enabled = False
        flask, flask_line, by_flask = self.send(method, url, headers=headers, **kwargs)
        assert by_flask
        self.hot.enabled = True
        fast, fast_line, fell_back = self.send(method, url, headers=headers, **kwargs)
        assert fell_back is not hot, f"hot lane {'did not answer' if hot else 'answered'}: {fast.status}"
        assert (fast.status, sorted(fast.headers.items())) == (flask.status, sorted(flask.headers.items()))
        assert fast_line == flask_line
        if same_body:
            assert fast.data == flask.data
        return flask, fast


@pytest.fixture
def lanes(connect, caplog):
    return Lanes(connect, caplog)


@pytest.fixture
def user(connect, app_with_key):
    """A connect token of ``alice``, who has connected the app's one requirement."""
    token = connect.token(app_with_key, "alice")
    r = connect.submit_credentials(token, connect.requirement_id(app_with_key, "helpdesk"), HTTP_API_KEY, CONFIG)
    assert r.status_code == 201, r.get_json()
    conn = connect.connection(app_with_key, "alice", "helpdesk")
    return {"token": token, "app": app_with_key, "connection_id": conn["id"]}


# --- statuses and requirements -------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/connect/requirements/statuses", "/v1/connect/requirements"])
def test_connect_token_routes_answer_as_flask_does(connect, lanes, user, path):
    flask, _ = lanes.both("GET", path, hot=True, headers=connect.bearer(user["token"]))
    assert flask.status_code == 200 and flask.get_json()["data"]
    if path.endswith("statuses"):
        assert [item["status"] for item in flask.get_json()["data"]] == ["completed"]
    # errors: rendered by Flask's handlers and hooks, for the hot lane too
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Basic {user['token']}"},
                    connect.auth):  # an Access Key is not a connect token
        flask, _ = lanes.both("GET", path, hot=True, headers=headers)
        assert flask.status_code == 401 and flask.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("path", ["/v1/connect/requirements/statuses", "/v1/connect/requirements"])
def test_a_revoked_token_is_refused_by_both(connect, lanes, user, path):
    r = connect.client.delete(f"/v1/apps/{user['app']['id']}/users/alice/tokens", headers=connect.auth)
    assert r.status_code == 204
    flask, _ = lanes.both("GET", path, hot=True, headers=connect.bearer(user["token"]))
    assert flask.status_code == 401


@pytest.mark.parametrize("path", ["/v1/connect/requirements/statuses", "/v1/connect/requirements"])
def test_what_is_not_the_plain_case_goes_to_flask(connect, lanes, user, path):
    token = connect.bearer(user["token"])
    flask, _ = lanes.both("GET", f"{path}?x=1", hot=False, headers=token)
    assert flask.status_code == 200
    flask, _ = lanes.both("GET", f"{path}?x=%00", hot=False, headers=token)  # Flask's NUL rule, documented
    assert flask.status_code == 400
    flask, _ = lanes.both("GET", path, hot=False, headers={**token, "Host": user["app"]["hostname"]})
    assert flask.status_code == 404  # an app host serves only tokens
    flask, _ = lanes.both("GET", path, hot=False, headers={**token, "Host": "unknown.example"})
    assert flask.status_code == 200  # neither a management host nor an app's: Flask looks it up
    flask, _ = lanes.both("HEAD", path, hot=False, headers=token)
    assert flask.status_code == 200 and flask.data == b""


def test_an_unexpected_error_is_flasks_500(connect, lanes, user, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret-looking detail")

    monkeypatch.setattr("connect_service.api.connect.statuses_for", broken)  # both lanes call statuses_answer
    flask, _ = lanes.both("GET", "/v1/connect/requirements/statuses", hot=True, headers=connect.bearer(user["token"]))
    assert flask.status_code == 500 and b"secret-looking" not in flask.data
    # an answer that cannot be written as JSON: the same 500, not a traceback past the middleware
    unwritable = [{"id": object()}]
    monkeypatch.setattr("connect_service.api.connect.statuses_for", lambda *args: unwritable)
    flask, _ = lanes.both("GET", "/v1/connect/requirements/statuses", hot=True, headers=connect.bearer(user["token"]))
    assert flask.status_code == 500 and flask.get_json()["error"]["code"] == "internal_server_error"


def test_the_request_id_is_made_when_the_client_sends_none(connect, lanes, user):
    lanes.hot.enabled = True
    r = connect.client.get("/v1/connect/requirements/statuses", headers=connect.bearer(user["token"]))
    assert r.status_code == 200 and len(r.headers["X-Request-Id"]) == 32
    long_id = "r" * 100
    r = connect.client.get("/v1/connect/requirements/statuses",
                           headers={**connect.bearer(user["token"]), "X-Request-Id": long_id})
    assert r.headers["X-Request-Id"] == long_id[:64]


# --- tokens --------------------------------------------------------------------------------------

def claims(response) -> dict:
    return jwt.decode(response.get_json()["token"], options={"verify_signature": False})


def token_request(app: dict, body, **headers):
    return {"headers": {"Host": app["hostname"], **headers}, "data": json.dumps(body),
            "content_type": "application/json"}


def test_tokens_answer_as_flask_does(connect, lanes, app_with_key):
    flask, fast = lanes.both("POST", "/v1/connect/tokens", hot=True, same_body=False,
                             **token_request(app_with_key, {"user_id": "alice", "user_display": "Alice"}))
    assert flask.status_code == fast.status_code == 201
    assert set(fast.get_json()) == set(flask.get_json()) == {"token", "expires_at", "connect_url"}
    for key in ("sub", "aud", "iss", "name"):
        assert claims(fast)[key] == claims(flask)[key]
    assert claims(fast)["jti"] != claims(flask)["jti"]
    # each minting counted once in the app's bucket, by either lane
    with connect.app.app_context(), database.connection_context():
        assert sum(row.count for row in RateLimitHit.select()
                   if row.bucket.startswith(f"tokens:{app_with_key['id']}:")) == 2


@pytest.mark.parametrize("body, content_type, status", [
    ({"user_id": ""}, "application/json", 400),
    ({"user_id": "alice", "extra": 1}, "application/json", 400),
    ({}, "application/json", 400),
    ("not json", "application/json", 400),
    ({"user_id": "alice"}, "text/plain", 415),
    ({"user_id": "alice"}, "application/vnd.api+json", 201),
])
def test_token_bodies_off_the_plain_case_go_to_flask(connect, lanes, app_with_key, body, content_type, status):
    data = body if isinstance(body, str) else json.dumps(body)
    flask, _ = lanes.both("POST", "/v1/connect/tokens", hot=False, same_body=status != 201,
                          headers={"Host": app_with_key["hostname"]}, data=data, content_type=content_type)
    assert flask.status_code == status


def test_tokens_on_a_host_without_an_app_go_to_flask(connect, lanes):
    for host in ("localhost", "nowhere.example"):
        flask, _ = lanes.both("POST", "/v1/connect/tokens", hot=False, headers={"Host": host},
                              json={"user_id": "alice"})
        assert flask.status_code == 404


def test_a_private_app_needs_its_orgs_key_in_both(connect, lanes):
    app = connect.create_app_with_requirements(API_KEY_ONLY, visibility="private")
    flask, _ = lanes.both("POST", "/v1/connect/tokens", hot=True, **token_request(app, {"user_id": "alice"}))
    assert flask.status_code == 401
    flask, fast = lanes.both("POST", "/v1/connect/tokens", hot=True, same_body=False,
                             **token_request(app, {"user_id": "alice"}, **connect.auth))
    assert flask.status_code == fast.status_code == 201


def test_user_verification_and_rate_limit_in_both(connect, lanes, monkeypatch):
    now = time.time()
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(time=lambda: now))  # one window throughout
    r = connect.client.post("/v1/apps", headers=connect.auth, json={
        "name": "Verified", "hostname": "verified-hot.test", "visibility": "public", "user_verification": "required"})
    assert r.status_code == 201, r.get_json()
    app, secret = r.get_json(), r.get_json()["user_verification_secret"]
    connect.deploy(app, API_KEY_ONLY)
    flask, _ = lanes.both("POST", "/v1/connect/tokens", hot=True,
                          **token_request(app, {"user_id": "bob", "user_id_signature": "0" * 64}))
    assert flask.status_code == 401
    signature = hmac.new(secret.encode(), b"bob", hashlib.sha256).hexdigest()
    flask, fast = lanes.both("POST", "/v1/connect/tokens", hot=True, same_body=False,
                             **token_request(app, {"user_id": "bob", "user_id_signature": signature}))
    assert flask.status_code == fast.status_code == 201
    monkeypatch.setitem(connect.app.config["CONNECT"], "rate_limit_tokens_per_minute", 4)
    flask, _ = lanes.both("POST", "/v1/connect/tokens", hot=True,  # the 5th and 6th of this minute
                          **token_request(app, {"user_id": "bob", "user_id_signature": signature}))
    assert flask.status_code == 429 and flask.headers["Retry-After"]


# --- a connection, with and without its secrets -------------------------------------------------

def test_connection_reads_answer_as_flask_does(connect, lanes, user):
    url = f"/v1/connections/{user['connection_id']}"
    for query in ("", "?include_secrets=true", "?include_secrets=true&refresh=auto", "?refresh=never",
                  "?include_secrets=false"):
        flask, _ = lanes.both("GET", url + query, hot=True, headers=connect.auth)
        assert flask.status_code == 200
        assert ("api_key" in json.dumps(flask.get_json())) == ("include_secrets=true" in query)


def test_a_secrets_read_is_audited_alike_by_both(connect, lanes, user):
    url = f"/v1/connections/{user['connection_id']}?include_secrets=true"
    lanes.both("GET", url, hot=True, headers={**connect.auth, "X-Forwarded-For": "198.51.100.7"})
    with connect.app.app_context(), database.connection_context():
        events = list(AuditEvent.select().where(AuditEvent.action == "connection.secrets_read")
                      .order_by(AuditEvent.at))
    assert len(events) == 2
    flask, fast = ((e.actor_type, e.actor_id, e.ip, e.request_id, e.target_id, e.app_id) for e in events)
    assert fast == flask and flask[0] == "access_key" and flask[3] == "req-hot-1"


def test_connection_reads_off_the_plain_case_go_to_flask(connect, lanes, user):
    url = f"/v1/connections/{user['connection_id']}"
    for query, status in (("?include_secrets=maybe", 400), ("?include_secrets=true&include_secrets=false", 200),
                          ("?include_secrets=true&refresh=force", 409), ("?include_secrets=%74rue", 200),
                          ("?include_secrets=true&other=1", 200)):
        flask, _ = lanes.both("GET", url + query, hot=False, headers=connect.auth)
        assert flask.status_code == status, query
    flask, _ = lanes.both("GET", "/v1/connections/no%00pe", hot=False, headers=connect.auth)
    assert flask.status_code == 404


def test_connection_errors_are_flasks(connect, lanes, user):
    url = f"/v1/connections/{user['connection_id']}?include_secrets=true"
    flask, _ = lanes.both("GET", url, hot=True, headers={"Authorization": "Bearer ak_wrong"})
    assert flask.status_code == 401
    flask, _ = lanes.both("GET", "/v1/connections/conn_missing?include_secrets=true", hot=True, headers=connect.auth)
    assert flask.status_code == 404
    # another org's key sees no such connection
    with connect.app.app_context(), database.connection_context():
        _, other_key = create_access_key(Organization.create(name="Other org"), "other")
    flask, _ = lanes.both("GET", url, hot=True, headers=connect.bearer(other_key))
    assert flask.status_code == 404


def test_behind_a_proxy_both_lanes_see_the_forwarded_address_and_host(connect, user, caplog):
    proxied = create_app(dict(connect.app.config["CONNECT"], proxy_count=1))  # ProxyFix in front of both lanes
    lanes = Lanes(types.SimpleNamespace(app=proxied, client=proxied.test_client()), caplog)
    url = f"/v1/connections/{user['connection_id']}?include_secrets=true"
    forwarded = {**connect.auth, "X-Forwarded-For": "198.51.100.7"}
    flask, _ = lanes.both("GET", url, hot=True, headers=forwarded)
    assert flask.status_code == 200
    assert caplog.records[-1].fields["remote_addr"] == "198.51.100.7"
    with proxied.app_context(), database.connection_context():
        ips = [e.ip for e in AuditEvent.select().where(AuditEvent.action == "connection.secrets_read")]
    assert ips == ["198.51.100.7", "198.51.100.7"]
    # the forwarded host decides the lane: an app's hostname serves tokens only
    flask, _ = lanes.both("GET", "/v1/connect/requirements", hot=False,
                          headers={**connect.bearer(user["token"]), "X-Forwarded-Host": user["app"]["hostname"]})
    assert flask.status_code == 404
