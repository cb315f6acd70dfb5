"""End-to-end OAuth2 flows through the HTTP API against a real Authlib authorization server.

Our service runs in Flask's test client (public URL http://connect.test); the
"browser" follows the authorization URL to the test AS with ``requests`` and
brings the redirect back to our callback, as a browser would.
"""
from __future__ import annotations

import datetime
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from connect_service.connections import read_settings
from connect_service.db import database
from connect_service.models import App, AuthorizationSession, Connection, Credential, Requirement, WorkflowVersion

from tests.support.oauth_server import OAuthTestServer

PUBLIC = "http://connect.test"
CALLBACK = f"{PUBLIC}/v1/connect/oauth2/callback"  # + /{credential id}: each credential's redirect_uri
OAUTH2 = "dynamiq.connections.OAuth2"
GOOGLE = "dynamiq.connections.Google"
DROPBOX = "dynamiq.connections.Dropbox"
GITHUB = "dynamiq.connections.GitHub"
RETURN = "https://app.example/connections/done"


@pytest.fixture(scope="module")
def server():
    with OAuthTestServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _reset(server):
    server.reset_records()
    for knob, value in dict(auto_approve=True, auto_deny=False, send_iss=False, down=False,
                            include_expires_in=True, jwt_access_tokens=False, require_pkce=False,
                            rotate_refresh_tokens=True).items():
        setattr(server, knob, value)
    server.issuer = server.url
    yield
    assert server.errors == []


# --------------------------------------------------------------------------- helpers


def requirement(type_name: str, key: str = "account", **data) -> dict:
    return {"key": key, "type": "connection", "title": f"Connect {key}",
            "spec": {"type": "connection", "data": {"type": type_name, **data}}}


def make_credential(connect, server, connector="oauth2", method="client_secret_basic", *, send_method=True,
                    expect=201, **extra) -> dict:
    client_id = f"client-{uuid.uuid4().hex[:10]}"
    secret = f"secret-{uuid.uuid4().hex}"
    body = {"name": f"{connector} credential", "mode": "OAUTH", "connector_name": connector,
            "oauth_url": server.authorize_url, "oauth_token_url": server.token_url,
            "oauth_client_id": client_id, "oauth_client_secret": secret, "oauth_scope": "read",
            "oauth_grant_type": "authorization_code", **extra}
    if send_method:
        body["oauth_token_endpoint_auth_method"] = method
    r = connect.client.post("/v1/credentials", json=body, headers=connect.auth)
    assert r.status_code == expect, r.get_json()
    out = r.get_json()
    out["_secret"] = secret
    if r.status_code == 201:  # registered at the provider with the credential's own redirect URI
        assert out["redirect_uri"] == f"{CALLBACK}/{out['id']}"
        server.add_client(client_id, secret, [out["redirect_uri"]], token_endpoint_auth_method=method)
    return out


def authorize(connect, token, req_id, **query):
    return connect.client.post(f"/v1/connect/requirements/{req_id}/oauth2/authorize", query_string=query,
                               headers={"Authorization": f"Bearer {token}"})


def browser_to_callback(url: str) -> str:
    """Open the authorization URL like a browser; return the provider's redirect back to us."""
    r = requests.get(url, allow_redirects=False, timeout=10)
    assert r.status_code in (302, 303), r.text[:300]
    location = r.headers["Location"]
    assert location.startswith(CALLBACK + "/") and "?" in location, location
    return location


def db(connect):
    class _Ctx:
        def __enter__(self):
            self.app_ctx = connect.app.app_context()
            self.app_ctx.__enter__()
            self.db_ctx = database.connection_context()
            self.db_ctx.__enter__()

        def __exit__(self, *exc):
            self.db_ctx.__exit__(*exc)
            self.app_ctx.__exit__(*exc)

    return _Ctx()


def connection(connect, conn_id):
    with db(connect):
        conn = Connection.get_by_id(conn_id)
        return conn, read_settings(conn)


def full_flow(connect, server, type_name, cred_kwargs=None, app_extra=None, user="user-1", query=None):
    cred = make_credential(connect, server, **(cred_kwargs or {}))
    app = connect.create_app_with_requirements([requirement(type_name)], **(app_extra or {}))
    token = connect.token(app, user)
    req_id = connect.requirement_id(app, "account")
    r = authorize(connect, token, req_id, **(query or {}))
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    location = browser_to_callback(body["authorization_url"])
    result = connect.client.get(location)
    return cred, app, token, req_id, body, result


# --------------------------------------------------------------------------- complete flows


def test_generic_oauth2_code_flow_with_pkce_and_basic_auth(connect, server):
    cred, app, token, req_id, body, result = full_flow(connect, server, OAUTH2)
    assert set(body) == {"authorization_url", "connection_id"}
    assert result.status_code == 200
    assert b"Connected" in result.data and b"close this window" in result.data
    assert result.headers["Referrer-Policy"] == "no-referrer"

    sent = server.authorize_requests[-1]
    assert sent["code_challenge_method"] == "S256" and len(sent["code_challenge"]) == 43
    assert sent["redirect_uri"] == cred["redirect_uri"]
    assert sent["prompt"] == "login"
    assert sent["scope"].split() == ["read", "offline_access"]
    assert len(sent["state"]) >= 22

    (call,) = server.token_requests
    assert call["grant_type"] == "authorization_code"
    assert call["authenticated_method"] == "client_secret_basic"
    assert call["basic_auth"] == (cred["oauth_client_id"], cred["_secret"])
    assert "client_secret" not in call["form"]
    assert call["form"]["redirect_uri"] == cred["redirect_uri"]
    assert 43 <= len(call["form"]["code_verifier"]) <= 128
    assert call["status"] == 200

    conn, settings = connection(connect, body["connection_id"])
    assert conn.status == "active" and conn.customer_id == "user-1" and conn.requirement_id == req_id
    assert conn.type == OAUTH2 and conn.connector_name == "oauth2" and conn.credential_id == cred["id"]
    creds = settings["oauth"]["credentials"]
    issued = server.last_token(cred["oauth_client_id"])
    assert creds["access_token"] == issued.access_token and creds["refresh_token"] == issued.refresh_token
    assert creds["client_id"] == cred["oauth_client_id"] and creds["expires_in"] == 3600
    assert creds["raw"]["access_token"] == issued.access_token
    assert conn.expires_at is not None
    assert server.token_is_active(creds["access_token"])
    # tokens are encrypted at rest
    assert issued.access_token not in (conn.settings_encrypted or "")
    assert connect.statuses(token)[req_id] == "completed"
    # the state is single use and stored hashed
    with db(connect):
        session = AuthorizationSession.get(AuthorizationSession.connection == conn.id)
        assert session.consumed_at is not None and session.state_hash != sent["state"]
        assert sent["state"] not in (session.verifier_encrypted or "")


def test_google_plugin_pointed_at_the_server_posts_the_secret_and_returns_to_the_app(connect, server):
    cred, app, token, req_id, body, result = full_flow(
        connect, server, GOOGLE, cred_kwargs={"connector": "google", "method": "client_secret_post",
                                              "send_method": False},
        app_extra={"return_urls": [RETURN]}, query={"return_to": RETURN})
    assert cred["oauth_token_endpoint_auth_method"] == "client_secret_post"  # the plugin's default
    sent = server.authorize_requests[-1]
    assert sent["access_type"] == "offline" and sent["prompt"] == "consent"  # Google refuses prompt=login
    assert sent["scope"].split() == ["read", "openid", "email"]
    assert "offline_access" not in sent["scope"]
    (call,) = server.token_requests
    assert call["authenticated_method"] == "client_secret_post" and call["basic_auth"] is None
    assert call["form"]["client_secret"] == cred["_secret"]

    assert result.status_code == 303
    target = urlsplit(result.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == RETURN
    query = parse_qs(target.query)
    assert query["status"] == ["success"] and query["requirement_id"] == [req_id]
    assert query["connection_id"] == [body["connection_id"]]
    conn, _ = connection(connect, body["connection_id"])
    assert conn.status == "active" and conn.type == GOOGLE


def test_dropbox_plugin_pointed_at_the_server(connect, server):
    cred, app, token, req_id, body, result = full_flow(
        connect, server, DROPBOX, cred_kwargs={"connector": "dropbox", "send_method": False})
    assert result.status_code == 200
    sent = server.authorize_requests[-1]
    assert sent["token_access_type"] == "offline" and sent["scope"] == "read"
    assert server.token_requests[-1]["authenticated_method"] == "client_secret_basic"
    assert connection(connect, body["connection_id"])[0].status == "active"


def test_github_plugin_pointed_at_the_server(connect, server):
    cred, app, token, req_id, body, result = full_flow(
        connect, server, GITHUB, cred_kwargs={"connector": "github", "method": "client_secret_post",
                                              "send_method": False})
    assert result.status_code == 200
    sent = server.authorize_requests[-1]
    assert sent["scope"].split() == ["read", "read:user"]
    assert "access_type" not in sent and "offline_access" not in sent["scope"]
    assert connection(connect, body["connection_id"])[0].status == "active"


def test_jwt_access_token_without_expires_in_uses_the_jwt_exp(connect, server):
    server.include_expires_in = False
    server.jwt_access_tokens = True
    cred, app, token, req_id, body, result = full_flow(connect, server, OAUTH2)
    assert result.status_code == 200
    conn, settings = connection(connect, body["connection_id"])
    exp = server.decode_jwt(settings["oauth"]["credentials"]["access_token"])["exp"]
    assert conn.expires_at == datetime.datetime.fromtimestamp(exp, datetime.timezone.utc).replace(tzinfo=None)


def test_missing_expires_in_and_opaque_token_falls_back_to_the_default_lifetime(connect, server):
    server.include_expires_in = False
    cred, app, token, req_id, body, result = full_flow(connect, server, OAUTH2)
    conn, settings = connection(connect, body["connection_id"])
    assert settings["oauth"]["credentials"]["expires_in"] == 3600
    assert conn.expires_at is not None


# --------------------------------------------------------------------------- state handling


def test_replayed_state_is_rejected_before_any_token_request(connect, server):
    cred = make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    token = connect.token(app, "u")
    r = authorize(connect, token, connect.requirement_id(app, "account"))
    location = browser_to_callback(r.get_json()["authorization_url"])
    assert connect.client.get(location).status_code == 200
    calls = server.token_calls()
    again = connect.client.get(location)
    assert again.status_code == 400 and b"already used" in again.data
    assert server.token_calls() == calls == 1
    assert connection(connect, r.get_json()["connection_id"])[0].status == "active"


def test_unknown_or_missing_state_is_rejected_without_a_token_request(connect, server):
    cred = make_credential(connect, server)
    for query in ({"state": "forged-state", "code": "abc"}, {"code": "abc"}, {}):
        r = connect.client.get(f"/v1/connect/oauth2/callback/{cred['id']}", query_string=query, base_url=PUBLIC)
        assert r.status_code == 400
        assert r.headers["Content-Type"].startswith("text/html")
    assert server.token_calls() == 0


def test_expired_state_is_rejected_without_a_token_request(connect, server):
    make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    token = connect.token(app, "u")
    r = authorize(connect, token, connect.requirement_id(app, "account"))
    conn_id = r.get_json()["connection_id"]
    with db(connect):
        AuthorizationSession.update(expires_at=datetime.datetime(2000, 1, 1)).where(
            AuthorizationSession.connection == conn_id).execute()
    location = browser_to_callback(r.get_json()["authorization_url"])
    result = connect.client.get(location)
    assert result.status_code == 400 and b"expired" in result.data
    assert server.token_calls() == 0
    assert connection(connect, conn_id)[0].status == "pending"


def test_session_expiry_is_ten_minutes_from_settings(connect, server):
    cred = make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    r = authorize(connect, connect.token(app, "u"), connect.requirement_id(app, "account"))
    with db(connect):
        session = AuthorizationSession.get(AuthorizationSession.connection == r.get_json()["connection_id"])
        assert (session.expires_at - session.created_at).total_seconds() == pytest.approx(600, abs=5)
        assert session.redirect_uri == cred["redirect_uri"] and session.token_url == server.token_url


def test_access_denied_marks_the_connection_error_with_an_escaped_message(connect, server):
    cred = make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    token = connect.token(app, "u")
    req_id = connect.requirement_id(app, "account")
    server.auto_approve, server.auto_deny = False, True
    r = authorize(connect, token, req_id)
    location = browser_to_callback(r.get_json()["authorization_url"])
    assert parse_qs(urlsplit(location).query)["error"] == ["access_denied"]
    result = connect.client.get(location)
    assert result.status_code == 400 and b"access_denied" in result.data
    assert server.token_calls() == 0
    conn, _ = connection(connect, r.get_json()["connection_id"])
    assert conn.status == "error" and "access_denied" in conn.status_reason
    assert connect.statuses(token)[req_id] == "pending"

    # the provider's error text is escaped on the result page
    r = authorize(connect, token, req_id)
    state = parse_qs(urlsplit(r.get_json()["authorization_url"]).query)["state"][0]
    page = connect.client.get(f"/v1/connect/oauth2/callback/{cred['id']}", base_url=PUBLIC, query_string={
        "state": state, "error": "access_denied", "error_description": "<script>alert(1)</script>"})
    assert page.status_code == 400
    assert b"<script>alert(1)</script>" not in page.data and b"&lt;script&gt;" in page.data
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


def test_issuer_is_checked_when_the_credential_declares_one(connect, server):
    server.send_iss = True
    cred = make_credential(connect, server, oauth_issuer=server.url)
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    token = connect.token(app, "u")
    req_id = connect.requirement_id(app, "account")

    # a response from another issuer (mix-up) is refused before the code is exchanged
    server.issuer = "http://127.0.0.1:1/other-as"
    r = authorize(connect, token, req_id)
    location = browser_to_callback(r.get_json()["authorization_url"])
    assert parse_qs(urlsplit(location).query)["iss"] == ["http://127.0.0.1:1/other-as"]
    result = connect.client.get(location)
    assert result.status_code == 400 and b"iss mismatch" in result.data
    assert server.token_calls() == 0
    assert connection(connect, r.get_json()["connection_id"])[0].status == "error"

    # a response without iss is refused too when one is expected
    server.send_iss = False
    r = authorize(connect, token, req_id)
    assert connect.client.get(browser_to_callback(r.get_json()["authorization_url"])).status_code == 400
    assert server.token_calls() == 0

    # the right issuer completes
    server.send_iss, server.issuer = True, server.url
    r = authorize(connect, token, req_id)
    assert connect.client.get(browser_to_callback(r.get_json()["authorization_url"])).status_code == 200
    assert connection(connect, r.get_json()["connection_id"])[0].status == "active"
    assert cred["oauth_issuer"] == server.url


def test_unreachable_token_endpoint_at_callback_is_an_error_page_not_a_500(connect, server):
    cred = make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    token = connect.token(app, "u")
    r = authorize(connect, token, connect.requirement_id(app, "account"))
    location = browser_to_callback(r.get_json()["authorization_url"])
    server.down = True
    result = connect.client.get(location)
    assert result.status_code == 400 and b"HTTP 503" in result.data
    assert connection(connect, r.get_json()["connection_id"])[0].status == "error"


def test_code_for_another_client_or_wrong_secret_fails_cleanly(connect, server):
    cred = make_credential(connect, server)
    server.add_client(cred["oauth_client_id"], "rotated-at-the-provider", [cred["redirect_uri"]])
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    r = authorize(connect, connect.token(app, "u"), connect.requirement_id(app, "account"))
    result = connect.client.get(browser_to_callback(r.get_json()["authorization_url"]))
    assert result.status_code == 400 and b"invalid_client" in result.data
    conn, _ = connection(connect, r.get_json()["connection_id"])
    assert conn.status == "error" and "invalid_client" in conn.status_reason


# --------------------------------------------------------------------------- return_to, re-authorization


@pytest.mark.parametrize("return_to", [
    "//evil.example/connections/done", "javascript:alert(1)", "https://app.example.evil.test/connections/done",
    "https://app.example.evil.test", "https://app.example/connections/done/", "https://app.example/connections/done?x=1",
    "HTTPS://APP.EXAMPLE/connections/done", "https://app.example@evil.test/connections/done", "",
    "https://app.example/connections/done#frag", " https://app.example/connections/done",
])
def test_return_to_must_exactly_match_a_return_url(connect, server, return_to):
    make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2)], return_urls=[RETURN])
    r = authorize(connect, connect.token(app, "u"), connect.requirement_id(app, "account"), return_to=return_to)
    assert r.status_code == 400
    assert r.get_json()["error"]["details"] == {"return_to": "must exactly match one of the app's return_urls"}


def test_reauthorizing_keeps_the_active_connection_until_the_new_flow_succeeds(connect, server):
    cred, app, token, req_id, body, result = full_flow(connect, server, OAUTH2)
    conn_id = body["connection_id"]
    _, first = connection(connect, conn_id)
    old_access = first["oauth"]["credentials"]["access_token"]

    # a second start keeps the connection active with its old tokens
    r = authorize(connect, token, req_id)
    assert r.status_code == 201 and r.get_json()["connection_id"] == conn_id
    conn, settings = connection(connect, conn_id)
    assert conn.status == "active" and settings["oauth"]["credentials"]["access_token"] == old_access
    assert connect.statuses(token)[req_id] == "completed"

    # a denied re-authorization only reports the error
    server.auto_approve, server.auto_deny = False, True
    denied = connect.client.get(browser_to_callback(r.get_json()["authorization_url"]))
    assert denied.status_code == 400
    conn, settings = connection(connect, conn_id)
    assert conn.status == "active" and settings["oauth"]["credentials"]["access_token"] == old_access

    # a successful one updates the same connection in place
    server.auto_approve, server.auto_deny = True, False
    r = authorize(connect, token, req_id)
    assert connect.client.get(browser_to_callback(r.get_json()["authorization_url"])).status_code == 200
    conn, settings = connection(connect, conn_id)
    assert conn.status == "active" and settings["oauth"]["credentials"]["access_token"] != old_access
    with db(connect):
        assert Connection.select().where(Connection.app == app["id"]).count() == 1


# --------------------------------------------------------------------------- credential choice, bad requirements


def test_credential_choice_app_own_over_org_and_ambiguity(connect, server):
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    token = connect.token(app, "u")
    req_id = connect.requirement_id(app, "account")

    # the end user reads that the setup is incomplete; the org's log says why (issue 12 item 10)
    r = authorize(connect, token, req_id)
    assert r.status_code == 400 and "setup is incomplete" in r.get_json()["error"]["details"]["requirement"]

    org1 = make_credential(connect, server)
    org2 = make_credential(connect, server)
    r = authorize(connect, token, req_id)
    assert r.status_code == 400 and "setup is incomplete" in r.get_json()["error"]["details"]["requirement"]
    assert org1["id"] not in r.get_data(as_text=True)

    own = make_credential(connect, server, app_id=app["id"])
    assert own["read_access"] == "APP"
    r = authorize(connect, token, req_id)
    assert r.status_code == 201
    assert parse_qs(urlsplit(r.get_json()["authorization_url"]).query)["client_id"] == [own["oauth_client_id"]]

    # spec.data.credential_id picks one explicitly
    app2 = connect.create_app_with_requirements([requirement(OAUTH2, credential_id=org2["id"])])
    r = authorize(connect, connect.token(app2, "u"), connect.requirement_id(app2, "account"))
    assert r.status_code == 201
    assert parse_qs(urlsplit(r.get_json()["authorization_url"]).query)["client_id"] == [org2["oauth_client_id"]]
    # another app's own credential is not usable
    app3 = connect.create_app_with_requirements([requirement(OAUTH2, credential_id=own["id"])])
    r = authorize(connect, connect.token(app3, "u"), connect.requirement_id(app3, "account"))
    assert r.status_code == 400 and own["id"] not in r.get_data(as_text=True)
    assert org1["id"] != org2["id"]


def test_authorize_refuses_non_oauth_requirements_and_unknown_ids(connect, server):
    app = connect.create_app_with_requirements([
        {"key": "k", "type": "connection", "title": "Key",
         "spec": {"type": "connection", "data": {"type": "dynamiq.connections.HttpApiKey"}}}])
    token = connect.token(app, "u")
    r = authorize(connect, token, connect.requirement_id(app, "k"))
    assert r.status_code == 400 and "not OAuth2-based" in r.get_json()["error"]["details"]["requirement"]
    assert authorize(connect, token, str(uuid.uuid4())).status_code == 404
    r = connect.client.post(f"/v1/connect/requirements/{connect.requirement_id(app, 'k')}/oauth2/authorize",
                            headers=connect.auth)
    assert r.status_code == 401


# --------------------------------------------------------------------------- browser binding, credential redirect_url


def test_hosted_page_sessions_require_the_browser_nonce_cookie(connect, server):
    from connect_service import oauth

    make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    req_id = connect.requirement_id(app, "account")
    with connect.app.test_request_context(base_url=PUBLIC), database.connection_context():
        app_row = App.get_by_id(app["id"])
        req = (Requirement.select().join(WorkflowVersion)
               .where(WorkflowVersion.app == app_row.id, Requirement.public_id == req_id).get())
        started = oauth.start_authorization(app_row, "u", req, return_to=f"{PUBLIC}/connect",
                                            browser_nonce="nonce-from-the-page")
    url, conn = started.url, started.connection
    state = parse_qs(urlsplit(url).query)["state"][0]
    assert started.nonce_cookie == oauth.nonce_cookie_name(state) == \
        f"connect_oauth_nonce_{oauth.hash_secret(state)[:16]}"
    location = browser_to_callback(url)

    stranger = connect.app.test_client()
    r = stranger.get(location)
    assert r.status_code == 303 and "status=error" in r.headers["Location"]
    assert server.token_calls() == 0

    owner = connect.app.test_client()
    owner.set_cookie(started.nonce_cookie, "nonce-from-the-page", domain="connect.test", path=oauth.CALLBACK_PATH)
    r = owner.get(location)
    assert r.status_code == 303
    target = urlsplit(r.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{PUBLIC}/connect"
    assert parse_qs(target.query)["status"] == ["success"] and parse_qs(target.query)["requirement_id"] == [req_id]
    assert connection(connect, conn.id)[0].status == "active"


def test_credential_redirect_url_completes_an_org_level_connection(connect, server):
    cred = make_credential(connect, server)
    assert cred["redirect_url"].startswith(f"{PUBLIC}/v1/connect/oauth2/start/")
    browser = connect.app.test_client()
    start = browser.get(cred["redirect_url"])
    assert start.status_code == 303 and start.headers["Location"].startswith(server.authorize_url)
    assert "HttpOnly" in start.headers["Set-Cookie"] and "SameSite=Lax" in start.headers["Set-Cookie"]
    location = browser_to_callback(start.headers["Location"])
    assert connect.client.get(location).status_code == 400  # another browser: refused
    done = browser.get(location)
    assert done.status_code == 200 and b"Connected" in done.data
    got = connect.client.get(f"/v1/credentials/{cred['id']}", headers=connect.auth).get_json()
    conn, settings = connection(connect, got["connection_id"])
    assert conn.status == "active" and conn.app_id is None and conn.customer_id is None
    assert settings["oauth"]["credentials"]["access_token"]

    tampered = browser.get(cred["redirect_url"][:-3] + "xyz")
    assert tampered.status_code == 400 and b"not valid" in tampered.data


def test_client_credentials_credential_gets_an_active_org_connection(connect, server):
    client_id = f"cc-{uuid.uuid4().hex[:8]}"
    server.add_client(client_id, "cc-secret", [], token_endpoint_auth_method="client_secret_post")
    r = connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "machine", "mode": "OAUTH", "connector_name": "oauth2", "oauth_token_url": server.token_url,
        "oauth_client_id": client_id, "oauth_client_secret": "cc-secret", "oauth_scope": "read write",
        "oauth_grant_type": "client_credentials", "oauth_token_endpoint_auth_method": "client_secret_post"})
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["redirect_url"] == "" and body["connection_id"]
    assert server.token_calls("client_credentials") == 1
    call = server.token_requests[-1]
    assert call["authenticated_method"] == "client_secret_post" and call["form"]["scope"] == "read write"
    conn, settings = connection(connect, body["connection_id"])
    assert conn.status == "active" and conn.customer_id is None and conn.app_id is None
    assert server.token_is_active(settings["oauth"]["credentials"]["access_token"])


def test_token_settings_rules(connect):
    import jwt as pyjwt

    from connect_service import OAuth2Provider, oauth

    now = datetime.datetime(2026, 11, 23, 8, 30)
    cred = Credential(id="ccfg_t", org="o", connector_name="oauth2", oauth_client_id="cid")
    with connect.app.app_context():
        first, exp1 = oauth.token_settings({"access_token": "a1", "refresh_token": "r1", "expires_in": 120,
                                            "scope": ["a", "b"]}, previous=None, provider=OAuth2Provider(),
                                           credential=cred, now=now)
        creds = first["oauth"]["credentials"]
        assert exp1 == now + datetime.timedelta(seconds=120) and creds["expires_at"] == "2026-11-23T08:32:00Z"
        assert creds["scope"] == "a b" and creds["client_id"] == "cid" and creds["token_type"] == "Bearer"
        later = now + datetime.timedelta(hours=1)
        # no refresh token in the answer: the old one is kept; no expires_in, opaque: provider default
        second, exp2 = oauth.token_settings({"access_token": "a2"}, previous=first,
                                            provider=OAuth2Provider(default_token_lifetime=900), credential=cred,
                                            now=later)
        assert second["oauth"]["credentials"]["refresh_token"] == "r1" and exp2 == later + datetime.timedelta(seconds=900)
        assert second["oauth"]["created_at"] == first["oauth"]["created_at"]
        assert second["oauth"]["credentials"]["scope"] == "a b"
        # a rotated one replaces it; a JWT's exp is used when expires_in is missing
        at = pyjwt.encode({"exp": 1795000000}, "k" * 32, algorithm="HS256")
        third, exp3 = oauth.token_settings({"access_token": at, "refresh_token": "r2"}, previous=second,
                                           provider=OAuth2Provider(), credential=cred, now=later)
        assert third["oauth"]["credentials"]["refresh_token"] == "r2"
        assert exp3 == datetime.datetime.fromtimestamp(1795000000, datetime.timezone.utc).replace(tzinfo=None)
        # nothing at all: the app's default lifetime, never "never expires"
        _, exp4 = oauth.token_settings({"access_token": "a4", "expires_in": None}, previous=None,
                                       provider=OAuth2Provider(), credential=cred, now=later)
        assert exp4 == later + datetime.timedelta(seconds=3600)


# --------------------------------------------------------------------------- review findings: flow robustness


@pytest.mark.parametrize("expires_in", [10 ** 12, 1e30, "inf", "Infinity", 2 ** 64])
def test_absurd_expires_in_at_the_callback_is_clamped_not_a_500(connect, server, monkeypatch, expires_in):
    from connect_service.db import db_now
    from connect_service.oauth import MAX_TOKEN_LIFETIME_SECONDS

    monkeypatch.setattr(server, "extra_token_fields", {"expires_in": expires_in})
    cred, app, token, req_id, body, result = full_flow(connect, server, OAUTH2)
    assert result.status_code == 200, result.data[:300]
    conn, settings = connection(connect, body["connection_id"])
    assert conn.status == "active"
    assert settings["oauth"]["credentials"]["expires_in"] == MAX_TOKEN_LIFETIME_SECONDS
    with db(connect):
        now = db_now()
    assert conn.expires_at <= now + datetime.timedelta(seconds=MAX_TOKEN_LIFETIME_SECONDS)


def test_reauthorization_without_a_refresh_token_does_not_keep_the_old_grants(connect, server):
    cred, app, token, req_id, body, result = full_flow(connect, server, OAUTH2)
    conn_id = body["connection_id"]
    old = connection(connect, conn_id)[1]["oauth"]["credentials"]
    assert old["refresh_token"] and old["scope"]
    # the provider now issues no refresh token; the end user signs in as somebody else
    server.add_client(cred["oauth_client_id"], cred["_secret"], [cred["redirect_uri"]],
                      grant_types=("authorization_code",))
    server.user = {"sub": "user-2", "email": "other@example.com"}
    try:
        r = authorize(connect, token, req_id)
        assert connect.client.get(browser_to_callback(r.get_json()["authorization_url"])).status_code == 200
    finally:
        server.user = {"sub": "user-1", "email": "user@example.com"}
    conn, settings = connection(connect, conn_id)
    new = settings["oauth"]["credentials"]
    assert "refresh_token" not in new["raw"]
    assert new["refresh_token"] is None  # not the other account's old one
    assert new["access_token"] != old["access_token"] and conn.status == "active"
    # a connection without a refresh token cannot be force-refreshed
    r = connect.client.get(f"/v1/connections/{conn_id}?include_secrets=true&refresh=force", headers=connect.auth)
    assert r.status_code == 409 and "no refresh token" in r.get_json()["error"]["details"]["refresh"]
    assert server.token_calls("refresh_token") == 0


def test_a_failed_callback_does_not_overwrite_a_concurrent_successful_one(connect, server, monkeypatch):
    """Flow 1's code exchange fails while flow 2 (same connection) completes: the connection stays active."""
    import threading

    from connect_service import oauth

    make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    token = connect.token(app, "u")
    req_id = connect.requirement_id(app, "account")
    first = authorize(connect, token, req_id).get_json()
    second = authorize(connect, token, req_id).get_json()
    assert first["connection_id"] == second["connection_id"]
    first_location = browser_to_callback(first["authorization_url"])
    second_location = browser_to_callback(second["authorization_url"])
    real_exchange = oauth.grants.exchange_code
    results, calls = [], []

    def exchange(credential, session, code):
        calls.append(code)
        if len(calls) == 1:  # flow 1: flow 2's whole callback lands while our provider call is in flight
            other = threading.Thread(target=lambda: results.append(connect.app.test_client().get(second_location)))
            other.start()
            other.join()
            raise oauth.ProviderError("invalid_grant", "the code expired")
        return real_exchange(credential, session, code)

    monkeypatch.setattr(oauth.grants, "exchange_code", exchange)
    failed = connect.client.get(first_location)
    assert failed.status_code == 400 and b"invalid_grant" in failed.data
    assert results[0].status_code == 200
    conn, settings = connection(connect, first["connection_id"])
    assert conn.status == "active" and conn.status_reason is None
    assert server.token_is_active(settings["oauth"]["credentials"]["access_token"])
    assert connect.hooks.of("connection_failed") == []
    assert connect.statuses(token)[req_id] == "completed"


def test_callback_times_come_from_the_database_clock(connect, server, monkeypatch):
    """This host's clock runs two hours ahead: expiry and last refresh are still database time."""
    from connect_service.db import db_now
    from tests.support.clock import skew_host_clock

    skew_host_clock(monkeypatch, datetime.timedelta(hours=2))
    cred, app, token, req_id, body, result = full_flow(connect, server, OAUTH2)
    assert result.status_code == 200
    conn, settings = connection(connect, body["connection_id"])
    with db(connect):
        now = db_now()
    assert conn.last_refreshed_at <= now
    assert conn.expires_at - conn.last_refreshed_at == datetime.timedelta(seconds=3600)
    # so a refresh decision right now sees an hour left, not three
    assert conn.expires_at <= now + datetime.timedelta(seconds=3600)


def test_expired_sessions_are_purged_in_bounded_batches_on_start(connect, server):
    from connect_service import oauth

    cred = make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2)])
    token = connect.token(app, "u")
    req_id = connect.requirement_id(app, "account")
    first = authorize(connect, token, req_id).get_json()
    long_ago = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(days=2)
    just_now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=5)
    with db(connect):
        AuthorizationSession.insert_many([
            {"id": f"oas_old{i}", "state_hash": f"old{i}", "connection": first["connection_id"],
             "credential": cred["id"], "redirect_uri": cred["redirect_uri"], "token_url": server.token_url,
             "expires_at": long_ago, "consumed_at": long_ago if i % 2 else None, "created_at": long_ago}
            for i in range(oauth.SESSION_PURGE_ON_START + 5)]).execute()
        AuthorizationSession.create(id="oas_recent", state_hash="recent", connection=first["connection_id"],
                                    credential=cred["id"], redirect_uri=cred["redirect_uri"], token_url=server.token_url,
                                    expires_at=just_now)

    authorize(connect, token, req_id)
    with db(connect):
        old_left = AuthorizationSession.select().where(AuthorizationSession.id.startswith("oas_old")).count()
        assert old_left == 5  # one start deletes a bounded batch
        assert AuthorizationSession.get_or_none(AuthorizationSession.id == "oas_recent") is not None
    authorize(connect, token, req_id)
    with db(connect):
        assert AuthorizationSession.select().where(AuthorizationSession.id.startswith("oas_old")).count() == 0
        # the live sessions and the recently expired one stay: a late callback still reads "expired"
        assert AuthorizationSession.select().count() == 4


# --------------------------------------------------------------------------- two flows in one browser


def test_two_credential_flows_started_in_one_browser_both_complete(connect, server):
    first, second = make_credential(connect, server), make_credential(connect, server)
    browser = connect.app.test_client()
    starts = [browser.get(cred["redirect_url"]) for cred in (first, second)]
    names = []
    for start in starts:
        assert start.status_code == 303
        state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
        (set_cookie,) = start.headers.getlist("Set-Cookie")
        from connect_service import oauth

        names.append(oauth.nonce_cookie_name(state))
        assert set_cookie.startswith(names[-1] + "=")
        for attribute in ("HttpOnly", "SameSite=Lax", "Path=/v1/connect/oauth2/callback", "Max-Age=600"):
            assert attribute in set_cookie
    assert len(set(names)) == 2
    locations = [browser_to_callback(start.headers["Location"]) for start in starts]
    for location, name in zip(locations, names):  # the first flow finishes after the second started
        done = browser.get(location)
        assert done.status_code == 200 and b"Connected" in done.data, done.data[:300]
        assert browser.get_cookie(name, domain="connect.test", path="/v1/connect/oauth2/callback") is None
    for cred in (first, second):
        got = connect.client.get(f"/v1/credentials/{cred['id']}", headers=connect.auth).get_json()
        assert connection(connect, got["connection_id"])[0].status == "active"


def test_two_hosted_page_flows_started_in_one_browser_both_complete(connect, server):
    import re
    from html import unescape

    make_credential(connect, server)
    app = connect.create_app_with_requirements([requirement(OAUTH2, "crm"), requirement(OAUTH2, "mail")])
    token = connect.token(app, "u")
    browser = connect.app.test_client()
    page = browser.get(f"/connect?token={token}", base_url=PUBLIC)
    assert page.status_code == 303
    html = browser.get(page.headers["Location"], base_url=PUBLIC).get_data(as_text=True)
    starts = [unescape(href) for href in re.findall(r'href="([^"]*/oauth2/[^"]+/start[^"]*)"', html)]
    assert len(starts) == 2, html
    providers = [browser.get(start, base_url=PUBLIC) for start in starts]
    assert [r.status_code for r in providers] == [302, 302]
    locations = [browser_to_callback(r.headers["Location"]) for r in providers]
    for location in locations:
        done = browser.get(location)
        assert done.status_code == 303, done.data[:300]
        assert "status=success" in done.headers["Location"]
    assert set(connect.statuses(token).values()) == {"completed"}
    assert server.token_calls("authorization_code") == 2


def test_concurrent_starts_of_a_credential_redirect_url_share_one_connection(connect, server):
    """Parallel opens of signed start links (PostgreSQL included) find-or-create one org-level row.

    A link is single-use, so each thread opens a fresh one (every read of the credential mints one).
    """
    import threading

    for attempt in range(3):
        cred = make_credential(connect, server)
        links = [connect.client.get(f"/v1/credentials/{cred['id']}", headers=connect.auth).get_json()["redirect_url"]
                 for _ in range(8)]
        barrier = threading.Barrier(8)
        codes = []

        def start(link):
            client = connect.app.test_client()
            barrier.wait()
            codes.append(client.get(link).status_code)

        threads = [threading.Thread(target=start, args=(link,)) for link in links]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [303] * 8
        with db(connect):
            count = Connection.select().where(Connection.credential == cred["id"]).count()
        assert count == 1, f"attempt {attempt}: {count} org-level connections"


def test_deleting_a_credential_sends_its_users_back_to_reconnect(connect, server):
    """Without its client registration a connection can never refresh: error, requirement pending again."""
    cred, app, token, req_id, body, result = full_flow(connect, server, OAUTH2)
    assert connect.statuses(token)[req_id] == "completed"
    assert connect.client.delete(f"/v1/credentials/{cred['id']}", headers=connect.auth).status_code in (200, 204)
    conn = connect.client.get(f"/v1/connections/{body['connection_id']}", headers=connect.auth).get_json()
    assert conn["status"] == "error" and "credential" in conn["status_reason"]
    assert connect.statuses(token)[req_id] == "pending"
    assert [c["connection"]["id"] for c in connect.hooks.of("connection_failed")] == [body["connection_id"]]
