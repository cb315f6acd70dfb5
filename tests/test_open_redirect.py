"""Open redirects: after an OAuth flow the browser only goes to an exact entry of the app's return_urls."""
from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from connect_service.db import database
from connect_service.models import Connection
from tests.support.oauth_server import OAuthTestServer

PUBLIC = "http://connect.test"
CALLBACK = f"{PUBLIC}/v1/connect/oauth2/callback"
OAUTH2 = "dynamiq.connections.OAuth2"
RETURN = "https://app.example.com/connections/done"
RETURN_2 = "http://localhost:3000/callback?from=connect"

LOOKALIKES = [
    "//evil.example/connections/done",
    "/\\evil.example/connections/done",
    "\\\\evil.example/connections/done",
    "javascript:alert(document.cookie)",
    "JavaScript:alert(1)//https://app.example.com/connections/done",
    "data:text/html,<script>alert(1)</script>",
    "/connections/done",
    "https://app.example.com.evil.net/connections/done",
    "https://app.example.com@evil.net/connections/done",
    "https://evil.net/?https://app.example.com/connections/done",
    "https://evil.net#https://app.example.com/connections/done",
    "https://app-example.com/connections/done",
    "https://app.example.co/connections/done",
    "https://APP.EXAMPLE.COM/connections/done",
    "HTTPS://app.example.com/connections/done",
    "https://app.example.com./connections/done",
    "https://app.example.com:443/connections/done",
    "http://app.example.com/connections/done",
    "https://app.example.com/connections/done/",
    "https://app.example.com/connections/done?next=https://evil.net",
    "https://app.example.com/connections/done#x",
    "https://app.example.com/connections/done/../../evil",
    "https://app.example.com/connections/%64one",
    "https://app.example.com/connections/done%0d%0aLocation:%20https://evil.net",
    " https://app.example.com/connections/done",
    "https://app.example.com/connections/done ",
    "https://xn--app-example-xyz.com/connections/done",
    "https://аpp.example.com/connections/done",  # Cyrillic "а"
    "",
]


@pytest.fixture(scope="module")
def server():
    with OAuthTestServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _reset(server):
    server.reset_records()
    server.auto_approve = True
    server.down = False
    yield


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def flow_app(connect, server):
    """An app with two return URLs, one OAuth2 requirement and an org credential for it."""
    client_id = f"client-{uuid.uuid4().hex[:10]}"
    secret = f"secret-{uuid.uuid4().hex}"
    r = connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "custom", "mode": "OAUTH", "connector_name": "oauth2", "oauth_url": server.authorize_url,
        "oauth_token_url": server.token_url, "oauth_client_id": client_id, "oauth_client_secret": secret,
        "oauth_scope": "read", "oauth_grant_type": "authorization_code"})
    assert r.status_code == 201, r.get_json()
    server.add_client(client_id, secret, [r.get_json()["redirect_uri"]])
    app = connect.create_app_with_requirements(
        [{"key": "account", "type": "connection", "title": "Account",
          "spec": {"type": "connection", "data": {"type": OAUTH2}}}],
        return_urls=[RETURN, RETURN_2])
    app["_credential"] = r.get_json()
    app["_client_id"] = client_id
    return app


def authorize(connect, app, return_to=None, user="user-1"):
    token = connect.token(app, user)
    query = {} if return_to is None else {"return_to": return_to}
    return connect.client.post(f"/v1/connect/requirements/{connect.requirement_id(app, 'account')}/oauth2/authorize",
                               query_string=query, headers=bearer(token))


def to_callback(authorization_url):
    r = requests.get(authorization_url, allow_redirects=False, timeout=10)
    assert r.status_code in (302, 303), r.text[:200]
    assert r.headers["Location"].startswith(CALLBACK + "/cc")
    return r.headers["Location"]


def count_connections(connect):
    with connect.app.app_context(), database.connection_context():
        return Connection.select().count()


@pytest.mark.parametrize("bad", LOOKALIKES)
def test_authorize_refuses_anything_but_an_exact_return_url(connect, flow_app, bad):
    before = count_connections(connect)
    r = authorize(connect, flow_app, bad)
    assert r.status_code == 400, (bad, r.get_json())
    assert set(r.get_json()["error"]["details"]) == {"return_to"}
    assert count_connections(connect) == before  # nothing was started


@pytest.mark.parametrize("good", [RETURN, RETURN_2])
def test_exact_return_url_is_followed_after_the_callback(connect, flow_app, good):
    r = authorize(connect, flow_app, good)
    assert r.status_code == 201, r.get_json()
    location = to_callback(r.get_json()["authorization_url"])
    # an attacker appending their own return_to / redirect parameters to the callback changes nothing
    done = connect.client.get(location + "&return_to=https%3A%2F%2Fevil.net%2F&redirect_uri=https%3A%2F%2Fevil.net%2F"
                              "&next=https%3A%2F%2Fevil.net%2F")
    assert done.status_code == 303
    target = done.headers["Location"]
    assert target.startswith(good.split("?")[0])
    parts, expected = urlsplit(target), urlsplit(good)
    assert (parts.scheme, parts.netloc, parts.path) == (expected.scheme, expected.netloc, expected.path)
    query = parse_qs(parts.query)
    assert query["status"] == ["success"]
    assert "evil" not in target
    if "from=connect" in good:
        assert query["from"] == ["connect"]  # the allow-listed URL's own query survives


def test_without_return_to_the_service_shows_its_own_page(connect, flow_app):
    r = authorize(connect, flow_app)
    done = connect.client.get(to_callback(r.get_json()["authorization_url"]))
    assert done.status_code == 200 and "Location" not in done.headers
    assert done.headers["Content-Type"].startswith("text/html")


def test_unknown_or_reused_state_never_redirects(connect, flow_app):
    r = authorize(connect, flow_app, RETURN)
    location = to_callback(r.get_json()["authorization_url"])
    assert connect.client.get(location).status_code == 303
    replay = connect.client.get(location)  # state is single use: an error, sent only to the stored return URL
    if replay.status_code == 303:
        target = urlsplit(replay.headers["Location"])
        assert f"{target.scheme}://{target.netloc}{target.path}" == RETURN
        assert parse_qs(target.query)["status"] == ["error"]
    else:
        assert replay.status_code >= 400 and "Location" not in replay.headers
    forged = connect.client.get(f"/v1/connect/oauth2/callback/{flow_app['_credential']['id']}"
                                "?state=forged&code=x&return_to=https%3A%2F%2Fevil.net")
    assert forged.status_code >= 400 and "Location" not in forged.headers


def test_provider_error_message_is_escaped_on_the_result_page(connect, flow_app, server):
    r = authorize(connect, flow_app)
    state = parse_qs(urlsplit(r.get_json()["authorization_url"]).query)["state"][0]
    page = connect.client.get(f"/v1/connect/oauth2/callback/{flow_app['_credential']['id']}", query_string={
        "state": state, "error": "access_denied",
        "error_description": '<script>location="https://evil.net"</script>'})
    assert "Location" not in page.headers and page.status_code == 400
    html = page.get_data(as_text=True)
    assert "<script>location" not in html and "access_denied" in html
    assert "default-src" in page.headers.get("Content-Security-Policy", "default-src")


@pytest.mark.parametrize("bad", [
    "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "data:text/html,x", "/relative",
    "https://user:pw@evil.example/", "https://@evil.example/", "https://app.example.com\\@evil.example/",
    "https:evil.example", "https:///evil.example", "ftp://evil.example/", " https://app.example.com/",
    "https://app.example.com/\r\nSet-Cookie: a=b", "https://app.example.com\t.evil.example/",
    "http://[::1", "https://app.example.com:99999/", "https://exa mple.com/",
])
def test_return_urls_must_be_plain_absolute_http_urls(connect, bad):
    r = connect.client.post("/v1/apps", headers=connect.auth,
                            json={"name": "x", "hostname": f"h{uuid.uuid4().hex[:8]}.test", "return_urls": [bad]})
    assert r.status_code == 400, (bad, r.get_json())
    assert r.get_json()["error"]["details"] == {"return_urls.0": "must be an absolute http(s) URL"}
    app = connect.create_app()
    r = connect.client.patch(f"/v1/apps/{app['id']}", headers=connect.auth, json={"return_urls": [RETURN, bad]})
    assert r.status_code == 400 and "return_urls.1" in r.get_json()["error"]["details"]


def test_seed_004_initialise_lands_on_the_first_return_url(connect, flow_app, server):
    cred = flow_app["_credential"]
    r = connect.client.post(
        f"/v1/embed/{flow_app['id']}/connector/oauth2/oauth2/initialise", headers=connect.auth,
        json={"authorizeUrl": server.authorize_url, "clientId": flow_app["_client_id"],
              "credential": {"id": cred["id"], "organisationId": connect.org_id}, "customerId": "cust-1"})
    assert r.status_code == 200, r.get_json()
    done = connect.client.get(to_callback(r.get_json()["url"]))
    assert done.status_code == 303
    assert done.headers["Location"].startswith(RETURN + "?")
