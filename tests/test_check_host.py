"""``POST /v1/connections/{id}/check-host`` and the validation of ``allowed_hosts`` when a credential is saved."""
import uuid

import pytest

from connect_service.db import database
from connect_service.models import Connection, Organization

OAUTH2 = "dynamiq.connections.OAuth2"


def credential(connect, allowed_hosts, expect=201):
    r = connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "partner", "mode": "OAUTH", "connector_name": "oauth2",
        "oauth_url": "https://idp.example.com/authorize", "oauth_token_url": "https://idp.example.com/token",
        "oauth_client_id": "cid", "oauth_client_secret": "csecret", "oauth_scope": "read",
        "oauth_grant_type": "authorization_code", "allowed_hosts": allowed_hosts})
    assert r.status_code == expect, r.get_json()
    return r.get_json()


def connection(connect, credential_id=None, org_id=None):
    with connect.app.app_context(), database.connection_context():
        conn = Connection.create(org=org_id or connect.org_id, credential=credential_id, type=OAUTH2,
                                 connector_name="oauth2", customer_id=f"c-{uuid.uuid4().hex[:6]}", status="active")
        return conn.id


def check(connect, conn_id, url, headers=None):
    return connect.client.post(f"/v1/connections/{conn_id}/check-host", json={"url": url},
                               headers=connect.auth if headers is None else headers)


@pytest.fixture
def restricted(connect):
    cred = credential(connect, ["*.Example.COM.", "api.partner.io", "10.0.0.5", "bücher.example"])
    assert cred["allowed_hosts"] == ["*.example.com", "api.partner.io", "10.0.0.5", "xn--bcher-kva.example"]
    return connection(connect, cred["id"])


@pytest.mark.parametrize("url,allowed,host", [
    ("https://a.example.com/v1", True, "a.example.com"),
    ("https://A.EXAMPLE.COM./v1", True, "a.example.com"),
    ("https://a.example.com:8443/x?y=1", True, "a.example.com"),
    ("https://example.com/v1", False, "example.com"),
    ("https://a.b.example.com/", False, "a.b.example.com"),
    ("https://evilexample.com/", False, "evilexample.com"),
    ("https://example.com.evil.net/", False, "example.com.evil.net"),
    ("https://a.example.com.evil.net/", False, "a.example.com.evil.net"),
    ("https://api.partner.io/", True, "api.partner.io"),
    ("https://x.api.partner.io/", False, "x.api.partner.io"),
    ("http://10.0.0.5/", True, "10.0.0.5"),
    ("http://10.0.0.6/", False, "10.0.0.6"),
    ("https://BÜCHER.example/", True, "xn--bcher-kva.example"),
    ("https://xn--bcher-kva.example/", True, "xn--bcher-kva.example"),
])
def test_matching(connect, restricted, url, allowed, host):
    r = check(connect, restricted, url)
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"allowed": allowed, "host": host,
                            "allowed_hosts": ["*.example.com", "api.partner.io", "10.0.0.5", "xn--bcher-kva.example"]}


@pytest.mark.parametrize("url", [
    "https://a.example.com@evil.net/", "https://evil.net\\@a.example.com/", "https://user:pw@a.example.com/",
    "javascript:alert(1)", "ftp://a.example.com/", "//a.example.com/", "a.example.com", "https://a.example.com /",
    "http://2130706433/", "http://0x7f000001/", "https://a.example.com:99999/", "https://[::1/", "https://",
])
def test_deceptive_or_invalid_urls_are_400(connect, restricted, url):
    r = check(connect, restricted, url)
    assert r.status_code == 400, (url, r.get_json())
    assert list(r.get_json()["error"]["details"]) == ["url"]


def test_unrestricted_connection(connect):
    cred = credential(connect, [])
    for conn_id in (connection(connect, cred["id"]), connection(connect, None)):
        r = check(connect, conn_id, "https://anything.example.net/")
        assert r.get_json() == {"allowed": True, "host": "anything.example.net", "allowed_hosts": []}


def test_auth_scope_and_bodies(connect, restricted, app_with_key):
    assert check(connect, restricted, "https://a.example.com", headers={}).status_code == 401
    token = connect.token(app_with_key, "u1")
    assert check(connect, restricted, "https://a.example.com",
                 headers={"Authorization": f"Bearer {token}"}).status_code == 401
    # another org's connection and an unknown id: 404, whatever the body
    with connect.app.app_context(), database.connection_context():
        other_org = Organization.create(name="other").id
    foreign = connection(connect, None, org_id=other_org)
    for conn_id in (foreign, "conn_nope"):
        r = connect.client.post(f"/v1/connections/{conn_id}/check-host", data="{bad json", headers=connect.auth)
        assert r.status_code == 404
    for body in (None, "", "{}", "null"):
        r = connect.client.post(f"/v1/connections/{restricted}/check-host", data=body, headers={
            **connect.auth, "Content-Type": "application/json"})
        assert r.status_code == 400
        assert r.get_json()["error"]["details"] == {"input": "cannot be blank"}
    r = connect.client.post(f"/v1/connections/{restricted}/check-host", json={"url": 5}, headers=connect.auth)
    assert r.status_code == 400 and list(r.get_json()["error"]["details"]) == ["url"]


@pytest.mark.parametrize("pattern", ["*", "*.com", "*.co.uk", "*.github.io", "*.localhost", "a.*.example.com",
                                     "https://a.example.com", "a.example.com/path", "user@a.example.com",
                                     "a.example.com:443", "*.*.example.com", "", "ex ample.com", "*example.com"])
def test_bad_allowed_host_patterns_are_refused_when_saved(connect, pattern):
    r = connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "partner", "mode": "OAUTH", "connector_name": "oauth2",
        "oauth_url": "https://idp.example.com/authorize", "oauth_token_url": "https://idp.example.com/token",
        "oauth_client_id": "cid", "oauth_client_secret": "csecret", "oauth_grant_type": "authorization_code",
        "allowed_hosts": ["api.example.com", pattern]})
    assert r.status_code == 400, (pattern, r.get_json())
    assert "allowed_hosts.1" in r.get_json()["error"]["details"]
    good = credential(connect, ["api.example.com"])
    r = connect.client.patch(f"/v1/credentials/{good['id']}", headers=connect.auth, json={"allowed_hosts": [pattern]})
    assert r.status_code == 400 and "allowed_hosts.0" in r.get_json()["error"]["details"]
