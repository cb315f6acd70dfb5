"""Secrets stay secret: a full flow's log output, error bodies and exception messages are grepped for each secret.

Every log record of every logger is captured at DEBUG (the service's, the
libraries' it drives: urllib3, requests, oauthlib, peewee, werkzeug, flask),
plus everything written to stderr. Records emitted by the in-process Authlib
test *provider* (its own thread and package) are the provider's logs, not
ours, and are left out.
"""
from __future__ import annotations

import json
import hashlib
import hmac
import logging
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.conftest import API_KEY_ONLY, HTTP_API_KEY
from tests.support.gunicorn_server import GunicornServer
from tests.support.oauth_server import OAuthTestServer

PUBLIC = "http://connect.test"
OAUTH2 = "dynamiq.connections.OAuth2"
API_KEY = "hd_live_SECRET_api_key_7f3a9c1e2b54"
BAD_SUBMISSION_KEY = "hd_live_SECRET_in_a_bad_submission_11"
RETURN = "https://app.example.com/done"


@pytest.fixture(scope="module")
def server():
    with OAuthTestServer() as srv:
        yield srv


class Capture(logging.Handler):
    """Every record of every logger, formatted with its traceback."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record):
        if not getattr(self, "_paused", False):
            self.records.append(record)

    def paused(self):
        handler = self

        class _Paused:
            def __enter__(self):
                handler._paused = True

            def __exit__(self, *exc):
                handler._paused = False

        return _Paused()

    def ours(self) -> list[logging.LogRecord]:
        return [r for r in self.records if not r.threadName.startswith("oauth-test-server")
                and not r.name.startswith("authlib")]

    def text(self) -> str:
        out = []
        for record in self.ours():
            out.append(self.format(record))
            out.append(repr(record.args))
            out.append(json.dumps(getattr(record, "fields", {}), default=str))
        return "\n".join(out)


@pytest.fixture
def capture():
    """Turn every logger up to DEBUG and capture everything they say."""
    handler = Capture()
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in list(logging.root.manager.loggerDict)}
    saved_root = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_root)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_absent(secrets: dict[str, str], haystack: str, where: str):
    for name, value in secrets.items():
        assert value and value not in haystack, f"{name} found in {where}"


def test_full_flow_leaks_no_secret(connect, server, capture, capfd):
    # Logging configured by create_app: set connect_service's logger to DEBUG again after it
    logging.getLogger("connect_service").setLevel(logging.DEBUG)
    secrets: dict[str, str] = {"api_key": API_KEY, "bad_submission_key": BAD_SUBMISSION_KEY,
                               "access_key": connect.access_key}
    bodies: list[str] = []

    def keep(r):
        bodies.append(r.get_data(as_text=True))
        return r

    # 1. a connect token, and the hosted page opened with it
    app = connect.create_app_with_requirements(API_KEY_ONLY + [
        {"key": "account", "type": "connection", "title": "Account",
         "spec": {"type": "connection", "data": {"type": OAUTH2}}}], return_urls=[RETURN])
    r = connect.client.post("/v1/connect/tokens", json={"user_id": "alice"}, headers={"Host": app["hostname"]})
    assert r.status_code == 201 and r.headers["Cache-Control"] == "no-store"
    token = r.get_json()["token"]
    secrets["connect_token"] = token
    page = connect.client.get(f"/connect?token={token}")
    assert page.status_code in (302, 303)
    assert token not in page.headers.get("Location", "")

    # 2. credentials with an API key, a bad submission, a resubmission
    rid = connect.requirement_id(app, "helpdesk")
    r = keep(connect.submit_credentials(token, rid, HTTP_API_KEY, {"url": "https://helpdesk.example.com/api",
                                                                    "api_key": API_KEY}))
    assert r.status_code == 201
    r = keep(connect.submit_credentials(token, rid, HTTP_API_KEY, {"url": "not a url",
                                                                    "api_key": BAD_SUBMISSION_KEY}))
    assert r.status_code == 400
    r = keep(connect.submit_credentials(token, rid, "wrong.Type", {"api_key": BAD_SUBMISSION_KEY}))
    assert r.status_code == 400
    r = keep(connect.client.post(f"/v1/connect/requirements/{rid}/credentials", headers=bearer(token),
                                 data=f'{{"type": "{HTTP_API_KEY}", "config": {{"api_key": "{BAD_SUBMISSION_KEY}"',
                                 content_type="application/json"))
    assert r.status_code == 400

    # 3. an OAuth flow against the Authlib server
    client_id = f"client-{uuid.uuid4().hex[:8]}"
    client_secret = f"CLIENT_SECRET_{uuid.uuid4().hex}"
    secrets["client_secret"] = client_secret
    server.rotate_refresh_tokens = True
    server.auto_approve = True
    r = keep(connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "custom", "mode": "OAUTH", "connector_name": "oauth2", "oauth_url": server.authorize_url,
        "oauth_token_url": server.token_url, "oauth_client_id": client_id, "oauth_client_secret": client_secret,
        "oauth_scope": "read", "oauth_grant_type": "authorization_code"}))
    assert r.status_code == 201
    cred_id = r.get_json()["id"]
    server.add_client(client_id, client_secret, [r.get_json()["redirect_uri"]])
    r = keep(connect.client.get(f"/v1/credentials/{cred_id}", headers=connect.auth))
    oauth_rid = connect.requirement_id(app, "account")
    r = connect.client.post(f"/v1/connect/requirements/{oauth_rid}/oauth2/authorize", headers=bearer(token),
                            query_string={"return_to": RETURN})
    assert r.status_code == 201, r.get_json()
    assert r.headers["Cache-Control"] == "no-store"  # the URL carries the state of an unbound flow
    auth_url = r.get_json()["authorization_url"]
    conn_id = r.get_json()["connection_id"]
    secrets["state"] = parse_qs(urlsplit(auth_url).query)["state"][0]
    with capture.paused():  # the user's browser is another machine: its HTTP library's logs are not ours
        browser = requests.get(auth_url, allow_redirects=False, timeout=10)
    location = browser.headers["Location"]
    secrets["code"] = parse_qs(urlsplit(location).query)["code"][0]
    done = connect.client.get(location)
    assert done.status_code == 303 and done.headers["Cache-Control"] == "no-store"
    assert secrets["state"] not in done.headers["Location"] and secrets["code"] not in done.headers["Location"]
    issued = server.last_token(client_id)
    secrets["access_token"], secrets["refresh_token"] = issued.access_token, issued.refresh_token
    # the same state and code again (replay)
    keep(connect.client.get(location))

    # 4. the backend reads the secrets (explicitly asked: in the body, never cached) and forces a refresh
    r = connect.client.get(f"/v1/connections/{conn_id}", headers=connect.auth,
                           query_string={"include_secrets": "true", "refresh": "force"})
    assert r.status_code == 200, r.get_json()
    assert r.headers["Cache-Control"] == "no-store"
    creds = r.get_json()["settings"]["oauth"]["credentials"]
    secrets["refreshed_access_token"] = creds["access_token"]
    secrets["refreshed_refresh_token"] = creds["refresh_token"]
    assert creds["access_token"] != secrets["access_token"]
    # without include_secrets nothing secret is in the body
    r = keep(connect.client.get(f"/v1/connections/{conn_id}", headers=connect.auth))
    # 5. the provider fails: errors must not carry tokens
    server.down = True
    try:
        r = keep(connect.client.get(f"/v1/connections/{conn_id}", headers=connect.auth,
                                    query_string={"include_secrets": "true", "refresh": "force"}))
        assert r.status_code == 502
    finally:
        server.down = False
    server.revoke_family(secrets["refreshed_refresh_token"])
    r = keep(connect.client.get(f"/v1/connections/{conn_id}", headers=connect.auth,
                                query_string={"include_secrets": "true", "refresh": "force"}))
    assert r.status_code in (400, 409, 502), r.get_json()
    # 6. list views and the statuses
    keep(connect.client.get("/v1/connections", headers=connect.auth))
    keep(connect.client.get("/v1/connect/requirements/statuses", headers=bearer(token)))
    # 7. user verification: the secret (shown once, in its own answers only), signatures good and bad, rotation
    r = connect.client.post("/v1/apps", headers=connect.auth, json={
        "name": "Verified", "hostname": f"verified-{uuid.uuid4().hex[:8]}.test", "visibility": "public",
        "user_verification": "required"})
    assert r.status_code == 201
    verified, secrets["uv_secret"] = r.get_json(), r.get_json()["user_verification_secret"]
    secrets["uv_signature"] = hmac.new(secrets["uv_secret"].encode(), b"alice", hashlib.sha256).hexdigest()
    secrets["uv_wrong_signature"] = hmac.new(b"guess", b"alice", hashlib.sha256).hexdigest()
    for signature, status in ((secrets["uv_wrong_signature"], 401), (secrets["uv_signature"], 201)):
        r = connect.client.post("/v1/connect/tokens", json={"user_id": "alice", "user_id_signature": signature},
                                headers={"Host": verified["hostname"]})
        assert r.status_code == status
        if status == 401:
            keep(r)
    r = connect.client.post(f"/v1/apps/{verified['id']}/user-verification-secret", headers=connect.auth)
    secrets["uv_rotated_secret"] = r.get_json()["user_verification_secret"]
    keep(connect.client.get(f"/v1/apps/{verified['id']}", headers=connect.auth))
    keep(connect.client.get("/v1/apps", headers=connect.auth))

    # --- the checks ---------------------------------------------------------------------------
    logged = capture.text()
    assert len(capture.ours()) > 20  # the capture really saw the flow (access log lines at least)
    assert any(r.name == "connect_service.access" for r in capture.ours())
    assert_absent(secrets, logged, "the log records")
    out, err = capfd.readouterr()
    assert_absent(secrets, out + err, "stdout/stderr")
    assert_absent(secrets, "\n".join(bodies), "a response body that did not ask for secrets")
    # exception messages attached to any record
    for record in capture.ours():
        if record.exc_info and record.exc_info[1] is not None:
            assert_absent(secrets, str(record.exc_info[1]) + repr(record.exc_info[1].args), "an exception")


def test_error_bodies_do_not_echo_submitted_values(connect, app_with_key):
    token = connect.token(app_with_key, "bob")
    rid = connect.requirement_id(app_with_key, "helpdesk")
    for config in ({"url": API_KEY, "api_key": API_KEY}, {"url": "https://x.example", "api_key": 5, "extra": API_KEY},
                   {"api_key": API_KEY * 50}):
        r = connect.submit_credentials(token, rid, HTTP_API_KEY, config)
        assert r.status_code == 400
        assert API_KEY not in r.get_data(as_text=True)
    r = connect.client.post("/v1/apps", headers=connect.auth, json={"name": API_KEY, "hostname": API_KEY})
    assert r.status_code == 400 and API_KEY not in r.get_data(as_text=True)
    r = connect.client.get("/v1/apps", headers={"Authorization": f"Bearer ak_{API_KEY}"})
    assert r.status_code == 401 and API_KEY not in r.get_data(as_text=True)


def test_gunicorn_logs_no_token_or_secret(connect, app_with_key, tmp_path):
    """Through the production entry point: gunicorn's log gets our JSON access lines, without secrets."""
    cfg = dict(connect.app.config["CONNECT"], log_level="DEBUG")
    with GunicornServer(cfg, str(tmp_path / "gunicorn.log")) as server:
        status, headers, body = server.request("POST", "/v1/connect/tokens", b'{"user_id": "carol"}',
                                               {"Host": app_with_key["hostname"], "Content-Type": "application/json"})
        assert status == 201 and headers["Cache-Control"] == "no-store"
        token = json.loads(body)["token"]
        status, _, _ = server.request("GET", f"/connect?token={token}", headers={"Host": "connect.test"})
        assert status in (302, 303)
        rid = connect.requirement_id(app_with_key, "helpdesk")
        status, _, _ = server.request(
            "POST", f"/v1/connect/requirements/{rid}/credentials",
            json.dumps({"type": HTTP_API_KEY, "config": {"url": "https://h.example", "api_key": API_KEY}}).encode(),
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Host": "connect.test"})
        assert status == 201
        status, _, _ = server.request("GET", "/v1/connect/oauth2/callback/ccfg_x"
                                      "?state=STATE_SECRET_1&code=CODE_SECRET_1",
                                      headers={"Host": "connect.test"})
        assert status >= 400
    log = server.log()
    assert '"path": "/connect"' in log  # the access log is there, with the path only
    for secret in (token, API_KEY, "STATE_SECRET_1", "CODE_SECRET_1", connect.access_key):
        assert secret not in log


def test_token_bearing_responses_are_not_cached(connect, server):
    """Every answer that carries a token, a state, a signed URL or a secret says ``Cache-Control: no-store``."""
    app = connect.create_app_with_requirements(API_KEY_ONLY + [
        {"key": "account", "type": "connection", "title": "Account",
         "spec": {"type": "connection", "data": {"type": OAUTH2}}}], return_urls=[RETURN])
    client_id = f"client-{uuid.uuid4().hex[:8]}"
    r = connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "custom", "mode": "OAUTH", "connector_name": "oauth2", "oauth_url": server.authorize_url,
        "oauth_token_url": server.token_url, "oauth_client_id": client_id, "oauth_client_secret": "s3cret",
        "oauth_grant_type": "authorization_code"})
    cred = r.get_json()
    server.add_client(client_id, "s3cret", [cred["redirect_uri"]])
    answers = {"credential create (signed redirect_url)": r,
               "credential read": connect.client.get(f"/v1/credentials/{cred['id']}", headers=connect.auth),
               "credential list": connect.client.get("/v1/credentials", headers=connect.auth)}
    r = connect.client.post("/v1/connect/tokens", json={"user_id": "dave"}, headers={"Host": app["hostname"]})
    answers["token"] = r
    token = r.get_json()["token"]
    answers["authorize"] = connect.client.post(
        f"/v1/connect/requirements/{connect.requirement_id(app, 'account')}/oauth2/authorize", headers=bearer(token))
    answers["initialise"] = connect.client.post(
        f"/v1/embed/{app['id']}/connector/oauth2/oauth2/initialise", headers=connect.auth,
        json={"authorizeUrl": server.authorize_url, "clientId": client_id,
              "credential": {"id": cred["id"], "organisationId": connect.org_id}})
    rid = connect.requirement_id(app, "helpdesk")
    connect.submit_credentials(token, rid, HTTP_API_KEY, {"url": "https://h.example", "api_key": API_KEY})
    listing = connect.client.get("/v1/connections", headers=connect.auth)
    conn_id = next(c["id"] for c in listing.get_json()["data"]
                   if c["customer_id"] == "dave" and c["status"] == "active")
    answers["connection read with secrets"] = connect.client.get(
        f"/v1/connections/{conn_id}", headers=connect.auth, query_string={"include_secrets": "true"})
    answers["connection list"] = listing
    answers["connection create (seed 002)"] = connect.client.post("/v1/connections", headers=connect.auth, json={
        "connector_config_id": cred["id"], "customer_id": "erin",
        "data": {"connector_name": "oauth2", "settings": {"oauth": {"credentials": {
            "access_token": "at-erin", "refresh_token": "rt-erin", "expires_in": 3600}}}}})
    for what, resp in answers.items():
        assert resp.status_code < 300, (what, resp.status_code, resp.get_json())
        assert resp.headers.get("Cache-Control") == "no-store", what
