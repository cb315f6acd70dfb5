"""Authorization URLs (seed 004 rules) per provider, through POST /v1/embed/…/oauth2/initialise.

Also: each provider plugin's token-endpoint request shape (client auth, body
format) and one complete embed flow against the Authlib test server.
"""
from __future__ import annotations

import base64
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from connect_service import oauth
from connect_service.connections import read_settings
from connect_service.db import database
from connect_service.models import Connection
from tests.support.oauth_server import OAuthTestServer

PUBLIC = "http://connect.test"
CALLBACK = f"{PUBLIC}/v1/connect/oauth2/callback"

#: connector -> (authorize URL, default scopes, offline ask (param dict or scope), PKCE, auth method)
PROVIDERS = {
    "google": ("https://accounts.google.com/o/oauth2/v2/auth", ["openid", "email"], {"access_type": "offline"},
               True, "client_secret_post"),
    "github": ("https://github.com/login/oauth/authorize", ["read:user"], None, True, "client_secret_post"),
    "dropbox": ("https://www.dropbox.com/oauth2/authorize", [], {"token_access_type": "offline"}, True,
                "client_secret_basic"),
    "box": ("https://account.box.com/api/oauth2/authorize", [], None, False, "client_secret_post"),
    "notion": ("https://api.notion.com/v1/oauth/authorize", [], None, False, "client_secret_basic"),
    "microsoft": ("https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
                  ["openid", "profile", "email", "User.Read"], "offline_access", True, "client_secret_post"),
}


def create_credential(connect, connector, **extra):
    body = {"name": f"{connector} app", "mode": "OAUTH", "connector_name": connector,
            "oauth_client_id": f"{connector}-client-id", "oauth_client_secret": "s3cr3t",
            "oauth_grant_type": "authorization_code", **extra}
    r = connect.client.post("/v1/credentials", json=body, headers=connect.auth)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def initialise(connect, app_id, connector, cred, expect=200, **body):
    payload = {"authorizeUrl": cred["oauth_url"], "clientId": cred["oauth_client_id"],
               "credential": {"id": cred["id"], "organisationId": connect.org_id}, **body}
    r = connect.client.post(f"/v1/embed/{app_id}/connector/{connector}/oauth2/initialise", json=payload,
                            headers=connect.auth)
    assert r.status_code == expect, r.get_json()
    return r.get_json()


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


@pytest.fixture
def app(connect):
    return connect.create_app(return_urls=["https://app.example/oauth/done"])


@pytest.mark.parametrize("connector", sorted(PROVIDERS))
def test_provider_authorization_url(connect, app, connector, capsys):
    authorize_url, default_scopes, offline, pkce, method = PROVIDERS[connector]
    cred = create_credential(connect, connector, oauth_scope="files.read")
    assert cred["oauth_url"] == authorize_url
    assert cred["oauth_token_endpoint_auth_method"] == method
    assert cred["oauthPkceCodeChallengeMethod"] == ("S256" if pkce else None)

    url = initialise(connect, app["id"], connector, cred)["url"]
    with capsys.disabled():
        print(f"\n{connector}: {url}")
    assert url.startswith(authorize_url + "?")
    q = query_of(url)
    assert q["response_type"] == ["code"] and q["client_id"] == [f"{connector}-client-id"]
    assert q["redirect_uri"] == [f"{CALLBACK}/{cred['id']}"] == [cred["redirect_uri"]]
    assert len(q["state"][0]) >= 43
    expected_scopes = ["files.read", *default_scopes] + (["offline_access"] if offline == "offline_access" else [])
    assert q["scope"][0].split(" ") == expected_scopes
    if isinstance(offline, dict):
        for key, value in offline.items():
            assert q[key] == [value]
    assert "access_type" not in q or connector == "google"
    assert "token_access_type" not in q or connector == "dropbox"
    assert q["prompt"] == ["consent" if connector == "google" else "login"]  # Google refuses prompt=login
    if pkce:
        assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
    else:
        assert "code_challenge" not in q
    if connector == "notion":
        assert q["owner"] == ["user"]

    # disableOfflineAccess drops the offline ask in every dialect
    q = query_of(initialise(connect, app["id"], connector, cred, disableOfflineAccess=True)["url"])
    assert "access_type" not in q and "token_access_type" not in q
    assert "offline_access" not in q["scope"][0].split(" ")


def test_generic_oauth2_url_follows_the_credential(connect, app):
    cred = create_credential(connect, "oauth2", oauth_url="https://idp.example.com/authorize?tenant=acme",
                             oauth_token_url="https://idp.example.com/token", oauth_scope="read,write",
                             oauthPkceCodeChallengeMethod="plain")
    assert cred["oauth_token_endpoint_auth_method"] == "client_secret_basic"
    url = initialise(connect, app["id"], "oauth2", cred)["url"]
    q = query_of(url)
    assert url.startswith("https://idp.example.com/authorize?tenant=acme&response_type=code")
    assert q["scope"] == ["read write offline_access"]
    assert q["code_challenge_method"] == ["plain"] and len(q["code_challenge"][0]) == 64


def test_scopes_replace_the_credential_scope_and_join_the_defaults(connect, app):
    cred = create_credential(connect, "google", oauth_scope="https://www.googleapis.com/auth/drive")
    q = query_of(initialise(connect, app["id"], "google", cred, scopes=[
        "https://www.googleapis.com/auth/gmail.readonly", "email"])["url"])
    assert q["scope"] == ["https://www.googleapis.com/auth/gmail.readonly email openid"]


def test_prompt_rules(connect, app):
    cred = create_credential(connect, "oauth2", oauth_url="https://idp.example.com/authorize",
                             oauth_token_url="https://idp.example.com/token")
    url = initialise(connect, app["id"], "oauth2", cred, prompt="consent+select_account")["url"]
    assert "&prompt=consent+select_account" in url
    assert query_of(url)["prompt"] == ["consent select_account"]
    assert query_of(initialise(connect, app["id"], "oauth2", cred, prompt="frobnicate")["url"])["prompt"] == [
        "frobnicate"]
    assert query_of(initialise(connect, app["id"], "oauth2", cred, prompt="none")["url"])["prompt"] == ["none"]
    # approval_prompt in additionalParams: no default prompt
    q = query_of(initialise(connect, app["id"], "oauth2", cred, additionalParams="approval_prompt=force")["url"])
    assert "prompt" not in q and q["approval_prompt"] == ["force"]


def test_additional_params_are_appended_and_collisions_refused(connect, app):
    cred = create_credential(connect, "google")
    url = initialise(connect, app["id"], "google", cred,
                     additionalParams="login_hint=jane%40example.com&hd=example.com&include_granted_scopes=true")["url"]
    assert url.endswith("&login_hint=jane%40example.com&hd=example.com&include_granted_scopes=true")
    assert query_of(url)["login_hint"] == ["jane@example.com"]

    for params in ("scope=everything", "client_id=other", "redirect_uri=https%3A%2F%2Fevil.test", "state=x",
                   "prompt=consent", "code_challenge=x", "response_type=token", "access_type=online",
                   "hd=x&code_challenge_method=plain"):
        err = initialise(connect, app["id"], "google", cred, expect=400, additionalParams=params)
        assert list(err["error"]["details"]) == ["additionalParams"], params
    # with offline access disabled, the app may choose its own access_type
    q = query_of(initialise(connect, app["id"], "google", cred, disableOfflineAccess=True,
                            additionalParams="access_type=online")["url"])
    assert q["access_type"] == ["online"]
    err = initialise(connect, app["id"], "google", cred, expect=400, additionalParams="a&&=b=")
    assert "additionalParams" in err["error"]["details"]


def test_initialise_checks_the_credential_and_the_caller(connect, app):
    from connect_service.api.access_keys import create_access_key
    from connect_service.models import Organization

    cred = create_credential(connect, "github")
    err = initialise(connect, app["id"], "github", cred, expect=400, authorizeUrl="https://evil.test/authorize",
                     clientId="someone-else")
    assert set(err["error"]["details"]) == {"authorizeUrl", "clientId"}
    err = initialise(connect, app["id"], "github", cred, expect=400,
                     credential={"id": cred["id"], "organisationId": "org_other"})
    assert set(err["error"]["details"]) == {"credential.organisationId"}
    err = initialise(connect, app["id"], "github", cred, expect=400,
                     credential={"id": "ccfg_missing", "organisationId": connect.org_id})
    assert set(err["error"]["details"]) == {"credential.id"}
    err = initialise(connect, app["id"], "google", cred, expect=400)  # a github credential on the google path
    assert "serves connector 'github'" in err["error"]["details"]["credential.id"]
    assert initialise(connect, str(uuid.uuid4()), "github", cred, expect=404)
    assert initialise(connect, app["id"], "no-such-connector", cred, expect=404)
    r = connect.client.post(f"/v1/embed/{app['id']}/connector/github/oauth2/initialise", headers=connect.auth)
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {"input": "cannot be blank"}
    # the path is resolved before the body is judged: an unknown app or connector is 404 even with no body
    for path in (f"/v1/embed/{uuid.uuid4()}/connector/github", f"/v1/embed/{app['id']}/connector/no-such-connector"):
        r = connect.client.post(f"{path}/oauth2/initialise", headers=connect.auth)
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
    r = connect.client.post(f"/v1/embed/{app['id']}/connector/github/oauth2/initialise", json={"x": 1})
    assert r.status_code == 401

    # another org's key: the app is not found; its credential is not usable
    with connect.app.app_context(), database.connection_context():
        other = Organization.create(name="Other")
        _, other_key = create_access_key(other, "t")
    r = connect.client.post(f"/v1/embed/{app['id']}/connector/github/oauth2/initialise",
                            headers={"Authorization": f"Bearer {other_key}"},
                            json={"authorizeUrl": cred["oauth_url"], "clientId": cred["oauth_client_id"],
                                  "credential": {"id": cred["id"], "organisationId": connect.org_id}})
    assert r.status_code == 404

    # an app-owned credential of another app is not available
    other_app = connect.create_app()
    own = create_credential(connect, "box", app_id=other_app["id"])
    err = initialise(connect, app["id"], "box", own, expect=400)
    assert "not available to this app" in err["error"]["details"]["credential.id"]


def test_initialise_creates_a_pending_connection_for_the_customer(connect, app):
    cred = create_credential(connect, "dropbox")
    initialise(connect, app["id"], "dropbox", cred, customerId="cust-42")
    initialise(connect, app["id"], "dropbox", cred, customerId="cust-42")  # reused, not duplicated
    initialise(connect, app["id"], "dropbox", cred)
    with connect.app.app_context(), database.connection_context():
        rows = list(Connection.select().where(Connection.app == app["id"]))
        assert sorted(((c.customer_id, c.status, c.type) for c in rows), key=lambda t: t[0] or "") == [
            (None, "pending", "dynamiq.connections.Dropbox"), ("cust-42", "pending", "dynamiq.connections.Dropbox")]
    # a refused URL stores nothing
    initialise(connect, app["id"], "dropbox", cred, expect=400, customerId="cust-43", additionalParams="state=1")
    with connect.app.app_context(), database.connection_context():
        assert not Connection.select().where(Connection.customer_id == "cust-43").exists()


def test_embed_flow_completes_against_the_test_server(connect, app):
    with OAuthTestServer() as server:
        server.auto_approve = True
        cred = create_credential(connect, "oauth2", oauth_url=server.authorize_url, oauth_token_url=server.token_url,
                                 oauth_client_id="embed-client", oauth_client_secret="embed-secret",
                                 oauth_token_endpoint_auth_method="client_secret_post", oauth_scope="read")
        server.add_client("embed-client", "embed-secret", [cred["redirect_uri"]],
                          token_endpoint_auth_method="client_secret_post")
        url = initialise(connect, app["id"], "oauth2", cred, customerId="cust-1", scopes=["write"],
                         prompt="consent", additionalParams="ui_locales=de")["url"]
        r = requests.get(url, allow_redirects=False, timeout=10)
        sent = server.authorize_requests[-1]
        assert sent["scope"] == "write offline_access" and sent["prompt"] == "consent" and sent["ui_locales"] == "de"
        done = connect.client.get(r.headers["Location"])
        assert done.status_code == 303
        assert done.headers["Location"].startswith("https://app.example/oauth/done?status=success")
        assert server.errors == []
    with connect.app.app_context(), database.connection_context():
        conn = Connection.get(Connection.app == app["id"], Connection.customer_id == "cust-1")
        assert conn.status == "active"
        assert read_settings(conn)["oauth"]["credentials"]["scope"] == "write offline_access"


# --------------------------------------------------------------------------- token requests per provider


def _provider(connect, connector, **settings):
    from connect_service.models import Credential

    cred = Credential(id="ccfg_x", org="org_x", connector_name=connector, oauth_client_id="cid", settings=settings)
    with connect.app.app_context():
        return oauth.provider_for(cred)


@pytest.mark.parametrize("connector, method, fmt", [
    ("google", "client_secret_post", "data"), ("github", "client_secret_post", "data"),
    ("dropbox", "client_secret_basic", "data"), ("box", "client_secret_post", "data"),
    ("notion", "client_secret_basic", "json"), ("microsoft", "client_secret_post", "data"),
    ("oauth2", "client_secret_basic", "data"),
])
def test_token_request_shape_per_provider(connect, connector, method, fmt):
    provider = _provider(connect, connector)
    kwargs = provider.prepare_token_request({"grant_type": "authorization_code", "code": "c"},
                                            client_id="my id", client_secret="p@ss:word")
    body = kwargs[fmt]
    assert kwargs["headers"]["Accept"] == "application/json"
    assert body["grant_type"] == "authorization_code" and body["code"] == "c"
    if method == "client_secret_basic":
        scheme, value = kwargs["headers"]["Authorization"].split(" ")
        assert scheme == "Basic" and base64.b64decode(value) == b"my%20id:p%40ss%3Aword"
        assert "client_secret" not in body
    else:
        assert "Authorization" not in kwargs["headers"]
        assert body["client_id"] == "my id" and body["client_secret"] == "p@ss:word"
    if connector == "notion":
        assert kwargs["headers"]["Notion-Version"]


def test_provider_endpoints_are_the_documented_ones(connect):
    expected = {
        "google": ("https://oauth2.googleapis.com/token", "https://oauth2.googleapis.com/revoke"),
        "github": ("https://github.com/login/oauth/access_token", "https://api.github.com/applications/cid/token"),
        "dropbox": ("https://api.dropboxapi.com/oauth2/token", "https://api.dropboxapi.com/2/auth/token/revoke"),
        "box": ("https://api.box.com/oauth2/token", "https://api.box.com/oauth2/revoke"),
        "notion": ("https://api.notion.com/v1/oauth/token", "https://api.notion.com/v1/oauth/revoke"),
        "microsoft": ("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token", None),
    }
    for connector, (token_url, revoke_url) in expected.items():
        provider = _provider(connect, connector, tenant="contoso.onmicrosoft.com")
        assert (provider.token_url, provider.revoke_url) == (token_url, revoke_url), connector


def test_build_authorization_url_directly_is_the_same_builder(connect):
    from connect_service.models import Credential

    cred = Credential(id="ccfg_y", org="org_y", connector_name="microsoft", oauth_client_id="ms-client",
                      settings={"tenant": "organizations"}, oauth_scope="Mail.Read")
    with connect.app.app_context():
        url = oauth.build_authorization_url(cred, state="s" * 43, redirect_uri=CALLBACK, code_challenge="c" * 43,
                                            code_challenge_method="S256", prompt="select_account")
    assert url.startswith("https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize?")
    q = query_of(url)
    assert q["scope"] == ["Mail.Read openid profile email User.Read offline_access"]
    assert q["prompt"] == ["select_account"] and q["state"] == ["s" * 43]


# --------------------------------------------------------------------------- revocation dialects


class _Recorder:
    """A tiny HTTP server on 127.0.0.1 that records requests (stands in for providers' non-RFC revoke APIs)."""

    def __init__(self, status: int = 200):
        import http.server
        import threading

        recorder = self
        self.requests: list[dict] = []
        self.status = status

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                          "body": self.rfile.read(length).decode()})
                self.send_response(recorder.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("connector, status, check", [
    ("dropbox", 200, lambda r: r["method"] == "POST" and r["headers"]["Authorization"] == "Bearer at-1"
        and r["body"] == ""),
    ("github", 204, lambda r: r["method"] == "DELETE" and r["path"] == "/applications/cid/token"
        and r["headers"]["Authorization"] == "Basic " + base64.b64encode(b"cid:csecret").decode()
        and r["body"] == '{"access_token": "at-1"}'),
    ("notion", 200, lambda r: r["method"] == "POST" and r["headers"]["Authorization"].startswith("Basic ")
        and r["headers"]["Notion-Version"] and r["body"] == '{"token": "at-1"}'),
    ("google", 200, lambda r: r["method"] == "POST" and "Authorization" not in r["headers"]
        and r["body"] == "token=rt-1&token_type_hint=refresh_token"),
    ("box", 200, lambda r: r["method"] == "POST"
        and parse_qs(r["body"]) == {"token": ["rt-1"], "token_type_hint": ["refresh_token"],
                                    "client_id": ["cid"], "client_secret": ["csecret"]}),
])
def test_revocation_dialects(connect, connector, status, check):
    from connect_service.models import Credential

    recorder = _Recorder(status)
    try:
        path = "/applications/{client_id}/token" if connector == "github" else "/revoke"
        cred = Credential(id="ccfg_r", org="org_r", connector_name=connector, oauth_client_id="cid",
                          settings={"revoke_url": recorder.url + path})
        settings = {"oauth": {"credentials": {"access_token": "at-1", "refresh_token": "rt-1"}}}
        with connect.app.app_context():
            oauth.set_client_secret(cred, "csecret")
            assert oauth.revoke_tokens(cred, settings) is True
            recorder.status = 500
            assert oauth.revoke_tokens(cred, settings) is False  # a failure is reported, never raised
        assert check(recorder.requests[0]), recorder.requests[0]
    finally:
        recorder.close()


def test_revocation_without_endpoint_or_unreachable_is_false(connect):
    from connect_service.models import Credential

    settings = {"oauth": {"credentials": {"access_token": "at-1"}}}
    with connect.app.app_context():
        ms = Credential(id="ccfg_m", org="o", connector_name="microsoft", oauth_client_id="c", settings={})
        assert oauth.revoke_tokens(ms, settings) is False
        gone = Credential(id="ccfg_g", org="o", connector_name="oauth2", oauth_client_id="c",
                          settings={"revoke_url": "http://127.0.0.1:9/revoke"})
        assert oauth.revoke_tokens(gone, settings) is False


# --------------------------------------------------------------------------- provider quirks, client limits


@pytest.mark.parametrize("github_error, code", [
    ("bad_refresh_token", "invalid_grant"), ("bad_verification_code", "invalid_grant"),
    ("incorrect_client_credentials", "invalid_client"), ("unsupported_grant_type", "unsupported_grant_type"),
])
def test_github_errors_with_http_200_map_to_rfc_6749_codes(connect, github_error, code):
    provider = _provider(connect, "github")
    with pytest.raises(oauth.ProviderError) as raised:
        provider.parse_token_response(200, {"error": github_error, "error_description": "The token is dead.",
                                            "error_uri": "https://docs.github.com/"})
    assert raised.value.code == code
    assert (github_error if github_error != code else "The token is dead.") in raised.value.description
    assert provider.parse_token_response(200, {"access_token": "gho_x", "token_type": "bearer"})["access_token"]


@pytest.mark.parametrize("lease, timeout, expected_total, expected_timeout", [
    (60, 10.0, 30.0, 10.0), (10, 10.0, 5.0, 2.5), (600, 10.0, 60.0, 10.0),
])
def test_token_client_gives_up_well_within_the_refresh_lease(connect, lease, timeout, expected_total,
                                                             expected_timeout):
    connect.app.config["CONNECT"]["refresh_lease_seconds"] = lease
    connect.app.config["CONNECT"]["http_timeout_seconds"] = timeout
    with connect.app.app_context():
        client = oauth.oauth_client()
    assert client.max_total_time == expected_total <= lease / 2
    assert max(client.timeout) == expected_timeout


def test_concurrent_initialise_for_one_customer_creates_one_connection(connect, app):
    """Parallel seed-004 initialises (PostgreSQL included) find-or-create a single pending connection."""
    import threading

    cred = create_credential(connect, "dropbox")
    for attempt in range(4):
        customer = f"cust-race-{attempt}"
        barrier = threading.Barrier(8)
        codes = []

        def go():
            client = connect.app.test_client()
            payload = {"authorizeUrl": cred["oauth_url"], "clientId": cred["oauth_client_id"],
                       "credential": {"id": cred["id"], "organisationId": connect.org_id}, "customerId": customer}
            barrier.wait()
            codes.append(client.post(f"/v1/embed/{app['id']}/connector/dropbox/oauth2/initialise", json=payload,
                                     headers=connect.auth).status_code)

        threads = [threading.Thread(target=go) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [200] * 8
        with connect.app.app_context(), database.connection_context():
            count = Connection.select().where(Connection.app == app["id"], Connection.customer_id == customer).count()
        assert count == 1, f"attempt {attempt}: {count} connections"
