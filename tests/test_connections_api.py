"""``/v1/connections`` (seed 002): create/import, list + filters, get, patch, delete with revocation."""
from __future__ import annotations

import datetime
import json

import pytest

from conftest import HTTP_API_KEY
from connect_service.api.access_keys import create_access_key
from connect_service.db import database
from connect_service.models import Organization, utcnow
from test_refresh import (CLIENT_ID, CONNECTOR, TYPE_NAME, create_credential, create_oauth_connection,  # noqa: F401
                          connect_plugins, credential, issue_tokens, oauth_server, stored)

SEED_002_KEYS = ["id", "customer_id", "connector_config_id", "integration_id", "created_at", "updated_at",
                 "display_name", "disabled", "metadata", "connector_name", "settings"]


def oauth_body(credential_id, token, **extra):
    creds = {"access_token": token["access_token"], "refresh_token": token.get("refresh_token"),
             "expires_in": token.get("expires_in"), "scope": token.get("scope"), "token_type": "Bearer"}
    body = {"connector_config_id": credential_id, "customer_id": "customer-42",
            "data": {"connector_name": CONNECTOR, "settings": {"oauth": {"credentials": creds}}},
            "metadata": {"plan": "pro"}}
    body.update(extra)
    return body


def api_key_body(credential_id, settings, **extra):
    body = {"connector_config_id": credential_id, "customer_id": "customer-42",
            "data": {"connector_name": HTTP_API_KEY, "settings": settings}}
    body.update(extra)
    return body


def other_org(connect):
    with connect.app.app_context(), database.connection_context():
        org = Organization.create(name="Other org")
        _, key = create_access_key(org, "other")
    return org.id, {"Authorization": f"Bearer {key}"}


# --- create -----------------------------------------------------------------------------------

def test_create_oauth_connection_seed_002_shape(connect, oauth_server, credential):
    token = issue_tokens(oauth_server)
    r = connect.client.post("/v1/connections", json=oauth_body(credential.id, token, display_name="Work"),
                            headers=connect.auth)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert list(body)[:len(SEED_002_KEYS)] == SEED_002_KEYS
    assert body["id"].startswith("conn_")
    assert body["customer_id"] == "customer-42"
    assert body["connector_config_id"] == credential.id
    assert body["integration_id"] == TYPE_NAME
    assert body["connector_name"] == CONNECTOR
    assert body["metadata"] == {"plan": "pro"} and body["display_name"] == "Work" and body["disabled"] is False
    assert body["status"] == "active" and body["app_id"] is None
    creds = body["settings"]["oauth"]["credentials"]
    # no secrets without include_secrets, but the non-secret parts are there
    assert "access_token" not in creds and "refresh_token" not in creds and "raw" not in creds
    assert creds["scope"] == token["scope"] and creds["expires_at"].endswith("Z")
    assert token["access_token"] not in r.get_data(as_text=True)
    assert [c[0] for c in connect.hooks.calls] == ["connection_activated"]

    r = connect.client.get(f"/v1/connections/{body['id']}?include_secrets=true&refresh=never",
                           headers=connect.auth)
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store"
    oauth = r.get_json()["settings"]["oauth"]
    assert oauth["credentials"]["access_token"] == token["access_token"]
    assert oauth["credentials"]["refresh_token"] == token["refresh_token"]
    assert oauth["credentials"]["client_id"] == CLIENT_ID
    assert oauth["last_fetched_at"] == r.get_json()["last_fetched_at"] is not None
    row, _ = stored(connect.app, body["id"])
    assert row.last_fetched_at is not None and row.expires_at > utcnow()


def test_create_with_expires_at_keeps_it_and_refreshes_when_past(connect, oauth_server, credential):
    token = issue_tokens(oauth_server)
    body = oauth_body(credential.id, token)
    creds = body["data"]["settings"]["oauth"]["credentials"]
    creds.pop("expires_in")
    creds["expires_at"] = "2020-01-01T00:00:00Z"
    r = connect.client.post("/v1/connections", json=body, headers=connect.auth)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["settings"]["oauth"]["credentials"]["expires_at"] == "2020-01-01T00:00:00Z"
    row, _ = stored(connect.app, r.get_json()["id"])
    assert row.expires_at == datetime.datetime(2020, 1, 1)
    r = connect.client.get(f"/v1/connections/{row.id}?include_secrets=true", headers=connect.auth)
    assert r.status_code == 200
    assert r.get_json()["settings"]["oauth"]["credentials"]["access_token"] != token["access_token"]
    assert oauth_server.token_calls("refresh_token") == 1


def test_create_api_key_connection_validates_with_the_type_schema(connect, credential):
    r = connect.client.post("/v1/connections", json=api_key_body(credential.id, {"url": "not a url"}),
                            headers=connect.auth)
    assert r.status_code == 400
    details = r.get_json()["error"]["details"]
    assert set(details) == {"data.settings.url", "data.settings.api_key"}

    r = connect.client.post("/v1/connections", json=api_key_body(
        credential.id, {"url": "https://helpdesk.example.com/api", "api_key": "hd_live_123"}), headers=connect.auth)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["connector_name"] == HTTP_API_KEY and body["integration_id"] == HTTP_API_KEY
    assert body["settings"] == {"url": "https://helpdesk.example.com/api"}
    r = connect.client.get(f"/v1/connections/{body['id']}?include_secrets=true", headers=connect.auth)
    assert r.get_json()["settings"]["api_key"] == "hd_live_123"
    assert r.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("mutate, field", [
    (lambda b: b.update(connector_config_id="ccfg_unknown"), "connector_config_id"),
    (lambda b: b.pop("connector_config_id"), "connector_config_id"),
    (lambda b: b.pop("customer_id"), "customer_id"),
    (lambda b: b.pop("data"), "data"),
    (lambda b: b["data"].update(connector_name="nope"), "data.connector_name"),
    (lambda b: b["data"]["settings"]["oauth"]["credentials"].pop("access_token"),
     "data.settings.oauth.credentials.access_token"),
    (lambda b: b["data"].update(settings={}), "data.settings.oauth"),
    (lambda b: b["data"]["settings"]["oauth"]["credentials"].update(expires_in="soon"),
     "data.settings.oauth.credentials.expires_in"),
    (lambda b: b.update(app_id="00000000-0000-0000-0000-000000000000"), "app_id"),
    (lambda b: b.update(metadata=[1]), "metadata"),
])
def test_create_bad_input_names_the_field(connect, credential, mutate, field):
    body = oauth_body(credential.id, {"access_token": "at", "refresh_token": "rt", "expires_in": 3600})
    mutate(body)
    r = connect.client.post("/v1/connections", json=body, headers=connect.auth)
    assert r.status_code == 400, r.get_json()
    assert field in r.get_json()["error"]["details"], r.get_json()


def test_create_blank_body_and_auth(connect):
    for raw in ("", "{}", "null"):
        r = connect.client.post("/v1/connections", data=raw, headers={**connect.auth,
                                                                     "Content-Type": "application/json"})
        assert r.status_code == 400
        assert r.get_json()["error"]["details"] == {"input": "cannot be blank"}
    assert connect.client.post("/v1/connections", json={"x": 1}).status_code == 401


def test_create_with_another_orgs_credential_is_400(connect, oauth_server):
    org_id, _ = other_org(connect)
    foreign = create_credential(connect.app, org_id, oauth_server)
    r = connect.client.post("/v1/connections", json=oauth_body(foreign.id, {"access_token": "at"}),
                            headers=connect.auth)
    assert r.status_code == 400
    assert "connector_config_id" in r.get_json()["error"]["details"]


def test_create_for_an_app(connect, credential, app_with_key):
    r = connect.client.post("/v1/connections", json=oauth_body(credential.id, {"access_token": "at"},
                                                               app_id=app_with_key["id"]), headers=connect.auth)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["app_id"] == app_with_key["id"]


# --- list -------------------------------------------------------------------------------------

def test_list_filters_and_pagination(connect, oauth_server, credential, app_with_key):
    ids = {}
    for customer in ("c1", "c2"):
        body = oauth_body(credential.id, {"access_token": f"at-{customer}"}, customer_id=customer)
        ids[customer] = connect.client.post("/v1/connections", json=body, headers=connect.auth).get_json()["id"]
    key = connect.client.post("/v1/connections", json=api_key_body(
        credential.id, {"url": "https://x.example.com", "api_key": "k"}, customer_id="c1"), headers=connect.auth)
    ids["key"] = key.get_json()["id"]
    # a connection made through the connect flow appears too, customer_id = the end user's id
    token = connect.token(app_with_key, "end-user-9")
    rid = connect.requirement_id(app_with_key, "helpdesk")
    assert connect.submit_credentials(token, rid, HTTP_API_KEY, {"url": "https://h.example.com",
                                                                 "api_key": "k2"}).status_code == 201

    def listed(query=""):
        r = connect.client.get(f"/v1/connections{query}", headers=connect.auth)
        assert r.status_code == 200, r.get_json()
        return r.get_json()

    everything = listed()
    assert len(everything["data"]) == 4 and everything["next_cursor"] is None
    assert all("api_key" not in c["settings"] and "access_token" not in json.dumps(c) for c in everything["data"])
    assert {c["id"] for c in listed("?customer_id=c1")["data"]} == {ids["c1"], ids["key"]}
    assert {c["id"] for c in listed(f"?connector_name={CONNECTOR}")["data"]} == {ids["c1"], ids["c2"]}
    assert {c["customer_id"] for c in listed(f"?type={HTTP_API_KEY}")["data"]} == {"c1", "end-user-9"}
    flow = listed(f"?app_id={app_with_key['id']}")["data"]
    assert len(flow) == 1 and flow[0]["customer_id"] == "end-user-9" and flow[0]["requirement_id"] == rid
    assert len(listed("?status=active")["data"]) == 4 and listed("?status=error")["data"] == []
    assert listed("?customer_id=nobody")["data"] == []

    page1 = listed("?limit=3")
    assert len(page1["data"]) == 3 and page1["next_cursor"]
    page2 = listed(f"?limit=3&cursor={page1['next_cursor']}")
    assert len(page2["data"]) == 1 and page2["next_cursor"] is None
    assert {c["id"] for c in page1["data"] + page2["data"]} == {c["id"] for c in everything["data"]}

    for bad, field in (("?limit=0", "limit"), ("?status=weird", "status"), ("?cursor=%%%", "cursor")):
        r = connect.client.get(f"/v1/connections{bad}", headers=connect.auth)
        assert r.status_code == 400 and field in r.get_json()["error"]["details"], r.get_json()

    _, other_auth = other_org(connect)
    assert connect.client.get("/v1/connections", headers=other_auth).get_json()["data"] == []


# --- get / patch / delete ---------------------------------------------------------------------

def test_get_unknown_or_foreign_is_404(connect, credential):
    r = connect.client.post("/v1/connections", json=oauth_body(credential.id, {"access_token": "at"}),
                            headers=connect.auth)
    conn_id = r.get_json()["id"]
    _, other_auth = other_org(connect)
    for headers, path in ((connect.auth, "/v1/connections/conn_nope"), (other_auth, f"/v1/connections/{conn_id}")):
        for method in ("get", "patch", "delete"):
            kwargs = {"json": {"display_name": "x"}} if method == "patch" else {}
            r = getattr(connect.client, method)(path, headers=headers, **kwargs)
            assert r.status_code == 404, (method, path)
            assert r.get_json()["error"]["code"] == "not_found"
    # the path is resolved before the query/body is judged
    assert connect.client.get("/v1/connections/conn_nope?refresh=bogus", headers=connect.auth).status_code == 404
    assert connect.client.patch("/v1/connections/conn_nope", data="", headers=connect.auth).status_code == 404
    r = connect.client.get(f"/v1/connections/{conn_id}?include_secrets=true&refresh=bogus", headers=connect.auth)
    assert r.status_code == 400 and "refresh" in r.get_json()["error"]["details"]
    r = connect.client.get(f"/v1/connections/{conn_id}?include_secrets=maybe", headers=connect.auth)
    assert r.status_code == 400 and "include_secrets" in r.get_json()["error"]["details"]
    r = connect.client.get(f"/v1/connections/{conn_id}", headers=connect.auth)
    assert r.status_code == 200 and "access_token" not in r.get_data(as_text=True)


def test_patch_merges_metadata_and_sets_fields(connect, credential):
    body = oauth_body(credential.id, {"access_token": "at"}, metadata={"a": 1, "b": {"x": 1}})
    conn_id = connect.client.post("/v1/connections", json=body, headers=connect.auth).get_json()["id"]
    r = connect.client.patch(f"/v1/connections/{conn_id}", json={"metadata": {"b": {"y": 2}, "c": 3}},
                             headers=connect.auth)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["metadata"] == {"a": 1, "b": {"y": 2}, "c": 3}  # shallow: b replaced
    r = connect.client.patch(f"/v1/connections/{conn_id}", json={"display_name": "Sales", "disabled": True},
                             headers=connect.auth)
    body = r.get_json()
    assert body["display_name"] == "Sales" and body["disabled"] is True and body["metadata"]["a"] == 1
    _, saved = stored(connect.app, conn_id)
    assert saved["access_token"] == "at"  # tokens untouched
    for bad, field in (({"disabled": "perhaps"}, "disabled"), ({"metadata": "x"}, "metadata"),
                       ({"color": "red"}, "color")):
        r = connect.client.patch(f"/v1/connections/{conn_id}", json=bad, headers=connect.auth)
        assert r.status_code == 400 and field in r.get_json()["error"]["details"], r.get_json()
    r = connect.client.patch(f"/v1/connections/{conn_id}", data="{}", headers={
        **connect.auth, "Content-Type": "application/json"})
    assert r.get_json()["error"]["details"] == {"input": "cannot be blank"}


def test_delete_revokes_at_the_provider_then_removes(connect, oauth_server, credential):
    token = issue_tokens(oauth_server)
    conn_id = create_oauth_connection(connect.app, connect.org_id, credential, token, expires_at=None)
    assert oauth_server.token_is_active(token["access_token"])
    r = connect.client.delete(f"/v1/connections/{conn_id}", headers=connect.auth)
    assert r.status_code == 204
    assert oauth_server.revocations and oauth_server.revocations[0]["status"] == 200
    assert not oauth_server.token_is_active(token["access_token"])
    assert not oauth_server.refresh_token_is_active(token["refresh_token"])
    assert connect.client.get(f"/v1/connections/{conn_id}", headers=connect.auth).status_code == 404
    assert stored(connect.app, conn_id)[0] is None
    revoked = connect.hooks.of("connection_revoked")
    assert len(revoked) == 1 and revoked[0]["connection"]["id"] == conn_id
    assert "access_token" not in json.dumps(revoked[0])


def test_delete_when_provider_is_down_still_deletes(connect, oauth_server, credential):
    token = issue_tokens(oauth_server)
    conn_id = create_oauth_connection(connect.app, connect.org_id, credential, token, expires_at=None)
    oauth_server.stop()
    r = connect.client.delete(f"/v1/connections/{conn_id}", headers=connect.auth)
    assert r.status_code == 204
    assert connect.client.get(f"/v1/connections/{conn_id}", headers=connect.auth).status_code == 404


def test_delete_api_key_connection(connect, credential):
    r = connect.client.post("/v1/connections", json=api_key_body(
        credential.id, {"url": "https://x.example.com", "api_key": "k"}), headers=connect.auth)
    conn_id = r.get_json()["id"]
    assert connect.client.delete(f"/v1/connections/{conn_id}", headers=connect.auth).status_code == 204
    assert connect.client.get(f"/v1/connections/{conn_id}", headers=connect.auth).status_code == 404


def test_non_oauth_force_refresh_is_409(connect, credential):
    r = connect.client.post("/v1/connections", json=api_key_body(
        credential.id, {"url": "https://x.example.com", "api_key": "k"}), headers=connect.auth)
    r = connect.client.get(f"/v1/connections/{r.get_json()['id']}?include_secrets=true&refresh=force",
                           headers=connect.auth)
    assert r.status_code == 409 and "refresh" in r.get_json()["error"]["details"]


def test_secrets_read_sets_last_fetched_at(connect, oauth_server, credential):
    token = issue_tokens(oauth_server)
    conn_id = create_oauth_connection(connect.app, connect.org_id, credential, token,
                                      expires_at=utcnow() + datetime.timedelta(hours=1))
    r = connect.client.get(f"/v1/connections/{conn_id}", headers=connect.auth)
    assert r.get_json()["last_fetched_at"] is None
    r = connect.client.get(f"/v1/connections/{conn_id}?include_secrets=true", headers=connect.auth)
    assert r.get_json()["last_fetched_at"] is not None
    assert stored(connect.app, conn_id)[0].last_fetched_at is not None


# --- import limits and the credential's read_access -------------------------------------------

@pytest.mark.parametrize("creds, field", [
    ({"expires_in": 10 ** 12}, "expires_in"),
    ({"expires_in": 2 ** 63}, "expires_in"),
    ({"expires_in": 10 ** 20}, "expires_in"),
    ({"expires_in": -1}, "expires_in"),
    ({"expires_at": "9999-12-31T23:59:59Z"}, "expires_at"),
    ({"expires_at": "0001-01-01T00:00:00+01:00"}, "expires_at"),
])
def test_import_with_an_absurd_expiry_is_400_naming_the_field(connect, credential, creds, field):
    body = oauth_body(credential.id, {"access_token": "at", "refresh_token": "rt"})
    body["data"]["settings"]["oauth"]["credentials"].update(creds)
    r = connect.client.post("/v1/connections", json=body, headers=connect.auth)
    assert r.status_code == 400, r.get_json()
    assert list(r.get_json()["error"]["details"]) == [f"data.settings.oauth.credentials.{field}"]


def test_import_expiry_limits_and_a_huge_jwt_exp_is_clamped(connect, credential):
    import jwt as pyjwt

    from connect_service.db import db_now
    from connect_service.oauth import MAX_TOKEN_LIFETIME_SECONDS

    ten_years = datetime.timedelta(seconds=MAX_TOKEN_LIFETIME_SECONDS)
    body = oauth_body(credential.id, {"access_token": "at", "expires_in": MAX_TOKEN_LIFETIME_SECONDS})
    r = connect.client.post("/v1/connections", json=body, headers=connect.auth)
    assert r.status_code == 200, r.get_json()
    # no expires_in, a JWT whose exp is in the year 31 million: at most ten years
    huge = pyjwt.encode({"exp": 10 ** 15}, "k" * 32, algorithm="HS256")
    body = oauth_body(credential.id, {"access_token": huge})
    body["data"]["settings"]["oauth"]["credentials"].pop("expires_in")
    r = connect.client.post("/v1/connections", json=body, headers=connect.auth)
    assert r.status_code == 200, r.get_json()
    row, _ = stored(connect.app, r.get_json()["id"])
    with connect.app.app_context(), database.connection_context():
        now = db_now()
    assert now + ten_years - datetime.timedelta(minutes=5) <= row.expires_at <= now + ten_years


def test_import_expiry_is_based_on_the_database_clock(connect, credential, monkeypatch):
    """This host's clock runs two hours ahead; expires_at must still be database time + expires_in."""
    from connect_service.db import db_now
    from tests.support.clock import skew_host_clock

    skew_host_clock(monkeypatch, datetime.timedelta(hours=2))
    r = connect.client.post("/v1/connections", json=oauth_body(credential.id, {"access_token": "at",
                                                                               "expires_in": 600}),
                            headers=connect.auth)
    assert r.status_code == 200, r.get_json()
    row, saved = stored(connect.app, r.get_json()["id"])
    with connect.app.app_context(), database.connection_context():
        after = db_now()
    assert row.expires_at <= after + datetime.timedelta(seconds=600)
    assert saved["expires_in"] == 600


def test_import_for_an_app_needs_a_credential_available_to_it(connect, oauth_server, app_with_key):
    from connect_service.models import Credential

    other_app = connect.create_app()
    owned_by_other = create_credential(connect.app, connect.org_id, oauth_server)
    with connect.app.app_context(), database.connection_context():
        Credential.update(app=other_app["id"], read_access="APP").where(
            Credential.id == owned_by_other.id).execute()
    for body in (oauth_body(owned_by_other.id, {"access_token": "at"}, app_id=app_with_key["id"]),
                 api_key_body(owned_by_other.id, {"url": "https://x.example.com", "api_key": "k"},
                              app_id=app_with_key["id"])):
        r = connect.client.post("/v1/connections", json=body, headers=connect.auth)
        assert r.status_code == 400, r.get_json()
        assert list(r.get_json()["error"]["details"]) == ["connector_config_id"]
        assert "read_access" in r.get_json()["error"]["details"]["connector_config_id"]
    # its own app may import with it; so may another app once the credential is shared with it
    r = connect.client.post("/v1/connections", json=oauth_body(owned_by_other.id, {"access_token": "at"},
                                                               app_id=other_app["id"]), headers=connect.auth)
    assert r.status_code == 200, r.get_json()
    with connect.app.app_context(), database.connection_context():
        Credential.update(read_access="SPECIFIC_APPS", shared_app_slugs=[app_with_key["slug"]]).where(
            Credential.id == owned_by_other.id).execute()
    r = connect.client.post("/v1/connections", json=oauth_body(owned_by_other.id, {"access_token": "at"},
                                                               app_id=app_with_key["id"]), headers=connect.auth)
    assert r.status_code == 200, r.get_json()


def test_key_and_connection_in_one_query_keep_401_before_404(connect, credential):
    """/v1/connections/<id> (and its proxy and check-host routes) read the key and the connection in one
    statement (api.common.load_key_and_connection): a bad, revoked or absent key is still a 401 whatever
    the id, a valid key an unknown or foreign id a 404, and the key's last_used_at is stamped either way."""
    from connect_service.models import AccessKey

    r = connect.client.post("/v1/connections", json=oauth_body(credential.id, {"access_token": "at"}),
                            headers=connect.auth)
    conn_id = r.get_json()["id"]
    other_id, other_auth = other_org(connect)
    doomed, doomed_auth = other_org(connect)
    with connect.app.app_context(), database.connection_context():
        doomed_key = AccessKey.get(AccessKey.org == doomed)
    r = connect.client.delete(f"/v1/access-keys/{doomed_key.id}", headers=doomed_auth)
    assert r.status_code == 200, r.get_json()
    paths = {f"/v1/connections/{conn_id}": "get", f"/v1/connections/{conn_id}/proxy/x": "get",
             f"/v1/connections/{conn_id}/check-host": "post"}
    for path, method in paths.items():
        for target in (path, path.replace(conn_id, "conn_nope")):
            kwargs = {"json": {"url": "https://api.example.com/x"}} if method == "post" else {}
            for headers in ({}, {"Authorization": "Bearer ak_wrong"}, {"Authorization": "Bearer connect-token"},
                            doomed_auth):
                r = getattr(connect.client, method)(target, headers=headers, **kwargs)
                assert r.status_code == 401, (target, headers, r.get_json())
                assert r.get_json()["error"]["code"] == "unauthorized"
            with connect.app.app_context(), database.connection_context():
                AccessKey.update(last_used_at=None).where(AccessKey.org == other_id).execute()
            r = getattr(connect.client, method)(target, headers=other_auth, **kwargs)
            assert r.status_code == 404, (target, r.get_json())
            assert r.get_json()["error"]["code"] == "not_found"
            with connect.app.app_context(), database.connection_context():
                assert AccessKey.get(AccessKey.org == other_id).last_used_at is not None
    r = connect.client.get(f"/v1/connections/{conn_id}", headers=connect.auth)
    assert r.status_code == 200 and r.get_json()["id"] == conn_id
