"""The pipedream_account action connector, end to end against a local Pipedream Connect API."""
from __future__ import annotations

import datetime
import json
import threading
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import pytest
from itsdangerous import URLSafeTimedSerializer
from werkzeug.serving import make_server

from conftest import HTTP_API_KEY, SEED_REQUIREMENTS
from connect_service.db import database
from connect_service.models import AccountLookup, Connection, Credential
from connect_service.testing import make_config
from connect_plugins.pipedream import PipedreamSettings
from connect_service.account_context import user_ref as external_user_id
from tests.support.pipedream_server import PipedreamTestServer

PROJECT = "proj_abc123"
CLIENT_ID, CLIENT_SECRET = "pd_client_1", "pd_secret_do_not_leak"


class LiveServer:
    """Serves the connect app over real HTTP, so the fake platform can deliver webhooks itself."""

    def __init__(self):
        self.app = None
        self.server = make_server("127.0.0.1", 0, self, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def live_server():
    server = LiveServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def connect_config(tmp_path, request):
    cfg = make_config(tmp_path)
    if getattr(request, "param", None) == "live":
        cfg["public_url"] = request.getfixturevalue("live_server").url
    return cfg


@pytest.fixture
def pd():
    server = PipedreamTestServer().start()
    server.add_client(CLIENT_ID, CLIENT_SECRET)
    server.add_project(PROJECT)
    try:
        yield server
    finally:
        server.stop()
    assert server.errors == []


@contextmanager
def db(connect):
    with connect.app.app_context(), database.connection_context():
        yield


def create_credential(connect, pd, **overrides) -> str:
    """A pipedream Credential row, the way POST /v1/credentials stores one."""
    settings = overrides.pop("settings", {"project_id": PROJECT, "environment": "production",
                                          "api_base_url": pd.url})
    client_id = overrides.pop("client_id", CLIENT_ID)
    secret = overrides.pop("client_secret", CLIENT_SECRET)
    with db(connect):
        cred = Credential(org=connect.org_id, name="Pipedream", connector_name="pipedream",
                          oauth_client_id=client_id, oauth_grant_type="client_credentials",
                          settings=settings, **{"read_access": "ORGANIZATION", **overrides})
        cred.oauth_client_secret_encrypted = connect.app.extensions["connect_keyring"].encrypt_json(
            secret, "credential", "oauth_client_secret", cred.id)
        cred.save(force_insert=True)
        return cred.id


@pytest.fixture
def seed_app(connect, pd):
    """Seed 001's app (Gmail via Pipedream + a helpdesk key) with a pipedream credential."""
    app = connect.create_app_with_requirements(SEED_REQUIREMENTS, return_urls=["https://app.example.com/done"])
    create_credential(connect, pd)
    return app


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def link(connect, token, rid, **kw):
    return connect.client.post(f"/v1/connect/requirements/{rid}/accounts", headers=bearer(token), **kw)


def deliver_into(connect):
    """deliver(url, payload) posting the platform's webhook into the Flask test client."""
    def deliver(url, payload):
        parts = urlsplit(url)
        return connect.client.post(parts.path, data=json.dumps(payload), content_type="application/json",
                                   base_url=f"{parts.scheme}://{parts.netloc}")
    return deliver


def webhook_path(pd):
    return urlsplit(pd.connect_tokens[-1]["webhook_uri"]).path


def rows(connect, **where):
    with db(connect):
        query = Connection.select().where(Connection.connector_name == "pipedream")
        for key, value in where.items():
            query = query.where(getattr(Connection, key) == value)
        return list(query.order_by(Connection.created_at))


def expire_lookups(connect):
    """Pretend the last account lookup was long ago (instead of waiting a minute)."""
    with db(connect):
        AccountLookup.update(checked_at=datetime.datetime(2000, 1, 1)).execute()


# --- settings schema ------------------------------------------------------------------------------

def test_settings_schema_defaults_and_errors():
    loaded = PipedreamSettings().load({"project_id": "proj_abc123"})
    assert loaded == {"project_id": "proj_abc123", "environment": "production",
                      "api_base_url": "https://api.pipedream.com"}
    assert PipedreamSettings().load({"project_id": "proj_x1", "environment": "development",
                                     "api_base_url": "http://127.0.0.1:9999/"})["api_base_url"] == \
        "http://127.0.0.1:9999"
    errors = PipedreamSettings().validate({"project_id": "abc", "environment": "staging",
                                           "api_base_url": "ftp://api.example.com", "extra": 1})
    assert set(errors) == {"project_id", "environment", "api_base_url", "extra"}
    assert PipedreamSettings().validate({}) == {"project_id": ["Missing data for required field."]}
    assert "api_base_url" in PipedreamSettings().validate(
        {"project_id": "proj_a", "api_base_url": "https://u:p@api.example.com"})


def test_listed_as_action_account_type(connect):
    r = connect.client.get("/v1/connection-types", headers=connect.auth)
    assert r.status_code == 200
    entry = next(t for t in r.get_json()["data"] if t["name"] == "pipedream_account")
    assert entry["auth"] == "action_account"
    assert entry["connector_name"] == "pipedream"


# --- the link -----------------------------------------------------------------------------------

def test_link_creates_platform_token(connect, pd, seed_app):
    token = connect.token(seed_app, "user-1")
    rid = connect.requirement_id(seed_app, "gmail")
    r = link(connect, token, rid)
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert set(body) == {"connect_link_url", "expires_at"}
    assert r.headers["Cache-Control"] == "no-store"
    query = parse_qs(urlsplit(body["connect_link_url"]).query)
    assert query["app"] == ["gmail"]
    assert query["token"] == [pd.connect_tokens[-1]["token"]]
    assert body["expires_at"].endswith("Z") and "T" in body["expires_at"]

    sent = pd.connect_token_requests[-1]
    assert sent["project_id"] == PROJECT
    assert sent["headers"]["X-Pd-Environment"] == "production"
    assert sent["headers"]["Authorization"].startswith("Bearer pd_at_")
    payload = sent["json"]
    assert payload["external_user_id"] == external_user_id(seed_app["id"], "user-1")
    assert "user-1" not in payload["external_user_id"] and len(payload["external_user_id"]) <= 250
    assert payload["success_redirect_uri"] == "http://connect.test/connect?status=success"
    assert payload["error_redirect_uri"] == "http://connect.test/connect?status=error"
    assert payload["webhook_uri"].startswith("http://connect.test/v1/connect/webhooks/pipedream/")
    for uri in (payload["success_redirect_uri"], payload["error_redirect_uri"], payload["webhook_uri"]):
        assert token not in uri
    assert pd.oauth_requests[-1]["json"] == {"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                             "client_secret": CLIENT_SECRET}
    assert pd.oauth_requests[-1]["content_type"] == "application/json"


def test_external_user_id_stable_per_app_and_user(connect, pd, seed_app):
    other_app = connect.create_app_with_requirements(SEED_REQUIREMENTS)
    rid = connect.requirement_id(seed_app, "gmail")
    for _ in range(2):
        assert link(connect, connect.token(seed_app, "user-1"), rid).status_code == 201
    assert link(connect, connect.token(seed_app, "user-2"), rid).status_code == 201
    assert link(connect, connect.token(other_app, "user-1"),
                connect.requirement_id(other_app, "gmail")).status_code == 201
    ids = [r["json"]["external_user_id"] for r in pd.connect_token_requests]
    assert ids[0] == ids[1]
    assert len({ids[0], ids[2], ids[3]}) == 3


def test_return_to_must_be_allow_listed(connect, pd, seed_app):
    token = connect.token(seed_app, "user-1")
    rid = connect.requirement_id(seed_app, "gmail")
    r = link(connect, token, rid, query_string={"return_to": "https://evil.example.com/"})
    assert r.status_code == 400
    assert r.get_json()["error"]["details"] == {"return_to": "must exactly match one of the app's return_urls"}
    assert pd.connect_token_requests == []
    r = link(connect, token, rid, query_string={"return_to": "https://app.example.com/done"})
    assert r.status_code == 201
    assert pd.connect_token_requests[-1]["json"]["success_redirect_uri"] == \
        "https://app.example.com/done?status=success"


def test_api_token_cached_on_credential_and_reused(connect, pd, seed_app):
    token = connect.token(seed_app, "user-1")
    rid = connect.requirement_id(seed_app, "gmail")
    for _ in range(3):
        assert link(connect, token, rid).status_code == 201
    assert pd.oauth_calls() == 1
    access_token = pd.connect_token_requests[-1]["headers"]["Authorization"].split()[1]
    with db(connect):
        cred = Credential.get(Credential.connector_name == "pipedream")
        assert cred.secret_state_encrypted.startswith("v1:")
        assert access_token not in cred.secret_state_encrypted
        assert CLIENT_SECRET not in json.dumps(cred.__data__, default=str)
        keyring = connect.app.extensions["connect_keyring"]
        state = keyring.decrypt_json(cred.secret_state_encrypted, "credential", "secret_state", cred.id)
        assert state["access_token"] == access_token
        # bound to its row: copied to another credential it does not decrypt
        from connect_service.crypto import DecryptionError
        with pytest.raises(DecryptionError):
            keyring.decrypt_json(cred.secret_state_encrypted, "credential", "secret_state", "ccfg_other")
        assert Connection.select().count() == 0  # the platform token is never a connection

        # an expired cached token is replaced
        state["expires_at"] = "2000-01-01T00:00:00Z"
        Credential.update(secret_state_encrypted=keyring.encrypt_json(
            state, "credential", "secret_state", cred.id)).where(Credential.id == cred.id).execute()
    assert link(connect, token, rid).status_code == 201
    assert pd.oauth_calls() == 2


def test_cached_api_token_is_bound_to_the_client_and_settings(connect, pd, seed_app):
    """The facade's token cache misses once the credential's client id or settings change."""
    token = connect.token(seed_app, "user-1")
    rid = connect.requirement_id(seed_app, "gmail")
    assert link(connect, token, rid).status_code == 201
    with db(connect):
        cred_id = Credential.get(Credential.connector_name == "pipedream").id
    r = connect.client.patch(f"/v1/credentials/{cred_id}", headers=connect.auth, json={
        "settings": {"project_id": PROJECT, "environment": "development", "api_base_url": pd.url}})
    assert r.status_code == 200, r.get_json()
    assert link(connect, token, rid).status_code == 201
    assert pd.oauth_calls() == 2
    assert link(connect, token, rid).status_code == 201
    assert pd.oauth_calls() == 2
    pd.add_client("pd_client_2", "second-secret")
    r = connect.client.patch(f"/v1/credentials/{cred_id}", headers=connect.auth,
                             json={"oauth_client_id": "pd_client_2", "oauth_client_secret": "second-secret"})
    assert r.status_code == 200, r.get_json()
    assert link(connect, token, rid).status_code == 201
    assert pd.oauth_calls() == 3 and pd.oauth_requests[-1]["json"]["client_id"] == "pd_client_2"


def test_revoked_api_token_is_replaced_once(connect, pd, seed_app):
    token = connect.token(seed_app, "user-1")
    rid = connect.requirement_id(seed_app, "gmail")
    assert link(connect, token, rid).status_code == 201
    pd.revoke_access_tokens()
    assert link(connect, token, rid).status_code == 201
    assert pd.oauth_calls() == 2


@pytest.mark.parametrize("breakage", ["down", "create_token_500", "bad_client_secret", "oauth_500"])
def test_platform_failure_is_bad_gateway(connect, pd, seed_app, breakage):
    if breakage == "down":
        pd.down = True
    elif breakage == "create_token_500":
        pd.fail["create_token"] = 500
    elif breakage == "oauth_500":
        pd.fail["oauth_token"] = 500
    else:
        pd.clients[CLIENT_ID] = "rotated-elsewhere"
    r = link(connect, connect.token(seed_app, "user-1"), connect.requirement_id(seed_app, "gmail"))
    assert r.status_code == 502, r.get_json()
    error = r.get_json()["error"]
    assert error["code"] == "bad_gateway" and error["message"] == "Bad Gateway"
    assert set(error["details"]) == {"platform"}
    assert CLIENT_SECRET not in r.get_data(as_text=True)
    assert "pd_at_" not in r.get_data(as_text=True)


def test_unreachable_platform_is_bad_gateway(connect, pd, seed_app):
    pd.stop()
    r = link(connect, connect.token(seed_app, "user-1"), connect.requirement_id(seed_app, "gmail"))
    assert r.status_code == 502
    assert "could not reach Pipedream" in r.get_json()["error"]["details"]["platform"]


def test_link_errors(connect, pd, seed_app):
    token = connect.token(seed_app, "user-1")
    gmail = connect.requirement_id(seed_app, "gmail")
    helpdesk = connect.requirement_id(seed_app, "helpdesk")
    assert link(connect, token, "00000000-0000-0000-0000-000000000000").status_code == 404
    r = connect.client.post(f"/v1/connect/requirements/{gmail}/accounts", headers=connect.auth)
    assert r.status_code == 401
    assert connect.client.post(f"/v1/connect/requirements/{gmail}/accounts").status_code == 401
    r = link(connect, token, helpdesk)
    assert r.status_code == 400 and "input" in r.get_json()["error"]["details"]
    # another app's requirement is not found for this token
    other = connect.create_app_with_requirements(SEED_REQUIREMENTS)
    assert link(connect, token, connect.requirement_id(other, "gmail")).status_code == 404
    # the credential API refuses pipedream on /credentials
    r = connect.submit_credentials(token, gmail, "pipedream_account", {"x": 1})
    assert r.status_code == 400
    assert pd.connect_token_requests == []


def test_no_credential_is_bad_request(connect, pd):
    app = connect.create_app_with_requirements(SEED_REQUIREMENTS)
    r = link(connect, connect.token(app, "user-1"), connect.requirement_id(app, "gmail"))
    assert r.status_code == 400  # the end user reads that the setup is incomplete; the log says why (issue 12)
    assert "setup is incomplete" in r.get_json()["error"]["details"]["requirement"]


def test_credential_selection(connect, pd):
    app = connect.create_app_with_requirements(SEED_REQUIREMENTS)
    create_credential(connect, pd)
    create_credential(connect, pd, settings={"project_id": "proj_second", "api_base_url": pd.url})
    token = connect.token(app, "user-1")
    rid = connect.requirement_id(app, "gmail")
    r = link(connect, token, rid)
    assert r.status_code == 400 and "setup is incomplete" in r.get_json()["error"]["details"]["requirement"]
    # the app's own credential wins over organization-wide ones
    create_credential(connect, pd, read_access="APP", app=app["id"],
                      settings={"project_id": PROJECT, "environment": "development", "api_base_url": pd.url})
    assert link(connect, token, rid).status_code == 201
    assert pd.connect_token_requests[-1]["headers"]["X-Pd-Environment"] == "development"


# --- webhook -----------------------------------------------------------------------------------

def test_webhook_links_account(connect, pd, seed_app, caplog):
    token = connect.token(seed_app, "user-1")
    gmail = connect.requirement_id(seed_app, "gmail")
    assert link(connect, token, gmail).status_code == 201
    signed = webhook_path(pd).rsplit("/", 1)[1]
    caplog.clear()
    with caplog.at_level("INFO", logger="connect_service"):
        response = pd.complete_link(pd.connect_tokens[-1]["token"], "gmail", deliver=deliver_into(connect))
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"message": "recorded"}
    # the signed value stays out of the access log, like every token
    paths = [r.fields["path"] for r in caplog.records if r.name == "connect_service.access"]
    assert paths == ["/v1/connect/webhooks/pipedream/<signed>"]
    assert not any(signed in r.getMessage() or signed in json.dumps(getattr(r, "fields", {}))
                   for r in caplog.records)
    account = pd.webhook_deliveries[-1]["payload"]["account"]
    # confirmed with the platform before it counted
    assert any(r["path"].endswith(f"/accounts/{account['id']}") for r in pd.account_requests)

    [row] = rows(connect)
    assert (row.app_id, row.customer_id, row.type, row.integration_id, row.account_key, row.requirement_id,
            row.status) == (seed_app["id"], "user-1", "pipedream_account", "pipedream_account", "gmail", None,
                            "active")
    with db(connect):
        from connect_service.connections import read_settings
        settings = read_settings(row)
    assert settings == {"account_id": account["id"], "app_slug": "gmail", "healthy": True, "dead": False,
                        "external_user_id": external_user_id(seed_app["id"], "user-1"),
                        "project_id": PROJECT, "environment": "production"}
    assert [c["connection"]["id"] for c in connect.hooks.of("connection_activated")] == [row.id]

    statuses = connect.statuses(token)
    assert statuses[gmail] == "completed"
    assert statuses[connect.requirement_id(seed_app, "helpdesk")] == "pending"
    # another user of the app is not completed by it
    assert connect.statuses(connect.token(seed_app, "user-2"))[gmail] == "pending"

    # a repeated delivery changes nothing
    r = deliver_into(connect)(pd.webhook_deliveries[-1]["uri"], pd.webhook_deliveries[-1]["payload"])
    assert r.status_code == 200
    assert len(rows(connect)) == 1 and len(connect.hooks.of("connection_activated")) == 1


def test_linked_account_visible_to_backend(connect, pd, seed_app):
    token = connect.token(seed_app, "user-1")
    assert link(connect, token, connect.requirement_id(seed_app, "gmail")).status_code == 201
    pd.complete_link(pd.connect_tokens[-1]["token"], "gmail", name="jane@example.com",
                     deliver=deliver_into(connect))
    r = connect.client.get("/v1/connections", headers=connect.auth,
                           query_string={"customer_id": "user-1", "connector_name": "pipedream"})
    assert r.status_code == 200, r.get_json()
    [conn] = r.get_json()["data"]
    assert conn["integration_id"] == "pipedream_account"
    assert conn["connector_name"] == "pipedream"
    assert conn["app_id"] == seed_app["id"]
    assert conn["display_name"] == "jane@example.com"
    assert conn["settings"]["account_id"].startswith("apn_")
    assert conn["settings"]["app_slug"] == "gmail"
    body = r.get_data(as_text=True)
    assert CLIENT_SECRET not in body and "pd_at_" not in body
    r = connect.client.get(f"/v1/connections/{conn['id']}", headers=connect.auth,
                           query_string={"include_secrets": "true"})
    assert r.status_code == 200
    assert r.get_json()["settings"]["account_id"] == conn["settings"]["account_id"]
    assert "pd_at_" not in r.get_data(as_text=True)


def test_delete_connection_deletes_platform_account(connect, pd, seed_app):
    token = connect.token(seed_app, "user-1")
    gmail = connect.requirement_id(seed_app, "gmail")
    assert link(connect, token, gmail).status_code == 201
    pd.complete_link(pd.connect_tokens[-1]["token"], "gmail", deliver=deliver_into(connect))
    [row] = rows(connect)
    assert len(pd.accounts) == 1
    r = connect.client.delete(f"/v1/connections/{row.id}", headers=connect.auth)
    assert r.status_code == 204
    assert connect.hooks.of("connection_revoked")[-1]["connection"]["id"] == row.id
    assert pd.accounts == {}
    assert pd.account_calls("DELETE") == 1
    assert rows(connect) == []
    expire_lookups(connect)
    assert connect.statuses(token)[gmail] == "pending"


@pytest.mark.parametrize("connect_config", ["live"], indirect=True)
def test_webhook_delivered_over_http(connect, pd, seed_app, live_server):
    live_server.app = connect.app
    token = connect.token(seed_app, "user-1")
    gmail = connect.requirement_id(seed_app, "gmail")
    assert link(connect, token, gmail).status_code == 201
    assert pd.connect_tokens[-1]["webhook_uri"].startswith(live_server.url + "/v1/connect/webhooks/pipedream/")
    response = pd.complete_link(pd.connect_tokens[-1]["token"], "gmail")  # a real POST by the platform
    assert response.status_code == 200, response.text
    assert connect.statuses(token)[gmail] == "completed"


def test_connection_error_webhook_changes_nothing(connect, pd, seed_app):
    token = connect.token(seed_app, "user-1")
    gmail = connect.requirement_id(seed_app, "gmail")
    assert link(connect, token, gmail).status_code == 201
    r = pd.fail_link(pd.connect_tokens[-1]["token"], deliver=deliver_into(connect))
    assert r.status_code == 200
    assert rows(connect) == [] and connect.hooks.of("connection_activated") == []
    assert connect.statuses(token)[gmail] == "pending"


TEST_KEY = "test-secret-key-" + "x" * 32


def _sign(value, key: str = TEST_KEY) -> str:
    return URLSafeTimedSerializer(key, salt="connect-webhook").dumps(value)


def _ref(connect, claims: dict, connector: str = "pipedream") -> str:
    """An encrypted webhook reference, as the service seals one."""
    return connect.app.extensions["connect_keyring"].encrypt_json(claims, "webhook", "ref", connector)


def _payload_of(signed: str) -> str:
    """What anyone holding the URL can read of a signed value: its (base64, maybe zlib) payload."""
    import base64
    import zlib

    body = signed.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return (zlib.decompress(raw) if signed.startswith(".") else raw).decode()


def test_webhook_url_names_neither_app_nor_user(connect, pd, seed_app):
    """The platform sees the webhook URL: it must not learn the app id or the end user's id (an email)."""
    user = "jane.doe@example.com"
    gmail = connect.requirement_id(seed_app, "gmail")
    assert link(connect, connect.token(seed_app, user), gmail).status_code == 201
    payload = pd.connect_token_requests[-1]["json"]
    uri = payload["webhook_uri"]
    signed = uri.rsplit("/", 1)[1]
    readable = _payload_of(signed)
    assert readable.startswith('"v1:')  # an encrypted reference, nothing else
    for secret in (user, "jane", seed_app["id"], gmail, "user_id"):
        assert secret not in uri and secret not in readable
    assert all(user not in str(v) for v in payload.values())
    # and the reference still completes exactly this user's requirement
    pd.complete_link(pd.connect_tokens[-1]["token"], "gmail", deliver=deliver_into(connect))
    assert rows(connect)[0].customer_id == user
    assert connect.statuses(connect.token(seed_app, user))[gmail] == "completed"


def test_webhook_refuses_missing_forged_and_expired_values(connect, pd, seed_app, monkeypatch):
    token = connect.token(seed_app, "user-1")
    gmail = connect.requirement_id(seed_app, "gmail")
    assert link(connect, token, gmail).status_code == 201
    # the account exists on the platform but the delivery is not ours
    account = pd.add_account(PROJECT, "production", external_user_id(seed_app["id"], "user-1"), "gmail")
    payload = {"event": "CONNECTION_SUCCESS", "connect_token": "ctok_x", "environment": "production",
               "account": account}
    good = webhook_path(pd)
    signed = good.rsplit("/", 1)[1]
    claims = {"a": seed_app["id"], "u": "user-1", "r": gmail}
    with db(connect):
        ref = _ref(connect, claims)
        other_connector_ref = _ref(connect, claims, connector="zapier")

    tampered_ref = ref[:-4] + ("A" if ref[-4] != "A" else "B") + ref[-3:]  # still signed, no longer decrypts

    import itsdangerous.timed
    real_time = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real_time() - 6 * 3600)
    expired = _sign(ref)
    monkeypatch.undo()

    attempts = {
        "missing": "/v1/connect/webhooks/pipedream",
        "missing_slash": "/v1/connect/webhooks/pipedream/",
        "tampered": good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
        "other_key": f"/v1/connect/webhooks/pipedream/{_sign(ref, 'another-secret-key-' + 'y' * 32)}",
        "other_salt": "/v1/connect/webhooks/pipedream/" + URLSafeTimedSerializer(
            TEST_KEY, salt="something-else").dumps(ref),
        "other_connector": f"/v1/connect/webhooks/pipedream/{_sign(other_connector_ref)}",
        "expired": f"/v1/connect/webhooks/pipedream/{expired}",
        "garbage": "/v1/connect/webhooks/pipedream/not-a-signed-value",
        # the old format, readable claims signed with the right key, is not a reference
        "plain_claims": f"/v1/connect/webhooks/pipedream/{_sign(dict(claims, c='pipedream'))}",
        "tampered_ref": f"/v1/connect/webhooks/pipedream/{_sign(tampered_ref)}",
        "not_a_ref": f"/v1/connect/webhooks/pipedream/{_sign(['v1', ref])}",
    }
    for name, path in attempts.items():
        r = connect.client.post(path, json=payload, base_url="http://connect.test")
        assert r.status_code == 401, (name, r.status_code)
        assert r.get_json()["error"]["code"] == "unauthorized"
        assert signed not in r.get_data(as_text=True)
    assert connect.client.post(f"/v1/connect/webhooks/zapier/{signed}", json=payload,
                               base_url="http://connect.test").status_code == 404
    # the signed value is judged before the body: a caller without one learns nothing about body rules
    for body in ("", "not json", "[]"):
        r = connect.client.post(attempts["garbage"], data=body, content_type="application/json",
                                base_url="http://connect.test")
        assert r.status_code == 401, (body, r.get_json())
    assert rows(connect) == []
    assert pd.account_calls() == 0
    # the genuine value works, and keys listed in secret_key_fallbacks still verify after a rotation
    connect.app.config["CONNECT"]["secret_key_fallbacks"] = ["old-secret-key-" + "z" * 32]
    rotated = _sign(ref, "old-secret-key-" + "z" * 32)
    r = connect.client.post(f"/v1/connect/webhooks/pipedream/{rotated}", json=payload,
                            base_url="http://connect.test")
    assert r.status_code == 200, r.get_json()
    assert len(rows(connect)) == 1


def test_webhook_cannot_claim_someone_elses_account(connect, pd, seed_app):
    token = connect.token(seed_app, "user-1")
    gmail = connect.requirement_id(seed_app, "gmail")
    assert link(connect, token, gmail).status_code == 201
    path = webhook_path(pd)
    victim = pd.add_account(PROJECT, "production", external_user_id(seed_app["id"], "user-2"), "gmail")
    slack = pd.add_account(PROJECT, "production", external_user_id(seed_app["id"], "user-1"), "slack")

    def post(account):
        return connect.client.post(path, base_url="http://connect.test", json={
            "event": "CONNECTION_SUCCESS", "connect_token": "ctok_x", "environment": "production",
            "account": account})

    r = post(victim)
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {
        "account.id": "is not an account of this user"}
    r = post(slack)
    assert r.status_code == 400 and "account.app" in r.get_json()["error"]["details"]
    r = post(dict(victim, id="apn_doesnotexist"))
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {
        "account.id": "is not an account on Pipedream"}
    r = post(None)
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {"account.id": "is required"}
    r = connect.client.post(path, base_url="http://connect.test", json={"event": "SOMETHING"})
    assert r.status_code == 400 and "event" in r.get_json()["error"]["details"]
    r = connect.client.post(path, base_url="http://connect.test", data="")
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {"input": "cannot be blank"}
    assert rows(connect) == []


def test_webhook_when_platform_cannot_confirm(connect, pd, seed_app):
    token = connect.token(seed_app, "user-1")
    gmail = connect.requirement_id(seed_app, "gmail")
    assert link(connect, token, gmail).status_code == 201
    pd.fail["get_account"] = 503
    r = pd.complete_link(pd.connect_tokens[-1]["token"], "gmail", deliver=deliver_into(connect))
    assert r.status_code == 502
    assert rows(connect) == []
    # the platform retries the delivery later
    pd.fail.clear()
    delivery = pd.webhook_deliveries[-1]
    assert deliver_into(connect)(delivery["uri"], delivery["payload"]).status_code == 200
    assert len(rows(connect)) == 1


# --- lookups on statuses -------------------------------------------------------------------------

def test_statuses_look_accounts_up_throttled(connect, pd, seed_app):
    token = connect.token(seed_app, "user-1")
    gmail = connect.requirement_id(seed_app, "gmail")
    user = external_user_id(seed_app["id"], "user-1")
    assert connect.statuses(token)[gmail] == "pending"
    assert pd.account_calls("GET") == 1
    query = pd.account_requests[-1]["args"]
    # the filter the list-accounts reference names: app_id, "the app slug or ID to filter accounts by"
    assert (query["external_user_id"], query["app_id"]) == (user, "gmail")
    assert "app" not in query

    # linked without a webhook (e.g. the webhook was lost): found at the next lookup, not before
    account = pd.add_account(PROJECT, "production", user, "gmail")
    pd.add_account(PROJECT, "production", user, "slack")
    assert connect.statuses(token)[gmail] == "pending"
    assert pd.account_calls("GET") == 1  # throttled: at most once a minute per user+requirement
    expire_lookups(connect)
    assert connect.statuses(token)[gmail] == "completed"
    assert pd.account_calls("GET") == 2
    [row] = rows(connect)
    assert row.account_key == "gmail" and row.status == "active"

    # dead on the platform: pending again, connection in error, hook told
    pd.set_account(account["id"], dead=True, healthy=False)
    expire_lookups(connect)
    assert connect.statuses(token)[gmail] == "pending"
    [row] = rows(connect)
    assert row.status == "error" and "dead" in row.status_reason
    assert connect.hooks.of("connection_failed")[-1]["connection"]["id"] == row.id

    # reconnected: same row, active again
    pd.set_account(account["id"], dead=False, healthy=True)
    expire_lookups(connect)
    assert connect.statuses(token)[gmail] == "completed"
    assert [r.id for r in rows(connect)] == [row.id] and rows(connect)[0].status == "active"

    # gone from the platform
    pd.remove_account(account["id"])
    expire_lookups(connect)
    assert connect.statuses(token)[gmail] == "pending"
    [row] = rows(connect)
    assert row.status == "error" and "no longer exists" in row.status_reason


def test_starting_a_link_keeps_the_lookup_throttle(connect, pd, seed_app):
    """At most one platform lookup per user+requirement per minute, however often links are started."""
    token = connect.token(seed_app, "user-1")
    gmail = connect.requirement_id(seed_app, "gmail")
    assert connect.statuses(token)[gmail] == "pending"
    assert pd.account_calls("GET") == 1
    for _ in range(5):
        assert link(connect, token, gmail).status_code == 201
        assert connect.statuses(token)[gmail] == "pending"
    assert pd.account_calls("GET") == 1 and len(pd.connect_tokens) == 5
    # linked, but the webhook never arrives: the first lookup of the next minute finds the account
    pd.add_account(PROJECT, "production", external_user_id(seed_app["id"], "user-1"), "gmail")
    assert connect.statuses(token)[gmail] == "pending"
    assert pd.account_calls("GET") == 1
    expire_lookups(connect)
    assert connect.statuses(token)[gmail] == "completed"
    assert pd.account_calls("GET") == 2
    # the webhook, though, counts at once
    assert link(connect, token, gmail).status_code == 201
    pd.complete_link(pd.connect_tokens[-1]["token"], "gmail", name="second@example.com",
                     deliver=deliver_into(connect))
    assert len(rows(connect, status="active")) == 2


def test_lookup_keeps_only_the_requirements_app(connect, pd, seed_app):
    """A platform that ignores the app filter (or answers oddly) still completes nothing else."""
    user = external_user_id(seed_app["id"], "user-1")
    pd.app_filter = False
    slack = pd.add_account(PROJECT, "production", user, "slack")
    for malformed in ("gmail", {"name": "Gmail"}, ["gmail"]):  # not the documented app object
        odd = pd.add_account(PROJECT, "production", user, "gmail")
        pd.set_account(odd["id"], app=malformed)
    token = connect.token(seed_app, "user-1")
    gmail = connect.requirement_id(seed_app, "gmail")
    assert connect.statuses(token)[gmail] == "pending"
    assert rows(connect) == []
    assert pd.account_requests[-1]["args"]["app_id"] == "gmail"
    gmail_account = pd.add_account(PROJECT, "production", user, "gmail")
    expire_lookups(connect)
    assert connect.statuses(token)[gmail] == "completed"
    [row] = rows(connect)
    assert row.account_key == "gmail"
    with db(connect):
        from connect_service.connections import read_settings
        assert read_settings(row)["account_id"] == gmail_account["id"] != slack["id"]


def test_lookup_follows_pages(connect, pd, seed_app):
    user = external_user_id(seed_app["id"], "user-1")
    for n in range(3):
        pd.add_account(PROJECT, "production", user, "gmail", name=f"acct{n}")
    pd.max_page_size = 2  # the platform caps pages below the 100 we ask for
    token = connect.token(seed_app, "user-1")
    assert connect.statuses(token)[connect.requirement_id(seed_app, "gmail")] == "completed"
    assert len(rows(connect)) == 3
    assert pd.account_calls("GET") == 2
    assert "after" not in pd.account_requests[0]["args"]
    assert pd.account_requests[1]["args"]["after"] == sorted(pd.accounts)[1]


def test_statuses_survive_platform_outage(connect, pd, seed_app):
    token = connect.token(seed_app, "user-1")
    gmail = connect.requirement_id(seed_app, "gmail")
    helpdesk = connect.requirement_id(seed_app, "helpdesk")
    assert link(connect, token, gmail).status_code == 201
    pd.complete_link(pd.connect_tokens[-1]["token"], "gmail", deliver=deliver_into(connect))
    r = connect.submit_credentials(token, helpdesk, HTTP_API_KEY, {"url": "https://h.example.com", "api_key": "k"})
    assert r.status_code == 201
    for breakage in ("down", "list_500", "stopped"):
        expire_lookups(connect)
        if breakage == "down":
            pd.down = True
        elif breakage == "list_500":
            pd.down = False
            pd.fail["list_accounts"] = 500
        else:
            pd.stop()
        assert connect.statuses(token) == {gmail: "completed", helpdesk: "completed"}
    assert rows(connect)[0].status == "active"


def test_statuses_without_credential_answer(connect, pd):
    app = connect.create_app_with_requirements(SEED_REQUIREMENTS)
    token = connect.token(app, "user-1")
    assert connect.statuses(token)[connect.requirement_id(app, "gmail")] == "pending"
    assert pd.account_calls() == 0


# --- the credential, through the management API --------------------------------------------------

def test_credential_created_through_the_api(connect, pd):
    app = connect.create_app_with_requirements(SEED_REQUIREMENTS)
    body = {"name": "Pipedream", "mode": "OAUTH", "connector_name": "pipedream", "oauth_client_id": CLIENT_ID,
            "oauth_client_secret": CLIENT_SECRET, "oauth_grant_type": "client_credentials",
            "settings": {"project_id": "not-a-project", "environment": "staging", "api_base_url": "ftp://x"}}
    r = connect.client.post("/v1/credentials", headers=connect.auth, json=body)
    assert r.status_code == 400
    assert set(r.get_json()["error"]["details"]) == {"settings.project_id", "settings.environment",
                                                      "settings.api_base_url"}
    body["settings"] = {"project_id": PROJECT, "environment": "development", "api_base_url": pd.url + "/"}
    r = connect.client.post("/v1/credentials", headers=connect.auth, json=body)
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["settings"] == {"project_id": PROJECT, "environment": "development",
                                        "api_base_url": pd.url}
    assert CLIENT_SECRET not in r.get_data(as_text=True)
    assert pd.oauth_calls() == 0  # the platform token is fetched when first needed, never as a connection
    assert rows(connect) == []

    token = connect.token(app, "user-1")
    gmail = connect.requirement_id(app, "gmail")
    assert link(connect, token, gmail).status_code == 201
    assert pd.oauth_requests[-1]["json"]["client_secret"] == CLIENT_SECRET
    assert pd.connect_token_requests[-1]["headers"]["X-Pd-Environment"] == "development"
    pd.complete_link(pd.connect_tokens[-1]["token"], "gmail", deliver=deliver_into(connect))
    assert connect.statuses(token)[gmail] == "completed"


# --- the hosted page ------------------------------------------------------------------------------

def test_hosted_page_links_through_the_platform_only(connect, pd, seed_app):
    import re
    from urllib.parse import urlencode

    client = connect.app.test_client()
    token = connect.token(seed_app, "user-1")
    r = client.get(f"/connect?token={token}", base_url="http://connect.test")
    path = r.headers["Location"]
    r = client.get(path, base_url="http://connect.test")
    assert r.status_code == 200
    csp = dict(d.strip().split(" ", 1) for d in r.headers["Content-Security-Policy"].split(";"))
    # Pipedream's link page and the configured platform (this test's local server), nothing else
    assert csp["form-action"] == f"'self' https://pipedream.com {pd.url}"
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', r.get_data(as_text=True)).group(1)
    gmail = connect.requirement_id(seed_app, "gmail")
    r = client.post(f"{path}/accounts/{gmail}", data={"csrf_token": csrf}, base_url="http://connect.test")
    assert r.status_code == 303
    assert r.headers["Location"].startswith(pd.url + "/_static/connect.html?")
    sent = pd.connect_token_requests[-1]["json"]
    back = f"http://connect.test{path}?{urlencode({'requirement_id': gmail})}"
    assert sent["success_redirect_uri"] == back + "&status=success"
    assert sent["error_redirect_uri"] == back + "&status=error"
    # linked: the webhook records it and the page it returns to shows it
    pd.complete_link(pd.connect_tokens[-1]["token"], "gmail", deliver=deliver_into(connect))
    html = client.get(urlsplit(sent["success_redirect_uri"]).path + "?" + urlsplit(
        sent["success_redirect_uri"]).query, base_url="http://connect.test").get_data(as_text=True)
    card = html[html.index(f'id="req-{gmail}"'):]
    card = card[:card.index("</section>")]
    assert ">Connected<" in card and "Linking Connect your Gmail account finished." in card


def test_page_form_action_without_a_credential_is_pipedream_only(connect, pd):
    app = connect.create_app_with_requirements(SEED_REQUIREMENTS)
    client = connect.app.test_client()
    r = client.get(f"/connect?token={connect.token(app, 'user-1')}", base_url="http://connect.test")
    r = client.get(r.headers["Location"], base_url="http://connect.test")
    assert "form-action 'self' https://pipedream.com;" in r.headers["Content-Security-Policy"]


# --- the public contract --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["plugins/pipedream.py", "plugins/pipedream_client.py",
                                  "tests/plugins/toolhub_accounts/src/toolhub_accounts/__init__.py"])
def test_action_account_plugins_import_only_public_names(path):
    """Both action-account plugins reach the core only through names ``connect_service`` exports."""
    import ast
    from pathlib import Path

    import connect_service

    tree = ast.parse((Path(__file__).resolve().parents[1] / path).read_text())
    imported: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported += [(node.module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            imported += [(alias.name, "") for alias in node.names]
    ours = [(module, name) for module, name in imported if module.split(".")[0] == "connect_service"]
    assert ours and all(module == "connect_service" and name in connect_service.__all__ for module, name in ours), ours
    assert not {module.split(".")[0] for module, _ in imported} & {"peewee", "flask", "playhouse", "werkzeug"}
