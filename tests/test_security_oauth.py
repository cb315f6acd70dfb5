"""Issue 12, OAuth side: each attack of the adversarial review, reproduced and shown refused.

- item 1: the cross-tenant mix-up (per-credential redirect URIs, the callback's credential check,
  RFC 9207 ``iss``), against the real Authlib server of ``tests/support/oauth_server.py``;
- item 2: the credential start link (single use, short-lived, never logged);
- item 5: rate limits on flow starts, the per-user cap on pending sessions, webhook replays;
- item 10: ``additionalParams`` refusals; end users never see credential ids or provider URLs.
"""
from __future__ import annotations

import json
import logging
import uuid
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
from flask import Flask, jsonify, redirect, request

from connect_service import oauth
from connect_service.access_keys import create_access_key
from connect_service.db import database
from connect_service.models import AuthorizationSession, Connection, Credential, Organization
from connect_service.testing import make_config

from tests.support.oauth_server import OAuthTestServer
from tests.support.pipedream_server import PipedreamTestServer
from tests.support.serving import BackgroundWSGIServer

PUBLIC = "http://connect.test"
OAUTH2 = "dynamiq.connections.OAuth2"


@pytest.fixture(scope="module")
def provider():
    """Org B's real authorization server (Authlib): exact redirect URIs, PKCE, codes bound to them."""
    with OAuthTestServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _reset(provider):
    provider.reset_records()
    provider.auto_approve, provider.send_iss, provider.issuer = True, False, provider.url
    yield
    assert provider.errors == []


def requirement(key: str = "account", **data) -> dict:
    return {"key": key, "type": "connection", "title": f"Connect {key}",
            "spec": {"type": "connection", "data": {"type": OAUTH2, **data}}}


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def second_org(connect) -> dict[str, str]:
    """Another tenant of the same service, with an Access Key of its own."""
    with connect.app.app_context(), database.connection_context():
        org = Organization.create(name="Other org")
        _, key = create_access_key(org, "attacker")
    return {"Authorization": f"Bearer {key}"}


def credential(connect, auth, **body) -> dict:
    body = {"name": "OAuth", "mode": "OAUTH", "connector_name": "oauth2", "oauth_scope": "read",
            "oauth_grant_type": "authorization_code", "oauth_token_endpoint_auth_method": "client_secret_post",
            **body}
    r = connect.client.post("/v1/credentials", json=body, headers=auth)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def registered_credential(connect, provider, auth=None, **extra) -> dict:
    """A credential of ``provider`` whose client registered exactly the credential's own redirect URI."""
    client_id, secret = f"client-{uuid.uuid4().hex[:8]}", f"secret-{uuid.uuid4().hex}"
    cred = credential(connect, auth or connect.auth, oauth_url=provider.authorize_url,
                      oauth_token_url=provider.token_url, oauth_client_id=client_id, oauth_client_secret=secret,
                      **extra)
    provider.add_client(client_id, secret, [cred["redirect_uri"]], token_endpoint_auth_method="client_secret_post")
    return cred


def authorize(connect, token, req_id, **query):
    return connect.client.post(f"/v1/connect/requirements/{req_id}/oauth2/authorize", query_string=query,
                               headers={"Authorization": f"Bearer {token}"})


def connection_row(connect, conn_id) -> Connection:
    with connect.app.app_context(), database.connection_context():
        return Connection.get_by_id(conn_id)


def session_rows(connect) -> list[AuthorizationSession]:
    with connect.app.app_context(), database.connection_context():
        return list(AuthorizationSession.select().order_by(AuthorizationSession.created_at))


def user_flow(connect, cred_kwargs=None, *, provider, user="user-1"):
    """An app whose requirement the credential serves, and a started flow of ``user``."""
    cred = registered_credential(connect, provider, **(cred_kwargs or {}))
    app = connect.create_app_with_requirements([requirement(credential_id=cred["id"])])
    token = connect.token(app, user)
    req_id = connect.requirement_id(app, "account")
    r = authorize(connect, token, req_id)
    assert r.status_code == 201, r.get_json()
    return cred, app, token, req_id, r.get_json()


# --------------------------------------------------------------------------- item 1: the mix-up


class AttackerServer(BackgroundWSGIServer):
    """Org A's "authorization server": forwards victims to B's provider, keeps every code it is sent.

    ``/authorize`` keeps A's ``state`` but swaps in the PKCE challenge (and redirect URI) of the
    attacker's parked flow at B, as in the review; ``/token`` records the code the service posts.
    """

    thread_name = "attacker"

    def __init__(self, provider: OAuthTestServer):
        self.host, self._port = "127.0.0.1", 0
        self.provider = provider
        self.parked: dict[str, str] = {}
        self.codes: list[dict] = []
        self.app = Flask("attacker")

        @self.app.get("/authorize")
        def authorize():
            params = request.args.to_dict()
            params.update({k: self.parked[k] for k in ("code_challenge", "code_challenge_method", "redirect_uri",
                                                       "client_id") if k in self.parked})
            return redirect(f"{self.provider.authorize_url}?{urlencode(params)}", 302)

        @self.app.post("/token")
        def token():
            self.codes.append(request.form.to_dict())
            return jsonify(error="invalid_grant"), 400

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def test_the_whole_mix_up_attack_is_refused(connect, provider):
    # Org B: a credential at its provider, an app, and the attacker signed up as one of its end users.
    cred_b = registered_credential(connect, provider)
    app_b = connect.create_app_with_requirements([requirement()])
    req_b = connect.requirement_id(app_b, "account")
    assert cred_b["redirect_uri"] == f"{PUBLIC}/v1/connect/oauth2/callback/{cred_b['id']}"

    with AttackerServer(provider) as attacker:
        # 1. org A registers B's client id with authorize and token URLs of its own
        org_a = second_org(connect)
        cred_a = credential(connect, org_a, oauth_url=f"{attacker.url}/authorize",
                            oauth_token_url=f"{attacker.url}/token", oauth_client_id=cred_b["oauth_client_id"],
                            oauth_client_secret="whatever")
        assert cred_a["redirect_uri"] != cred_b["redirect_uri"]

        # 2. the attacker, as an end user of B's app, starts a B flow and parks it
        attacker_token = connect.token(app_b, "attacker@evil.test")
        parked = authorize(connect, attacker_token, req_b).get_json()
        parked_query = query_of(parked["authorization_url"])
        assert parked_query["redirect_uri"] == cred_b["redirect_uri"]
        attacker.parked = parked_query

        # 3. a victim is sent through one of A's flows: A's authorize endpoint forwards them to B's
        #    provider with A's state but the parked flow's PKCE challenge (and B's redirect URI)
        with connect.app.app_context(), database.connection_context():  # one of A's flows, as its start link
            cred_a_row = Credential.get_by_id(cred_a["id"])
            conn_a = oauth.pending_connection_for(cred_a_row, oauth.connection_type_for(cred_a_row), app=None,
                                                  customer_id=None)
            started = oauth.begin_authorization(cred_a_row, conn_a)
        assert query_of(started.url)["redirect_uri"] == cred_a["redirect_uri"]
        hop = requests.get(started.url, allow_redirects=False, timeout=10)
        assert hop.status_code == 302
        back = requests.get(hop.headers["Location"], allow_redirects=False, timeout=10)
        assert back.status_code in (302, 303)
        location = back.headers["Location"]
        # B's provider sends the victim's code to B's own callback, with A's state
        assert location.startswith(cred_b["redirect_uri"] + "?")
        victim = query_of(location)

        # 4. the service refuses A's state at B's callback: no code reaches A's token URL
        page = connect.client.get(location)
        assert page.status_code == 400
        assert attacker.codes == []
        assert provider.token_calls() == 0
        assert connection_row(connect, conn_a.id).status == "pending"
        # the session is consumed: the same state is refused at A's own callback too
        again = connect.client.get(with_query(cred_a["redirect_uri"].replace(PUBLIC, ""), **victim))
        assert again.status_code == 400 and attacker.codes == []

        # 5./6. without the code, the parked flow cannot complete with the victim's account
        parked_conn = connection_row(connect, parked["connection_id"])
        assert parked_conn.status == "pending" and parked_conn.settings_encrypted is None

        # had A's server forwarded its own redirect URI, B's provider would have refused it
        attacker.parked = {k: v for k, v in parked_query.items() if k != "redirect_uri"}
        with connect.app.app_context(), database.connection_context():
            started = oauth.begin_authorization(cred_a_row, conn_a)
        hop = requests.get(started.url, allow_redirects=False, timeout=10)
        refused = requests.get(hop.headers["Location"], allow_redirects=False, timeout=10)
        assert refused.status_code == 400 and "code=" not in refused.headers.get("Location", "")


def test_code_and_state_of_credential_b_at_credential_a_callback_are_refused(connect, provider):
    cred_a = registered_credential(connect, provider)
    cred_b, _, _, _, started = user_flow(connect, provider=provider)
    location = requests.get(started["authorization_url"], allow_redirects=False, timeout=10).headers["Location"]
    assert location.startswith(cred_b["redirect_uri"] + "?")
    stolen = query_of(location)

    r = connect.client.get(f"/v1/connect/oauth2/callback/{cred_a['id']}", query_string=stolen,
                           headers={"Accept": "application/json"})
    assert r.status_code == 400 and r.get_json()["error"]["details"]["error"] == "invalid_state"
    assert provider.token_calls() == 0
    conn = connection_row(connect, started["connection_id"])
    assert (conn.status, conn.status_reason, conn.settings_encrypted) == ("pending", None, None)
    [session] = session_rows(connect)
    assert session.consumed_at is not None
    # consumed: the right callback now refuses the state as used, still without a token request
    assert connect.client.get(location).status_code == 400
    assert provider.token_calls() == 0


def test_the_redirect_uri_is_per_credential_everywhere(connect, provider):
    cred, _, _, _, started = user_flow(connect, provider=provider)
    own = cred["redirect_uri"]
    assert own == f"{PUBLIC}/v1/connect/oauth2/callback/{cred['id']}"
    assert query_of(started["authorization_url"])["redirect_uri"] == own
    for r in (connect.client.get(f"/v1/credentials/{cred['id']}", headers=connect.auth),
              connect.client.patch(f"/v1/credentials/{cred['id']}", json={"name": "renamed"}, headers=connect.auth)):
        assert r.status_code == 200 and r.get_json()["redirect_uri"] == own
    listed = connect.client.get("/v1/credentials", headers=connect.auth).get_json()["data"]
    assert [c["redirect_uri"] for c in listed] == [own]

    location = requests.get(started["authorization_url"], allow_redirects=False, timeout=10).headers["Location"]
    assert connect.client.get(location).status_code == 200
    [call] = provider.token_requests
    assert call["form"]["redirect_uri"] == own and call["status"] == 200


def test_the_shared_callback_is_gone(connect, provider):
    _, _, _, _, started = user_flow(connect, provider=provider)
    state = query_of(started["authorization_url"])["state"]
    r = connect.client.get("/v1/connect/oauth2/callback", query_string={"state": state, "code": "x"})
    assert r.status_code == 404
    assert connect.client.get("/v1/connect/oauth2/callback/", query_string={"state": state}).status_code == 404
    assert provider.token_calls() == 0


def test_an_iss_the_credential_does_not_expect_is_refused(connect, provider):
    """RFC 9207 without a declared issuer: an ``iss`` is compared with the authorization server's origin."""
    provider.send_iss = True
    provider.issuer = "https://login.other-provider.example"
    _, _, _, _, started = user_flow(connect, provider=provider)
    location = requests.get(started["authorization_url"], allow_redirects=False, timeout=10).headers["Location"]
    page = connect.client.get(location)
    assert page.status_code == 400 and b"iss" in page.data
    assert provider.token_calls() == 0

    provider.issuer = provider.url  # the server's own issuer identifier completes
    _, _, _, _, started = user_flow(connect, provider=provider, user="user-2")
    location = requests.get(started["authorization_url"], allow_redirects=False, timeout=10).headers["Location"]
    assert connect.client.get(location).status_code == 200


def test_the_test_provider_refuses_an_unregistered_redirect_uri(provider):
    provider.add_client("strict-client", "s", ["http://connect.test/v1/connect/oauth2/callback/ccfg_1"])
    base = {"response_type": "code", "client_id": "strict-client", "state": "s1"}
    for uri in ("http://connect.test/v1/connect/oauth2/callback/ccfg_2",
                "http://connect.test/v1/connect/oauth2/callback"):
        r = requests.get(provider.authorize_url, params={**base, "redirect_uri": uri}, allow_redirects=False,
                         timeout=10)
        assert r.status_code == 400 and "Location" not in r.headers
    ok = requests.get(provider.authorize_url, params={**base, "redirect_uri": "http://connect.test/v1/connect/"
                                                                              "oauth2/callback/ccfg_1"},
                      allow_redirects=False, timeout=10)
    assert ok.status_code == 302


# --------------------------------------------------------------------------- item 2: the start link


def test_the_start_link_is_single_use(connect, provider):
    cred = registered_credential(connect, provider)
    browser = connect.app.test_client()
    first = browser.get(cred["redirect_url"])
    assert first.status_code == 303 and first.headers["Location"].startswith(provider.authorize_url)
    second = connect.app.test_client().get(cred["redirect_url"])
    assert second.status_code == 400 and b"expired" in second.data
    assert len(session_rows(connect)) == 1
    # every read of the credential hands out a fresh one
    fresh = connect.client.get(f"/v1/credentials/{cred['id']}", headers=connect.auth).get_json()["redirect_url"]
    assert fresh != cred["redirect_url"] and connect.app.test_client().get(fresh).status_code == 303


def test_the_start_link_lives_fifteen_minutes_by_default(connect, provider, monkeypatch):
    assert connect.app.config["CONNECT"]["start_link_max_age_seconds"] == 900
    cred = registered_credential(connect, provider)
    import itsdangerous.timed  # the signer's own clock, moved forward instead of waiting
    real = itsdangerous.timed.TimestampSigner.get_timestamp
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: real(self) + 901)
    r = connect.app.test_client().get(cred["redirect_url"])
    assert r.status_code == 400 and b"expired" in r.data
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: real(self) + 899)
    assert connect.app.test_client().get(cred["redirect_url"]).status_code == 303


@pytest.mark.parametrize("connect_config", [{"start_link_max_age_seconds": 60}], indirect=True)
def test_the_start_link_lifetime_is_a_setting(connect, provider, monkeypatch):
    cred = registered_credential(connect, provider)
    import itsdangerous.timed
    real = itsdangerous.timed.TimestampSigner.get_timestamp
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: real(self) + 61)
    r = connect.app.test_client().get(cred["redirect_url"])
    assert r.status_code == 400 and b"expired" in r.data


def test_the_start_link_never_reaches_the_access_log(connect, provider, caplog):
    cred = registered_credential(connect, provider)
    signed = cred["redirect_url"].rsplit("/", 1)[1]
    caplog.clear()
    with caplog.at_level("INFO", logger="connect_service"):
        assert connect.app.test_client().get(cred["redirect_url"]).status_code == 303
    paths = [r.fields["path"] for r in caplog.records if r.name == "connect_service.access"]
    assert paths == ["/v1/connect/oauth2/start/<signed>"]
    assert not any(signed in r.getMessage() or signed in json.dumps(getattr(r, "fields", {}), default=str)
                   for r in caplog.records)


# --------------------------------------------------------------------------- item 5: starts and webhooks


@pytest.fixture
def connect_config(tmp_path, request):
    return make_config(tmp_path, **getattr(request, "param", {}))


@pytest.mark.parametrize("connect_config", [{"rate_limit_oauth_starts_per_minute": 3}], indirect=True)
def test_authorize_is_rate_limited_per_app_and_user(connect, provider):
    cred, app, token, req_id, _ = user_flow(connect, provider=provider)
    for _ in range(2):
        assert authorize(connect, token, req_id).status_code == 201
    r = authorize(connect, token, req_id)
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert authorize(connect, connect.token(app, "someone-else"), req_id).status_code == 201


@pytest.mark.parametrize("connect_config", [{"rate_limit_oauth_starts_per_address_per_minute": 3}],
                         indirect=True)
def test_authorize_is_rate_limited_per_client_address(connect, provider):
    cred, app, token, req_id, _ = user_flow(connect, provider=provider)
    assert authorize(connect, connect.token(app, "u2"), req_id).status_code == 201
    assert authorize(connect, connect.token(app, "u3"), req_id).status_code == 201
    r = authorize(connect, connect.token(app, "u4"), req_id)
    assert r.status_code == 429
    other = connect.client.post(f"/v1/connect/requirements/{req_id}/oauth2/authorize",
                                headers={"Authorization": f"Bearer {connect.token(app, 'u5')}"},
                                environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert other.status_code == 201


@pytest.mark.parametrize("connect_config", [{"rate_limit_oauth_starts_per_minute": 2}], indirect=True)
def test_hosted_page_oauth_starts_are_rate_limited(connect, provider):
    cred, app, token, req_id, _ = user_flow(connect, provider=provider)  # one start used
    browser = connect.app.test_client()
    entry = browser.get(f"/connect?token={token}")
    page_url = entry.headers["Location"]
    html = browser.get(page_url).get_data(as_text=True)
    start = html.split(f"/oauth2/{req_id}/start?csrf=", 1)[1].split('"', 1)[0]
    url = f"{urlsplit(page_url).path}/oauth2/{req_id}/start?csrf={start}"
    assert browser.get(url).status_code == 302
    r = browser.get(url)
    assert r.status_code == 429 and "Too many" in r.get_data(as_text=True)


@pytest.mark.parametrize("connect_config", [{"oauth_pending_sessions_per_user": 3}], indirect=True)
def test_pending_sessions_are_capped_per_user_oldest_dropped(connect, provider):
    cred, app, token, req_id, first = user_flow(connect, provider=provider)
    starts = [first] + [authorize(connect, token, req_id).get_json() for _ in range(3)]
    states = [query_of(s["authorization_url"])["state"] for s in starts]
    assert len(session_rows(connect)) == 3
    oldest = connect.client.get(f"/v1/connect/oauth2/callback/{cred['id']}",
                                query_string={"state": states[0], "code": "x"})
    assert oldest.status_code == 400
    location = requests.get(starts[-1]["authorization_url"], allow_redirects=False, timeout=10).headers["Location"]
    assert connect.client.get(location).status_code == 200
    # another user's sessions are not counted against this one's
    authorize(connect, connect.token(app, "user-2"), req_id)
    assert len([s for s in session_rows(connect) if s.consumed_at is None]) == 3


@pytest.mark.parametrize("connect_config", [{"oauth_pending_sessions_per_user": 2}], indirect=True)
def test_org_level_starts_are_capped_per_credential(connect, provider):
    cred = registered_credential(connect, provider)
    other = registered_credential(connect, provider)
    for c in (cred, cred, cred, other):
        link = connect.client.get(f"/v1/credentials/{c['id']}", headers=connect.auth).get_json()["redirect_url"]
        assert connect.app.test_client().get(link).status_code == 303
    pending = [s for s in session_rows(connect) if s.consumed_at is None]
    assert sorted(s.credential_id for s in pending) == sorted([cred["id"], cred["id"], other["id"]])


PROJECT, PD_CLIENT, PD_SECRET = "proj_sec", "pd_client_sec", "pd_secret_sec"
GMAIL = {"key": "gmail", "type": "pipedream_account", "title": "Gmail",
         "spec": {"type": "pipedream_account", "data": {"app_slug": "gmail"}}}


@pytest.fixture
def pd():
    server = PipedreamTestServer().start()
    server.add_client(PD_CLIENT, PD_SECRET)
    server.add_project(PROJECT)
    try:
        yield server
    finally:
        server.stop()


def pipedream_webhook(connect, pd):
    """A linked flow's webhook delivery: ``(deliver, uri, payload)`` after the platform finished it."""
    r = connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "Pipedream", "mode": "OAUTH", "connector_name": "pipedream", "oauth_client_id": PD_CLIENT,
        "oauth_client_secret": PD_SECRET, "oauth_grant_type": "client_credentials",
        "settings": {"project_id": PROJECT, "environment": "production", "api_base_url": pd.url}})
    assert r.status_code == 201, r.get_json()
    app = connect.create_app_with_requirements([GMAIL])
    token = connect.token(app, "user-1")
    rid = connect.requirement_id(app, "gmail")
    assert connect.client.post(f"/v1/connect/requirements/{rid}/accounts",
                               headers={"Authorization": f"Bearer {token}"}).status_code == 201

    def deliver(uri, payload):
        parts = urlsplit(uri)
        return connect.client.post(parts.path, data=json.dumps(payload), content_type="application/json",
                                   base_url=f"{parts.scheme}://{parts.netloc}")

    first = pd.complete_link(pd.connect_tokens[-1]["token"], "gmail", deliver=deliver)
    assert first.status_code == 200, first.get_json()
    return deliver, pd.webhook_deliveries[-1]["uri"], pd.webhook_deliveries[-1]["payload"]


def test_a_replayed_webhook_event_is_not_fetched_again(connect, pd):
    deliver, uri, payload = pipedream_webhook(connect, pd)
    asked = len(pd.account_requests)
    replay = deliver(uri, payload)
    assert replay.status_code == 200 and replay.get_json() == {"message": "recorded"}
    assert len(pd.account_requests) == asked


@pytest.mark.parametrize("connect_config", [{"rate_limit_webhook_per_minute": 3}], indirect=True)
def test_platform_lookups_per_webhook_url_are_throttled(connect, pd):
    deliver, uri, payload = pipedream_webhook(connect, pd)  # one delivery counted
    bogus = [dict(payload, account={**payload["account"], "id": f"apn_fake{i}"}) for i in range(3)]
    assert deliver(uri, bogus[0]).status_code == 400
    assert deliver(uri, bogus[1]).status_code == 400
    asked = len(pd.account_requests)
    r = deliver(uri, bogus[2])
    assert r.status_code == 429 and len(pd.account_requests) == asked


# --------------------------------------------------------------------------- item 10


@pytest.mark.parametrize("name", ["request", "request_uri", "response_mode"])
def test_additional_params_may_not_set_request_objects_or_the_response_mode(connect, provider, name):
    cred = registered_credential(connect, provider)
    app = connect.create_app()
    r = connect.client.post(f"/v1/embed/{app['id']}/connector/oauth2/oauth2/initialise", headers=connect.auth,
                            json={"authorizeUrl": provider.authorize_url, "clientId": cred["oauth_client_id"],
                                  "credential": {"id": cred["id"], "organisationId": connect.org_id},
                                  "additionalParams": f"{name}=https%3A%2F%2Fevil.example%2Fr"})
    assert r.status_code == 400 and "additionalParams" in r.get_json()["error"]["details"]


def test_end_users_never_see_credential_ids_or_provider_urls(connect, provider, caplog):
    first = registered_credential(connect, provider)
    second = registered_credential(connect, provider)
    app = connect.create_app_with_requirements([requirement()])
    token = connect.token(app, "user-1")
    req_id = connect.requirement_id(app, "account")
    with caplog.at_level(logging.WARNING, logger="connect_service"):
        r = authorize(connect, token, req_id)  # two org-wide credentials: ambiguous
    text = r.get_data(as_text=True)
    assert r.status_code == 400
    assert first["id"] not in text and second["id"] not in text and "/v1/credentials" not in text
    assert any(first["id"] in rec.getMessage() for rec in caplog.records)  # the org sees it in its logs

    # a token endpoint that cannot be reached: the result page names no URL
    cred = credential(connect, connect.auth, oauth_url=provider.authorize_url,
                      oauth_token_url="http://127.0.0.1:9/token", oauth_client_id="c-unreachable",
                      oauth_client_secret="s")
    provider.add_client("c-unreachable", "s", [cred["redirect_uri"]])
    app2 = connect.create_app_with_requirements([requirement(credential_id=cred["id"])])
    r = authorize(connect, connect.token(app2, "user-1"), connect.requirement_id(app2, "account"))
    location = requests.get(r.get_json()["authorization_url"], allow_redirects=False, timeout=10).headers["Location"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="connect_service"):
        page = connect.client.get(location)
    assert page.status_code == 400
    assert "127.0.0.1:9" not in page.get_data(as_text=True) and cred["id"] not in page.get_data(as_text=True)
    assert any("127.0.0.1:9" in rec.getMessage() for rec in caplog.records)


def test_action_account_links_never_show_end_users_credential_ids(connect, pd, caplog):
    """The sibling of the OAuth start: an ambiguous platform credential is the org's problem, told in its log."""
    ids = []
    for name in ("Pipedream A", "Pipedream B"):
        r = connect.client.post("/v1/credentials", headers=connect.auth, json={
            "name": name, "mode": "OAUTH", "connector_name": "pipedream", "oauth_client_id": PD_CLIENT,
            "oauth_client_secret": PD_SECRET, "oauth_grant_type": "client_credentials",
            "settings": {"project_id": PROJECT, "environment": "production", "api_base_url": pd.url}})
        assert r.status_code == 201, r.get_json()
        ids.append(r.get_json()["id"])
    app = connect.create_app_with_requirements([GMAIL])
    token = connect.token(app, "user-1")
    rid = connect.requirement_id(app, "gmail")
    with caplog.at_level(logging.WARNING, logger="connect_service"):
        r = connect.client.post(f"/v1/connect/requirements/{rid}/accounts", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 400
    assert not any(i in r.get_data(as_text=True) for i in ids) and pd.url not in r.get_data(as_text=True)
    assert any(ids[0] in rec.getMessage() for rec in caplog.records)
