"""Token refresh rules (SPEC 6, issue 5), against the real Authlib test server and a real database.

The helpers at the top (plugin, credential, token issuing, connection seeding) are
shared with test_connections_api.py and test_refresh_concurrency.py.
"""
from __future__ import annotations

import datetime
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from connect_service import ConnectionType, OAuth2Provider, hookimpl
from connect_service.cli import cli
from connect_service.db import database
from connect_service.models import Connection, Credential, utcnow
from tests.support.oauth_server import OAuthTestServer

TYPE_NAME = "tests.connections.RefreshOAuth"
CONNECTOR = "test-oauth"
CLIENT_ID, CLIENT_SECRET = "svc-client", "svc-client-secret"
REDIRECT_URI = "http://connect.test/v1/connect/oauth2/callback"


def oauth_plugin(server: OAuthTestServer):
    """A plugin whose OAuth2 type talks to ``server`` (token URL from the credential, revoke URL declared)."""

    class RefreshOAuth(ConnectionType):
        name = TYPE_NAME
        title = "Refresh test OAuth"
        auth = "oauth2"
        connector_name = CONNECTOR
        provider = OAuth2Provider(revoke_url=server.revoke_url, default_token_lifetime=1800)

    class Plugin:
        @hookimpl
        def register_connection_types(self):
            return [RefreshOAuth]

    return Plugin()


@pytest.fixture
def oauth_server():
    server = OAuthTestServer().start()
    server.add_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
    server.auto_approve = True
    yield server
    server.stop()
    assert server.errors == []


@pytest.fixture
def connect_plugins(oauth_server):
    return [oauth_plugin(oauth_server)]


def issue_tokens(server: OAuthTestServer, scope: str = "read write offline_access") -> dict:
    """Run a real authorization-code flow at the test server; return its token response."""
    r = requests.get(server.authorize_url, params={
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI,
        "scope": scope, "state": "s" * 24}, allow_redirects=False, timeout=5)
    assert r.status_code == 302, r.text
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    r = requests.post(server.token_url, data={"grant_type": "authorization_code", "code": code,
                                              "redirect_uri": REDIRECT_URI},
                      auth=(CLIENT_ID, CLIENT_SECRET), timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def create_credential(flask_app, org_id: str, server: OAuthTestServer, grant_type: str = "authorization_code",
                      token_url: str | None = None) -> Credential:
    """An OAuth client registration (seed 003 fields) stored the way the credentials API stores it."""
    with flask_app.app_context(), database.connection_context():
        cred = Credential(org=org_id, name="Test OAuth", connector_name=CONNECTOR,
                          oauth_url=server.authorize_url, oauth_token_url=token_url or server.token_url,
                          oauth_client_id=CLIENT_ID, oauth_scope="read write", oauth_grant_type=grant_type,
                          token_endpoint_auth_method="client_secret_basic")
        cred.oauth_client_secret_encrypted = flask_app.extensions["connect_keyring"].encrypt_json(
            CLIENT_SECRET, "credential", "oauth_client_secret", cred.id)
        cred.save(force_insert=True)
        return cred


def create_oauth_connection(flask_app, org_id: str, credential: Credential, token: dict, *,
                            expires_at: datetime.datetime | None, **fields) -> str:
    """Store an OAuth connection with ``token`` exactly as the service stores one (seed 002 settings)."""
    from connect_service.connections import seal_settings

    with flask_app.app_context(), database.connection_context():
        now = utcnow()
        creds = {key: token.get(key) for key in ("access_token", "refresh_token", "scope", "token_type")}
        creds.update(expires_in=token.get("expires_in"), client_id=CLIENT_ID,
                     expires_at=expires_at.replace(microsecond=0).isoformat() + "Z" if expires_at else None)
        settings = {"oauth": {"credentials": creds, "created_at": now.isoformat() + "Z",
                              "updated_at": now.isoformat() + "Z", "last_fetched_at": None, "metadata": {}}}
        conn = Connection(org=org_id, type=TYPE_NAME, connector_name=CONNECTOR, integration_id=TYPE_NAME,
                          credential=credential.id, status="active", expires_at=expires_at,
                          customer_id=fields.pop("customer_id", "customer-1"), **fields)
        conn.settings_encrypted = seal_settings(conn, settings)
        conn.save(force_insert=True)
        return conn.id


def stored(app, conn_id: str) -> tuple[Connection, dict]:
    """The row and its decrypted OAuth credentials, read straight from the database."""
    from connect_service.connections import read_settings

    with app.app_context(), database.connection_context():
        conn = Connection.get_or_none(Connection.id == conn_id)
        if conn is None:
            return None, {}
        return conn, read_settings(conn).get("oauth", {}).get("credentials", {})


def past(seconds: int = 60) -> datetime.datetime:
    return utcnow() - datetime.timedelta(seconds=seconds)


def future(seconds: int = 3600) -> datetime.datetime:
    return utcnow() + datetime.timedelta(seconds=seconds)


@pytest.fixture
def credential(connect, oauth_server):
    return create_credential(connect.app, connect.org_id, oauth_server)


@pytest.fixture
def expired(connect, oauth_server, credential):
    """(connection id, original token) of a connection whose access token expired a minute ago."""
    token = issue_tokens(oauth_server)
    return create_oauth_connection(connect.app, connect.org_id, credential, token, expires_at=past()), token


def read_secrets(connect, conn_id: str, refresh: str | None = None):
    query = "include_secrets=true" + (f"&refresh={refresh}" if refresh else "")
    return connect.client.get(f"/v1/connections/{conn_id}?{query}", headers=connect.auth)


def access_token(response) -> str:
    return response.get_json()["settings"]["oauth"]["credentials"]["access_token"]


# --- refresh on read ------------------------------------------------------------------------

def test_expired_token_is_refreshed_and_rotated_refresh_token_saved(connect, oauth_server, expired):
    conn_id, old = expired
    r = read_secrets(connect, conn_id)
    assert r.status_code == 200, r.get_json()
    assert r.headers["Cache-Control"] == "no-store"
    creds = r.get_json()["settings"]["oauth"]["credentials"]
    assert creds["access_token"] != old["access_token"]
    assert oauth_server.token_calls("refresh_token") == 1
    assert oauth_server.token_is_active(creds["access_token"])

    row, saved = stored(connect.app, conn_id)
    issued = oauth_server.last_token(CLIENT_ID)
    # the rotated refresh token and the new access token landed in the same row write
    assert saved["access_token"] == issued.access_token == creds["access_token"]
    assert saved["refresh_token"] == issued.refresh_token != old["refresh_token"]
    assert oauth_server.refresh_token_is_active(saved["refresh_token"])
    assert not oauth_server.refresh_token_is_active(old["refresh_token"])
    assert row.refresh_generation == 1 and row.status == "active"
    assert row.refresh_lease_until is None and row.refresh_lease_owner is None
    assert row.expires_at > utcnow() + datetime.timedelta(seconds=3000)
    assert row.last_fetched_at is not None

    # now fresh: a second read makes no provider call and answers the same token
    r2 = read_secrets(connect, conn_id)
    assert access_token(r2) == creds["access_token"]
    assert oauth_server.token_calls("refresh_token") == 1


def test_token_response_without_refresh_token_keeps_the_old_one(connect, oauth_server, expired):
    conn_id, old = expired
    oauth_server.rotate_refresh_tokens = False  # the response carries no refresh_token
    r = read_secrets(connect, conn_id)
    assert r.status_code == 200, r.get_json()
    assert "refresh_token" not in oauth_server.token_requests[-1]["response"]
    _, saved = stored(connect.app, conn_id)
    assert saved["access_token"] == access_token(r) != old["access_token"]
    assert saved["refresh_token"] == old["refresh_token"]
    # and the kept refresh token still works for the next refresh
    r = read_secrets(connect, conn_id, refresh="force")
    assert r.status_code == 200
    assert oauth_server.token_requests[-1]["status"] == 200


def test_missing_expires_in_falls_back_to_jwt_exp(connect, oauth_server, expired):
    conn_id, _ = expired
    oauth_server.include_expires_in = False
    oauth_server.jwt_access_tokens = True
    oauth_server.access_token_lifetime = 900
    r = read_secrets(connect, conn_id)
    assert r.status_code == 200, r.get_json()
    claims = oauth_server.decode_jwt(access_token(r))
    row, _ = stored(connect.app, conn_id)
    exp = datetime.datetime.fromtimestamp(claims["exp"], datetime.timezone.utc).replace(tzinfo=None)
    assert row.expires_at.replace(microsecond=0) == exp


def test_missing_expires_in_without_jwt_uses_provider_default_never_never_expires(connect, oauth_server,
                                                                                   expired):
    conn_id, _ = expired
    oauth_server.include_expires_in = False
    before = utcnow()
    r = read_secrets(connect, conn_id)
    after = utcnow()
    assert r.status_code == 200, r.get_json()
    row, saved = stored(connect.app, conn_id)
    assert row.expires_at is not None and saved["expires_at"]
    lifetime = datetime.timedelta(seconds=1800)  # the plugin's default_token_lifetime
    assert before + lifetime - datetime.timedelta(seconds=2) <= row.expires_at <= after + lifetime \
        + datetime.timedelta(seconds=2)


def test_refresh_never_answers_the_stored_token(connect, oauth_server, expired):
    conn_id, old = expired
    r = read_secrets(connect, conn_id, refresh="never")
    assert r.status_code == 200
    assert access_token(r) == old["access_token"]
    assert oauth_server.token_calls() == 1  # only the authorization_code exchange of the fixture


def test_fresh_token_is_not_refreshed_but_force_does(connect, oauth_server, credential):
    token = issue_tokens(oauth_server)
    conn_id = create_oauth_connection(connect.app, connect.org_id, credential, token, expires_at=future())
    r = read_secrets(connect, conn_id)
    assert access_token(r) == token["access_token"]
    assert oauth_server.token_calls("refresh_token") == 0
    r = read_secrets(connect, conn_id, refresh="force")
    assert r.status_code == 200
    assert access_token(r) != token["access_token"]
    assert oauth_server.token_calls("refresh_token") == 1


def test_concurrent_forced_reads_merge_into_one_refresh(connect, oauth_server, credential):
    token = issue_tokens(oauth_server)
    conn_id = create_oauth_connection(connect.app, connect.org_id, credential, token, expires_at=future())
    oauth_server.token_delay = 0.4
    barrier = threading.Barrier(6)
    results = []

    def reader():
        client = connect.app.test_client()
        barrier.wait()
        results.append(client.get(f"/v1/connections/{conn_id}?include_secrets=true&refresh=force",
                                  headers=connect.auth))

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 6, [r.get_json() for r in results]
    assert oauth_server.token_calls("refresh_token") == 1
    assert len({access_token(r) for r in results}) == 1
    assert access_token(results[0]) != token["access_token"]


def test_invalid_grant_marks_error_and_requirement_is_pending_again(connect, oauth_server, credential):
    app = connect.create_app_with_requirements([{
        "key": "crm", "type": "connection", "title": "CRM",
        "spec": {"type": "connection", "data": {"type": TYPE_NAME}}}])
    rid = connect.requirement_id(app, "crm")
    token = issue_tokens(oauth_server)
    conn_id = create_oauth_connection(connect.app, connect.org_id, credential, token, expires_at=past(),
                                      app=app["id"], customer_id="user-7", requirement_id=rid)
    user_token = connect.token(app, "user-7")
    assert connect.statuses(user_token)[rid] == "completed"

    oauth_server.revoke_family(token["refresh_token"])  # the user disconnected us at the provider
    r = read_secrets(connect, conn_id)
    assert r.status_code == 502
    err = r.get_json()["error"]
    assert err["code"] == "bad_gateway"
    assert "invalid_grant" in err["details"]["refresh"]
    assert token["refresh_token"] not in r.get_data(as_text=True)

    row, saved = stored(connect.app, conn_id)
    assert row.status == "error" and "invalid_grant" in row.status_reason
    assert saved["refresh_token"] == token["refresh_token"]  # nothing overwritten
    assert row.refresh_lease_until is None
    assert connect.statuses(user_token)[rid] == "pending"
    failed = connect.hooks.of("connection_failed")
    assert len(failed) == 1 and failed[0]["connection"]["id"] == conn_id and "invalid_grant" in failed[0]["reason"]
    listed = connect.client.get(f"/v1/connections?status=error", headers=connect.auth).get_json()["data"]
    assert [c["id"] for c in listed] == [conn_id]
    # an error connection is not refreshed again on read
    r = read_secrets(connect, conn_id)
    assert r.status_code == 200 and r.get_json()["status"] == "error"
    assert oauth_server.token_calls("refresh_token") == 1


def test_invalid_grant_after_another_worker_won_returns_the_winners_token(connect, oauth_server, expired,
                                                                          monkeypatch):
    """Worker A's lease ran out mid-call; worker B refreshed; A's stale refresh token gets invalid_grant."""
    from connect_service import oauth, refresh

    conn_id, old = expired
    real = oauth.grants.request_refresh
    winner = {}

    def slow_worker_a(credential_row, refresh_token):
        if not winner:  # before A's request reaches the provider, B takes over the expired lease
            winner["pending"] = True
            Connection.update(refresh_lease_until=past(1)).where(Connection.id == conn_id).execute()
            winner["conn"] = refresh.refresh_connection(conn_id, force=True)
        return real(credential_row, refresh_token)

    monkeypatch.setattr(oauth.grants, "request_refresh", slow_worker_a)
    r = read_secrets(connect, conn_id)
    assert r.status_code == 200, r.get_json()
    assert oauth_server.token_calls("refresh_token") == 2
    assert [req["status"] for req in oauth_server.token_requests[-2:]] == [200, 400]
    assert oauth_server.token_requests[-1]["response"]["error"] == "invalid_grant"
    row, saved = stored(connect.app, conn_id)
    assert row.status == "active", row.status_reason
    assert access_token(r) == saved["access_token"] != old["access_token"]
    assert row.refresh_generation == 1


def test_invalid_grant_after_reauthorization_keeps_new_tokens(connect, oauth_server, expired, monkeypatch):
    """The end user re-authorized while a refresh was in flight: the stored refresh token changed."""
    from connect_service import oauth
    from connect_service.connections import read_settings, seal_settings

    conn_id, old = expired
    real = oauth.grants.request_refresh
    fresh = issue_tokens(oauth_server)

    def reauthorized_meanwhile(credential_row, refresh_token):
        conn = Connection.get_by_id(conn_id)
        settings = read_settings(conn)
        settings["oauth"]["credentials"].update(access_token=fresh["access_token"],
                                                refresh_token=fresh["refresh_token"])
        Connection.update(settings_encrypted=seal_settings(conn, settings), expires_at=future()).where(
            Connection.id == conn_id).execute()
        oauth_server.revoke(refresh_token)  # the old grant is gone at the provider
        return real(credential_row, refresh_token)

    monkeypatch.setattr(oauth.grants, "request_refresh", reauthorized_meanwhile)
    r = read_secrets(connect, conn_id)
    assert r.status_code == 200, r.get_json()
    assert access_token(r) == fresh["access_token"]
    row, _ = stored(connect.app, conn_id)
    assert row.status == "active"


def test_disabled_connection_is_never_refreshed(connect, oauth_server, expired):
    conn_id, old = expired
    r = connect.client.patch(f"/v1/connections/{conn_id}", json={"disabled": True}, headers=connect.auth)
    assert r.status_code == 200 and r.get_json()["disabled"] is True
    r = read_secrets(connect, conn_id)
    assert r.status_code == 200 and access_token(r) == old["access_token"]
    r = read_secrets(connect, conn_id, refresh="force")
    assert r.status_code == 409
    assert "disabled" in r.get_json()["error"]["details"]["refresh"]
    with connect.app.app_context():
        from connect_service.refresh_due import run_refresh_due

        assert run_refresh_due(echo=lambda line: None) == 0
    assert oauth_server.token_calls("refresh_token") == 0


@pytest.mark.parametrize("failure", ["down", "unreachable"])
def test_provider_down_is_502_and_connection_stays_active(connect, oauth_server, failure):
    if failure == "down":
        token_url = oauth_server.token_url
        oauth_server.down = True
    else:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            token_url = f"http://127.0.0.1:{s.getsockname()[1]}/token"
    cred = create_credential(connect.app, connect.org_id, oauth_server, token_url=token_url)
    token = issue_tokens(oauth_server) if failure == "unreachable" else {"access_token": "at-1",
                                                                          "refresh_token": "rt-1"}
    conn_id = create_oauth_connection(connect.app, connect.org_id, cred, token, expires_at=past())
    r = read_secrets(connect, conn_id)
    assert r.status_code == 502
    err = r.get_json()["error"]
    assert err["code"] == "bad_gateway"
    assert err["details"]["provider"] == CONNECTOR
    assert token_url.split("?")[0] in " ".join(err["details"].values())
    assert token["refresh_token"] not in r.get_data(as_text=True)
    row, saved = stored(connect.app, conn_id)
    assert row.status == "active" and row.refresh_lease_until is None
    assert saved["refresh_token"] == token["refresh_token"]


def test_provider_back_up_after_outage(connect, oauth_server, expired):
    conn_id, old = expired
    oauth_server.down = True
    assert read_secrets(connect, conn_id).status_code == 502
    oauth_server.down = False
    r = read_secrets(connect, conn_id)
    assert r.status_code == 200
    assert access_token(r) != old["access_token"]
    assert oauth_server.token_calls("refresh_token") == 2


def test_client_credentials_connection_is_renewed_by_requesting_a_new_token(connect, oauth_server):
    cred = create_credential(connect.app, connect.org_id, oauth_server, grant_type="client_credentials")
    r = requests.post(oauth_server.token_url, data={"grant_type": "client_credentials", "scope": "read"},
                      auth=(CLIENT_ID, CLIENT_SECRET), timeout=5)
    first = r.json()
    assert "refresh_token" not in first
    conn_id = create_oauth_connection(connect.app, connect.org_id, cred, first, expires_at=past(),
                                      customer_id=None)
    r = read_secrets(connect, conn_id)
    assert r.status_code == 200, r.get_json()
    new = access_token(r)
    assert new != first["access_token"] and oauth_server.token_is_active(new)
    assert oauth_server.token_calls("client_credentials") == 2
    assert oauth_server.token_calls("refresh_token") == 0
    row, _ = stored(connect.app, conn_id)
    assert row.expires_at > utcnow() and row.refresh_generation == 1


# --- connect-service refresh-due --------------------------------------------------------------

def run_cli(connect, *args):
    return connect.app.test_cli_runner().invoke(cli, ["refresh-due", *args])


def test_refresh_due_refreshes_due_connections_and_prints_summary(connect, oauth_server, credential):
    due = [create_oauth_connection(connect.app, connect.org_id, credential, issue_tokens(oauth_server),
                                   expires_at=past() if i % 2 else future(120)) for i in range(4)]
    later_token = issue_tokens(oauth_server)
    later = create_oauth_connection(connect.app, connect.org_id, credential, later_token, expires_at=future())
    result = run_cli(connect)
    assert result.exit_code == 0, result.output
    import json

    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"refreshed": 4, "failed": 0, "skipped": 0}
    assert "refresh-due: processed 4" in result.stderr
    for conn_id in due:
        row, _ = stored(connect.app, conn_id)
        assert row.refresh_generation == 1 and row.expires_at > future(3000)
    row, saved = stored(connect.app, later)
    assert row.refresh_generation == 0 and saved["access_token"] == later_token["access_token"]
    assert oauth_server.token_calls("refresh_token") == 4

    # a wider margin picks up the later one too
    result = run_cli(connect, "--margin", "7200", "--batch-size", "2")
    assert result.exit_code == 0
    assert json.loads(result.stdout.strip().splitlines()[-1])["refreshed"] == 5


def test_refresh_due_failure_exits_nonzero_and_counts(connect, oauth_server, credential):
    import json

    good = create_oauth_connection(connect.app, connect.org_id, credential, issue_tokens(oauth_server),
                                   expires_at=past())
    revoked_token = issue_tokens(oauth_server)
    bad = create_oauth_connection(connect.app, connect.org_id, credential, revoked_token, expires_at=past(30))
    oauth_server.revoke_family(revoked_token["refresh_token"])
    no_refresh = create_oauth_connection(connect.app, connect.org_id, credential,
                                         {"access_token": "legacy"}, expires_at=past())
    result = run_cli(connect)
    assert result.exit_code == 1
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"refreshed": 1, "failed": 1, "skipped": 1}
    assert f"{bad} failed" in result.stderr and "invalid_grant" in result.stderr
    assert revoked_token["refresh_token"] not in result.output
    assert stored(connect.app, good)[0].status == "active"
    assert stored(connect.app, bad)[0].status == "error"
    assert stored(connect.app, no_refresh)[0].status == "active"


def test_two_refresh_due_runners_in_parallel_do_not_double_refresh(connect, oauth_server, credential):
    ids = [create_oauth_connection(connect.app, connect.org_id, credential, issue_tokens(oauth_server),
                                   expires_at=past(i)) for i in range(6)]
    oauth_server.token_delay = 0.1
    oauth_server.reset_records()
    from connect_service.refresh_due import run_refresh_due

    outcomes = []
    barrier = threading.Barrier(2)

    def runner():
        with connect.app.app_context():
            barrier.wait()
            lines = []
            outcomes.append((run_refresh_due(batch_size=3, echo=lines.append), lines))

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [code for code, _ in outcomes] == [0, 0]
    assert oauth_server.token_calls("refresh_token") == 6
    assert all(req["status"] == 200 for req in oauth_server.token_requests)
    assert oauth_server.family_revocations == []
    for conn_id in ids:
        row, saved = stored(connect.app, conn_id)
        assert row.refresh_generation == 1 and row.status == "active"
        assert oauth_server.token_is_active(saved["access_token"])


# --- review findings: absurd expiries, provider quirks, races, scopes, slow providers ----------------

@pytest.mark.parametrize("expires_in", [10 ** 12, 1e30, "inf", "NaN"])
def test_absurd_expires_in_in_a_refresh_response_is_clamped_not_a_500(connect, oauth_server, expired,
                                                                      monkeypatch, expires_in):
    from connect_service.db import db_now
    from connect_service.oauth import MAX_TOKEN_LIFETIME_SECONDS

    conn_id, old = expired
    monkeypatch.setattr(oauth_server, "extra_token_fields", {"expires_in": expires_in})
    r = read_secrets(connect, conn_id)
    assert r.status_code == 200, r.get_json()
    assert access_token(r) != old["access_token"]
    row, saved = stored(connect.app, conn_id)
    with connect.app.app_context(), database.connection_context():
        now = db_now()
    if expires_in == "NaN":  # unusable: the plugin's default lifetime
        assert saved["expires_in"] == 1800
    else:
        assert saved["expires_in"] == MAX_TOKEN_LIFETIME_SECONDS
        assert now + datetime.timedelta(days=3600) < row.expires_at \
            <= now + datetime.timedelta(seconds=MAX_TOKEN_LIFETIME_SECONDS)


def test_token_settings_never_overflows(connect):
    import jwt as pyjwt

    from connect_service import OAuth2Provider, oauth

    now = datetime.datetime(2026, 1, 1)
    ten_years = now + datetime.timedelta(seconds=oauth.MAX_TOKEN_LIFETIME_SECONDS)
    cred = Credential(id="ccfg_t", org="o", connector_name="oauth2", oauth_client_id="cid")
    jwt_with = lambda exp: pyjwt.encode({"exp": exp}, "k" * 32, algorithm="HS256")  # noqa: E731
    cases = [({"access_token": "a", "expires_in": "inf"}, ten_years),
             ({"access_token": "a", "expires_in": 1e30}, ten_years),
             ({"access_token": "a", "expires_in": 10 ** 400}, ten_years),
             ({"access_token": jwt_with(10 ** 15)}, ten_years),
             ({"access_token": jwt_with(10 ** 30)}, ten_years),
             ({"access_token": jwt_with(10 ** 400)}, ten_years),
             ({"access_token": jwt_with(-10 ** 15)}, datetime.datetime(1970, 1, 1)),
             ({"access_token": jwt_with(1)}, datetime.datetime(1970, 1, 1, 0, 0, 1)),
             ({"access_token": "a", "expires_in": "nan"}, now + datetime.timedelta(seconds=3600)),
             ({"access_token": "a", "expires_in": True}, now + datetime.timedelta(seconds=3600))]
    with connect.app.app_context():
        for token, expected in cases:
            settings, expires_at = oauth.token_settings(token, previous=None, provider=OAuth2Provider(),
                                                        credential=cred, now=now)
            assert expires_at == expected, token
            assert settings["oauth"]["credentials"]["expires_in"] == max(0, int((expected - now).total_seconds()))


class _GitHubLikeTokenEndpoint:
    """Answers every token request like GitHub does for a dead refresh token: HTTP 200 with an error body."""

    def __init__(self):
        import http.server
        import json

        outer = self
        self.calls = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.calls += 1
                body = json.dumps({"error": "bad_refresh_token", "error_description":
                                   "The refresh token passed is incorrect or expired.",
                                   "error_uri": "https://docs.github.com/"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/login/oauth/access_token"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_github_dead_refresh_token_marks_the_connection_error(connect, oauth_server):
    endpoint = _GitHubLikeTokenEndpoint()
    try:
        with connect.app.app_context(), database.connection_context():
            cred = Credential(org=connect.org_id, name="GitHub", connector_name="github",
                              oauth_token_url=endpoint.url, oauth_client_id="gh-client")
            cred.oauth_client_secret_encrypted = connect.app.extensions["connect_keyring"].encrypt_json(
                "gh-secret", "credential", "oauth_client_secret", cred.id)
            cred.save(force_insert=True)
        conn_id = create_oauth_connection(connect.app, connect.org_id, cred,
                                          {"access_token": "gho_old", "refresh_token": "ghr_dead"},
                                          expires_at=past())
        with connect.app.app_context(), database.connection_context():
            Connection.update(type="dynamiq.connections.GitHub", connector_name="github",
                              integration_id="dynamiq.connections.GitHub").where(Connection.id == conn_id).execute()
        r = read_secrets(connect, conn_id)
        assert r.status_code == 502
        assert r.get_json()["error"]["details"]["status"] == "error"
        assert "invalid_grant" in r.get_json()["error"]["details"]["refresh"]
        row, _ = stored(connect.app, conn_id)
        assert row.status == "error" and "bad_refresh_token" in row.status_reason
        # not retried as an outage: the next read answers the error connection without a provider call
        r = read_secrets(connect, conn_id)
        assert r.status_code == 200 and r.get_json()["status"] == "error"
        assert endpoint.calls == 1
    finally:
        endpoint.close()


def test_invalid_grant_racing_a_reauthorization_does_not_mark_error(connect, oauth_server, expired, monkeypatch):
    """The re-authorization lands after the refresher re-read the row but before it writes ``error``."""
    from connect_service import connections, oauth

    conn_id, old = expired
    oauth_server.revoke_family(old["refresh_token"])  # the old grant is dead at the provider
    fresh = issue_tokens(oauth_server)
    real_mark_error = connections.mark_error
    marks = []

    def reauthorized_first(conn, reason, *, generation=None, **kwargs):
        # the refresher re-read the row and decided on "error": the user re-authorizes right now
        marks.append(reason)
        oauth.store_tokens(conn, Credential.get_by_id(conn.credential_id), fresh)
        return real_mark_error(conn, reason, generation=generation, **kwargs)

    monkeypatch.setattr(connections, "mark_error", reauthorized_first)
    r = read_secrets(connect, conn_id)
    assert len(marks) == 1 and "invalid_grant" in marks[0]
    assert r.status_code == 200, r.get_json()
    assert access_token(r) == fresh["access_token"]
    row, saved = stored(connect.app, conn_id)
    assert row.status == "active" and row.status_reason is None
    assert saved["refresh_token"] == fresh["refresh_token"] and row.refresh_lease_until is None
    assert connect.hooks.of("connection_failed") == []


def test_client_credentials_renewal_asks_for_the_credentials_scope(connect, oauth_server):
    cred = create_credential(connect.app, connect.org_id, oauth_server, grant_type="client_credentials")
    assert cred.oauth_scope == "read write"
    first = requests.post(oauth_server.token_url, data={"grant_type": "client_credentials", "scope": "read"},
                          auth=(CLIENT_ID, CLIENT_SECRET), timeout=5).json()
    conn_id = create_oauth_connection(connect.app, connect.org_id, cred, first, expires_at=past(),
                                      customer_id=None)
    assert stored(connect.app, conn_id)[1]["scope"] == "read"
    oauth_server.extra_token_fields = {"scope": ""}  # the provider does not echo the scope
    try:
        r = read_secrets(connect, conn_id)
    finally:
        oauth_server.extra_token_fields = {}
    assert r.status_code == 200, r.get_json()
    call = oauth_server.token_requests[-1]
    assert call["grant_type"] == "client_credentials" and call["form"]["scope"] == "read write"
    assert r.get_json()["settings"]["oauth"]["credentials"]["scope"] == "read write"


class _TricklingTokenEndpoint:
    """Sends headers at once, then one body byte per tick, until the client gives up.

    At every tick it looks at the connection's lease in the database (database clock), so the
    test can tell whether the provider call outlived the lease, without timing thresholds.
    """

    def __init__(self, flask_app, conn_id_holder):
        import http.server

        from connect_service.db import db_now

        outer = self
        self.outlived_lease = False
        self.ticks = 0
        self.finished = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        outer.ticks += 1
                        time.sleep(0.1)
                        with flask_app.app_context(), database.connection_context():
                            row = Connection.get_by_id(conn_id_holder[0])
                            if row.refresh_lease_until is None:
                                break  # the client gave up and released its lease: all good
                            if row.refresh_lease_until <= db_now():
                                outer.outlived_lease = True  # another worker could take over now
                                break
                except OSError:
                    pass  # the client closed the connection
                finally:
                    outer.finished.set()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_trickling_token_endpoint_cannot_outlive_the_refresh_lease(connect, oauth_server):
    connect.app.config["CONNECT"]["refresh_lease_seconds"] = 3
    holder = []
    endpoint = _TricklingTokenEndpoint(connect.app, holder)
    try:
        cred = create_credential(connect.app, connect.org_id, oauth_server, token_url=endpoint.url)
        holder.append(create_oauth_connection(connect.app, connect.org_id, cred,
                                              {"access_token": "at-1", "refresh_token": "rt-1"},
                                              expires_at=past()))
        r = read_secrets(connect, holder[0])
        assert r.status_code == 502, r.get_json()
        assert "timed out" in r.get_json()["error"]["details"]["refresh"]
        assert endpoint.finished.wait(30)
        assert endpoint.ticks > 1 and not endpoint.outlived_lease
        row, saved = stored(connect.app, holder[0])
        assert row.status == "active" and row.refresh_lease_until is None and saved["refresh_token"] == "rt-1"
    finally:
        endpoint.close()


def test_refresh_due_purges_long_expired_authorization_sessions(connect, oauth_server, credential):
    from connect_service.models import AuthorizationSession

    conn_id = create_oauth_connection(connect.app, connect.org_id, credential, issue_tokens(oauth_server),
                                      expires_at=future())
    now = utcnow()
    with connect.app.app_context(), database.connection_context():
        hours = lambda n: datetime.timedelta(hours=n)  # noqa: E731
        for name, expires_at, consumed_at in (("old", now - hours(72), None),
                                              ("used", now - hours(2), now - hours(3)),
                                              ("late", now - datetime.timedelta(minutes=1), None),
                                              ("live", now + datetime.timedelta(minutes=9), None)):
            AuthorizationSession.create(id=f"oas_{name}", state_hash=name, connection=conn_id,
                                        credential=credential.id, redirect_uri=REDIRECT_URI,
                                        token_url=oauth_server.token_url, expires_at=expires_at,
                                        consumed_at=consumed_at)
    result = run_cli(connect)
    assert result.exit_code == 0, result.output
    assert "deleted 2 expired authorization sessions" in result.stderr
    with connect.app.app_context(), database.connection_context():
        assert sorted(s.id for s in AuthorizationSession.select()) == ["oas_late", "oas_live"]
