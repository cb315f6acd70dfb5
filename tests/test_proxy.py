"""The credential-injecting proxy (issue 16 §3) against a local provider stub: bearer, header and query
injection, refresh before and after a 401, allowed_hosts and SSRF refusals, header rules, streaming in
bounded memory, the body limit, audit events, and the credential never in a response or log."""
from __future__ import annotations

import datetime
import json
import logging
import tracemalloc

import pytest

from conftest import HTTP_API_KEY
from connect_service import ConnectionType, OAuth2Provider, fields, hookimpl
from connect_service.db import database
from connect_service.models import Credential
from connect_service.testing import connection_requirement
from marshmallow import Schema
from test_refresh import (CONNECTOR, TYPE_NAME, create_credential, create_oauth_connection, issue_tokens,  # noqa: F401
                          oauth_server, past)
from tests.support.provider_stub import ProviderStub

API_KEY = "sk-proxy-secret-3141"
QUERY_TYPE = "tests.connections.QueryKey"


class QueryKeyConfig(Schema):
    url = fields.Url(required=True)
    api_key = fields.Secret(required=True)


class QueryKey(ConnectionType):
    """An API that takes its key as ``?key=`` (like Gemini), at a URL the user gives."""

    name = QUERY_TYPE
    title = "Query key API"
    schema = QueryKeyConfig
    proxy_auth = ("query", "key")

    @classmethod
    def proxy_base_url(cls, config, credential_settings):
        return config.get("url")


def proxy_oauth_plugin(server):
    class ProxyOAuth(ConnectionType):
        name = TYPE_NAME
        title = "Proxy test OAuth"
        auth = "oauth2"
        connector_name = CONNECTOR
        provider = OAuth2Provider(revoke_url=server.revoke_url, default_token_lifetime=1800)

        @classmethod
        def proxy_base_url(cls, config, credential_settings):
            return credential_settings.get("api_base_url")

    class Plugin:
        @hookimpl
        def register_connection_types(self):
            return [ProxyOAuth, QueryKey]

    return Plugin()


@pytest.fixture
def connect_plugins(oauth_server):
    return [proxy_oauth_plugin(oauth_server)]


@pytest.fixture
def stub():
    server = ProviderStub().start()
    yield server
    server.stop()


def user_connection(connect, stub, type_name=HTTP_API_KEY, **spec_data):
    req = connection_requirement("api", type_name)
    req["spec"]["data"].update(spec_data)
    app = connect.create_app_with_requirements([req])
    token = connect.token(app, "user-1")
    r = connect.submit_credentials(token, connect.requirement_id(app, "api"), type_name,
                                   {"url": f"{stub.url}/api/v2", "api_key": API_KEY})
    assert r.status_code == 201, r.get_json()
    return connect.connection(app, "user-1", "api")["id"]


def proxy(connect, conn_id, path, method="get", headers=None, **kwargs):
    return getattr(connect.client, method)(f"/v1/connections/{conn_id}/proxy/{path}",
                                           headers={**connect.auth, **(headers or {})}, **kwargs)


def audit_events(connect):
    r = connect.client.get("/v1/audit-events", query_string={"action": "proxy.request"}, headers=connect.auth)
    return r.get_json()["data"]


def test_bearer_injection_forwards_query_and_body_and_filters_headers(connect, stub):
    conn_id = user_connection(connect, stub)
    r = proxy(connect, conn_id, "tickets/7/echo?status=open&page=2", method="post", data=b'{"note": "hi"}',
              headers={"Content-Type": "application/json", "Cookie": "ours=1", "Connection": "keep-alive, X-Hop", "X-Hop": "1",
                       "X-Custom": "kept", "Proxy-Authorization": "Basic xyz"})
    assert r.status_code == 200
    seen = stub.requests[-1]
    assert seen["method"] == "POST" and seen["path"] == "/api/v2/tickets/7/echo"  # the base path is kept
    assert seen["query"] == [("status", "open"), ("page", "2")] and seen["body"] == b'{"note": "hi"}'
    assert seen["headers"]["authorization"] == f"Bearer {API_KEY}"  # never the caller's Access Key
    assert connect.access_key not in json.dumps(seen["headers"])
    for name in ("cookie", "proxy-authorization", "x-hop"):
        assert name not in seen["headers"]
    assert seen["headers"]["x-custom"] == "kept" and seen["headers"]["content-type"] == "application/json"
    assert "Set-Cookie" not in r.headers and r.headers["X-Upstream"] == "yes"
    assert r.get_json()["path"] == "/api/v2/tickets/7/echo"
    for method in ("get", "put", "patch", "delete"):
        r = proxy(connect, conn_id, "echo", method=method)
        assert r.status_code == 200, (method, r.get_data(as_text=True))
        assert stub.requests[-1]["method"] == method.upper()


def test_header_injection_named_by_the_requirement(connect, stub):
    conn_id = user_connection(connect, stub, header="X-Api-Key")
    assert proxy(connect, conn_id, "echo").status_code == 200
    seen = stub.requests[-1]["headers"]
    assert seen["x-api-key"] == API_KEY and "authorization" not in seen


def test_query_injection(connect, stub):
    conn_id = user_connection(connect, stub, type_name=QUERY_TYPE)
    assert proxy(connect, conn_id, "echo?key=caller-guess&q=1").status_code == 200
    seen = stub.requests[-1]
    assert ("key", API_KEY) in seen["query"] and ("key", "caller-guess") not in seen["query"]
    assert ("q", "1") in seen["query"] and "authorization" not in seen["headers"]


def test_oauth_refreshes_first_and_once_more_after_a_401(connect, stub, oauth_server):
    credential = create_credential(connect.app, connect.org_id, oauth_server)
    with connect.app.app_context(), database.connection_context():
        Credential.update(settings={"api_base_url": f"{stub.url}/oauth-api"}).where(
            Credential.id == credential.id).execute()
    token = issue_tokens(oauth_server)
    conn_id = create_oauth_connection(connect.app, connect.org_id, credential, token, expires_at=past())
    r = proxy(connect, conn_id, "protected")
    assert r.status_code == 200
    first = stub.requests[-1]["headers"]["authorization"].removeprefix("Bearer ")
    assert first != token["access_token"]  # expired: refreshed before the call
    assert oauth_server.token_is_active(first)

    stub.rejected.add(first)  # the provider stops accepting it before its expiry
    refreshes = len([t for t in oauth_server.token_requests if t["grant_type"] == "refresh_token"])
    r = proxy(connect, conn_id, "protected")
    assert r.status_code == 200
    tries = [req["headers"]["authorization"].removeprefix("Bearer ") for req in stub.requests[-2:]]
    assert tries[0] == first and tries[1] != first and oauth_server.token_is_active(tries[1])
    assert len([t for t in oauth_server.token_requests if t["grant_type"] == "refresh_token"]) == refreshes + 1

    stub.reject_all = True  # still 401 after the forced refresh: passed on, no second retry
    before = len(stub.requests)
    r = proxy(connect, conn_id, "protected")
    assert r.status_code == 401 and len(stub.requests) == before + 2


def test_allowed_hosts_are_enforced(connect, stub, oauth_server):
    credential = create_credential(connect.app, connect.org_id, oauth_server)
    with connect.app.app_context(), database.connection_context():
        Credential.update(settings={"api_base_url": f"{stub.url}/api"}, allowed_hosts=["api.example.com"]).where(
            Credential.id == credential.id).execute()
    conn_id = create_oauth_connection(connect.app, connect.org_id, credential, issue_tokens(oauth_server),
                                      expires_at=datetime.datetime.utcnow() + datetime.timedelta(hours=1))
    r = proxy(connect, conn_id, "echo")
    assert r.status_code == 502 and "allowed_hosts" in r.get_json()["error"]["details"]["proxy"]
    assert stub.requests == []


@pytest.mark.parametrize("to", ["http://169.254.169.254/latest/meta-data", "http://10.0.0.7/admin",
                                "http://[::1]:8080/"])
def test_a_redirect_to_a_private_address_is_refused(connect, stub, to):
    conn_id = user_connection(connect, stub)
    r = proxy(connect, conn_id, "redirect", query_string={"to": to})
    assert r.status_code == 502 and r.get_json()["error"]["code"] == "bad_gateway"
    assert "not public" in r.get_json()["error"]["details"]["proxy"]


def test_429_and_retry_after_pass_through(connect, stub):
    conn_id = user_connection(connect, stub)
    r = proxy(connect, conn_id, "limited")
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.get_json() == {"error": "slow down"}


def test_a_5_mib_body_streams_in_bounded_memory(connect, stub):
    conn_id = user_connection(connect, stub)
    size = 5 * 1024 * 1024
    tracemalloc.start()
    try:
        r = proxy(connect, conn_id, f"big?size={size}", buffered=False)
        assert r.status_code == 200
        received = 0
        for chunk in r.response:
            received += len(chunk)
        r.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    assert peak < size / 4  # never the whole body at once


def test_the_body_limit_is_a_502(connect, stub, connect_app):
    connect_app.config["CONNECT"]["proxy_max_response_bytes"] = 1024 * 1024
    conn_id = user_connection(connect, stub)
    r = proxy(connect, conn_id, "declared?size=2000000")
    assert r.status_code == 502 and "larger than 1048576" in r.get_json()["error"]["details"]["proxy"]
    r = proxy(connect, conn_id, "big?size=2000000", buffered=False)  # no Content-Length: cut mid-stream
    assert r.status_code == 200
    with pytest.raises(Exception, match="larger than 1048576"):
        for _ in r.response:
            pass


def test_errors_before_the_provider(connect, stub, oauth_server):
    conn_id = user_connection(connect, stub)
    assert proxy(connect, "conn_unknown", "echo").status_code == 404
    r = proxy(connect, conn_id, "a/../../admin")
    assert r.status_code == 400 and "path" in r.get_json()["error"]["details"]
    r = connect.client.get(f"/v1/connections/{conn_id}/proxy/echo")
    assert r.status_code == 401
    connect.client.patch(f"/v1/connections/{conn_id}", json={"disabled": True}, headers=connect.auth)
    r = proxy(connect, conn_id, "echo")
    assert r.status_code == 409 and "connection" in r.get_json()["error"]["details"]
    assert stub.requests == []


def test_every_call_is_audited_and_the_credential_never_shows(connect, stub, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    conn_id = user_connection(connect, stub)
    responses = [proxy(connect, conn_id, "echo?token=query-value-1"), proxy(connect, conn_id, "limited"),
                 proxy(connect, conn_id, "redirect", query_string={"to": "http://10.0.0.7/x"})]
    events = audit_events(connect)
    assert [(e["details"]["method"], e["details"]["host"], e["details"]["status"]) for e in events] == [
        ("GET", "127.0.0.1", 502), ("GET", "127.0.0.1", 429), ("GET", "127.0.0.1", 200)]
    assert events[2]["details"]["path"] == "/echo" and events[2]["target"] == {"type": "connection", "id": conn_id}
    text = json.dumps(events)
    assert "query-value-1" not in text and API_KEY not in text
    captured = capsys.readouterr()
    for blob in [r.get_data(as_text=True) for r in responses] + [json.dumps(dict(r.headers)) for r in responses] \
            + [caplog.text, captured.out, captured.err]:
        assert API_KEY not in blob
