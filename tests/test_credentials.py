"""``/v1/credentials`` (seed 003 + connector settings): validation, mapping, secrets, client_credentials."""
from __future__ import annotations

import socket
import uuid

import pytest

from connect_service.connections import read_settings
from connect_service.db import database
from connect_service.access_keys import create_access_key
from connect_service.models import AccessKey, Connection, Credential, Organization
from tests.support.oauth_server import OAuthTestServer


@pytest.fixture(scope="module")
def server():
    with OAuthTestServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _reset(server):
    server.reset_records()
    server.down = False
    yield
    assert server.errors == []


def post(connect, body, expect=201):
    r = connect.client.post("/v1/credentials", json=body, headers=connect.auth)
    assert r.status_code == expect, r.get_json()
    return r.get_json()


def details(resp) -> dict:
    return resp["error"]["details"]


SEED = {  # seed 003's sample request, with our connector
    "name": "oauth credential", "mode": "OAUTH", "oauth_url": "https://example.com/auth",
    "oauth_token_url": "https://example.com/token", "oauth_client_id": "foo", "oauth_client_secret": "bar-secret-value",
    "oauth_scope": "sync", "oauth_grant_type": "authorization_code",
}


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def row(connect, cred_id):
    with connect.app.app_context(), database.connection_context():
        return Credential.get_by_id(cred_id)


# --------------------------------------------------------------------------- create / read


def test_create_seed_sample_with_generic_connector(connect):
    r = connect.client.post("/v1/credentials", json=SEED, headers=connect.auth)
    assert r.status_code == 201
    body = r.get_json()
    assert b"bar-secret-value" not in r.data
    assert body["id"].startswith("ccfg_") and body["slug"] == "oauth_credential" and body["mode"] == "OAUTH"
    assert body["connector_name"] == "oauth2" and body["read_access"] == "ORGANIZATION" and body["app_id"] is None
    assert body["oauth_url"] == "https://example.com/auth" and body["oauth_scope"] == "sync"
    assert body["oauthPkceCodeChallengeMethod"] == "S256"
    assert body["oauth_token_endpoint_auth_method"] == "client_secret_basic"
    assert body["oauth_client_secret_set"] is True and "oauth_client_secret" not in body
    assert body["restriction_type"] == "UNRESTRICTED" and body["allowed_hosts"] == [] and body["metadata"] == {}
    assert body["redirect_url"].startswith("http://connect.test/v1/connect/oauth2/start/")
    assert body["created_at"].endswith("Z")
    stored = row(connect, body["id"])
    assert "bar-secret-value" not in (stored.oauth_client_secret_encrypted or "")

    got = connect.client.get(f"/v1/credentials/{body['id']}", headers=connect.auth)
    assert got.status_code == 200 and b"bar-secret-value" not in got.data
    listed = connect.client.get("/v1/credentials", headers=connect.auth).get_json()
    assert [c["id"] for c in listed["data"]] == [body["id"]] and listed["next_cursor"] is None


def test_provider_plugin_fills_in_urls_and_defaults(connect):
    body = post(connect, {"name": "Box", "connector_name": "box", "oauth_client_id": "c", "oauth_client_secret": "s"})
    assert body["oauth_url"] == "https://account.box.com/api/oauth2/authorize"
    assert body["oauth_token_url"] == "https://api.box.com/oauth2/token"
    assert body["oauth_token_endpoint_auth_method"] == "client_secret_post"
    assert body["oauthPkceCodeChallengeMethod"] is None
    body = post(connect, {"name": "Notion", "connector_name": "notion", "oauth_client_id": "c",
                          "oauth_client_secret": "s", "oauthPkceCodeChallengeMethod": "plain",
                          "oauth_token_endpoint_auth_method": "client_secret_post"})
    assert body["oauthPkceCodeChallengeMethod"] == "plain"
    assert body["oauth_token_endpoint_auth_method"] == "client_secret_post"
    # a credential may override a provider's URLs; clearing the override restores the plugin's
    body = post(connect, {"name": "G", "connector_name": "google", "oauth_client_id": "c", "oauth_client_secret": "s",
                          "oauth_url": "https://accounts.example.test/auth"})
    assert body["oauth_url"] == "https://accounts.example.test/auth"
    r = connect.client.patch(f"/v1/credentials/{body['id']}", json={"oauth_url": None}, headers=connect.auth)
    assert r.get_json()["oauth_url"] == "https://accounts.google.com/o/oauth2/v2/auth"


def test_team_fields_map_to_apps(connect):
    app = connect.create_app()
    other = connect.create_app()
    body = post(connect, {**SEED, "team_id": app["id"]})
    assert body["app_id"] == app["id"] and body["read_access"] == "APP"
    body = post(connect, {**SEED, "team_id": app["id"], "read_access": "GLOBAL"})
    assert body["read_access"] == "ORGANIZATION"
    body = post(connect, {**SEED, "read_access": "SPECIFIC_TEAMS", "shared_team_slugs": [other["slug"]]})
    assert body["read_access"] == "SPECIFIC_APPS" and body["shared_app_slugs"] == [other["slug"]]
    body = post(connect, {**SEED, "app_id": app["id"], "read_access": "SPECIFIC_APPS",
                          "shared_app_slugs": [other["slug"]]})
    assert body["app_id"] == app["id"]

    err = post(connect, {**SEED, "read_access": "TEAM"}, expect=400)
    assert list(details(err)) == ["read_access"]
    err = post(connect, {**SEED, "read_access": "SPECIFIC_TEAMS"}, expect=400)
    assert list(details(err)) == ["shared_app_slugs"]
    err = post(connect, {**SEED, "read_access": "SPECIFIC_TEAMS", "shared_team_slugs": ["nope"]}, expect=400)
    assert list(details(err)) == ["shared_app_slugs.0"]
    err = post(connect, {**SEED, "team_id": str(uuid.uuid4())}, expect=400)
    assert list(details(err)) == ["app_id"]
    err = post(connect, {**SEED, "team_id": app["id"], "app_id": other["id"]}, expect=400)
    assert list(details(err)) == ["team_id"]


@pytest.mark.parametrize("change, field", [
    ({"connector_name": "salesforce"}, "connector_name"),
    ({"connector_name": "dynamiq.connections.HttpApiKey"}, "connector_name"),
    ({"oauth_token_url": None}, "oauth_token_url"),
    ({"oauth_url": None}, "oauth_url"),
    ({"oauth_url": "ftp://example.com/auth"}, "oauth_url"),
    ({"oauth_token_url": "http://example.com/token"}, "oauth_token_url"),
    ({"oauth_token_url": "https://user:pw@example.com/token"}, "oauth_token_url"),
    ({"oauth_client_id": ""}, "oauth_client_id"),
    ({"oauth_client_secret": None}, "oauth_client_secret"),
    ({"oauth_grant_type": "password"}, "oauth_grant_type"),
    ({"oauthPkceCodeChallengeMethod": "S512"}, "oauthPkceCodeChallengeMethod"),
    ({"oauth_token_endpoint_auth_method": "private_key_jwt"}, "oauth_token_endpoint_auth_method"),
    ({"mode": "TEXT"}, "mode"),
    ({"allowed_hosts": ["*.com"]}, "allowed_hosts.0"),
    ({"settings": {"revoke_url": "not a url"}}, "settings.revoke_url"),
    ({"settings": {"unknown": 1}}, "settings.unknown"),
    ({"name": "  "}, "name"),
    ({"surprise": True}, "surprise"),
])
def test_invalid_fields_are_400_naming_them(connect, change, field):
    err = post(connect, {**SEED, **change}, expect=400)
    assert field in details(err), details(err)


def test_blank_body_and_auth(connect):
    r = connect.client.post("/v1/credentials", headers=connect.auth)
    assert r.status_code == 400 and details(r.get_json()) == {"input": "cannot be blank"}
    assert connect.client.post("/v1/credentials", json=SEED).status_code == 401
    assert connect.client.get("/v1/credentials/ccfg_nope", headers=connect.auth).status_code == 404
    assert connect.client.patch("/v1/credentials/ccfg_nope", json={"name": "x"}, headers=connect.auth).status_code == 404


def test_connector_settings_are_validated_by_the_plugin_schema(connect):
    body = post(connect, {"name": "MS", "connector_name": "microsoft", "oauth_client_id": "c",
                          "oauth_client_secret": "s"})
    assert body["settings"] == {"tenant": "common"}
    body = post(connect, {"name": "MS", "connector_name": "microsoft", "oauth_client_id": "c",
                          "oauth_client_secret": "s", "settings": {"tenant": "contoso.onmicrosoft.com"}})
    assert body["oauth_token_url"] == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    err = post(connect, {"name": "MS", "connector_name": "microsoft", "oauth_client_id": "c",
                         "oauth_client_secret": "s", "settings": {"tenant": "../evil"}}, expect=400)
    assert list(details(err)) == ["settings.tenant"]
    err = post(connect, {"name": "G", "connector_name": "google", "oauth_client_id": "c",
                         "oauth_client_secret": "s", "settings": {"x": 1}}, expect=400)
    assert list(details(err)) == ["settings"]
    body = post(connect, {**SEED, "settings": {"revoke_url": "https://example.com/revoke"}})
    assert body["settings"] == {"revoke_url": "https://example.com/revoke"}


def test_patch_list_delete_and_other_org(connect):
    from connect_service.api.access_keys import create_access_key
    from connect_service.models import Organization

    body = post(connect, {**SEED, "allowed_hosts": ["*.Example.com", "api.example.org"], "metadata": {"a": 1}})
    assert body["allowed_hosts"] == ["*.example.com", "api.example.org"] and body["restriction_type"] == "RESTRICTED"
    before = row(connect, body["id"]).oauth_client_secret_encrypted
    r = connect.client.patch(f"/v1/credentials/{body['id']}", headers=connect.auth,
                             json={"name": "Renamed", "oauth_client_secret": "new-secret", "description": "d"})
    assert r.status_code == 200 and b"new-secret" not in r.data
    assert r.get_json()["name"] == "Renamed" and r.get_json()["slug"] == "renamed"
    assert row(connect, body["id"]).oauth_client_secret_encrypted != before
    r = connect.client.patch(f"/v1/credentials/{body['id']}", headers=connect.auth, json={"oauth_scope": 5})
    assert r.status_code == 400 and list(details(r.get_json())) == ["oauth_scope"]

    with connect.app.app_context(), database.connection_context():
        other = Organization.create(name="Other")
        _, other_key = create_access_key(other, "t")
    other_auth = {"Authorization": f"Bearer {other_key}"}
    assert connect.client.get(f"/v1/credentials/{body['id']}", headers=other_auth).status_code == 404
    assert connect.client.delete(f"/v1/credentials/{body['id']}", headers=other_auth).status_code == 404
    assert connect.client.get("/v1/credentials", headers=other_auth).get_json()["data"] == []

    for _ in range(2):
        post(connect, SEED)
    page = connect.client.get("/v1/credentials?limit=2", headers=connect.auth).get_json()
    assert len(page["data"]) == 2 and page["next_cursor"]
    rest = connect.client.get(f"/v1/credentials?limit=2&cursor={page['next_cursor']}", headers=connect.auth)
    assert len(rest.get_json()["data"]) == 1

    assert connect.client.delete(f"/v1/credentials/{body['id']}", headers=connect.auth).status_code == 204
    assert connect.client.get(f"/v1/credentials/{body['id']}", headers=connect.auth).status_code == 404


def test_expired_redirect_url_is_refused(connect, monkeypatch):
    import time

    import itsdangerous

    body = post(connect, SEED)
    real_time = time.time
    # a redirect_url signed 25 hours ago (links live 24 hours)
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real_time() - 25 * 3600)
    stale = connect.client.get(f"/v1/credentials/{body['id']}", headers=connect.auth).get_json()["redirect_url"]
    monkeypatch.undo()
    r = connect.client.get(stale)
    assert r.status_code == 400 and b"expired" in r.data


# --------------------------------------------------------------------------- client_credentials


def cc_body(server, **extra):
    client_id = f"cc-{uuid.uuid4().hex[:8]}"
    server.add_client(client_id, "cc-secret", [], token_endpoint_auth_method="client_secret_basic")
    return {"name": "machine", "connector_name": "oauth2", "oauth_token_url": server.token_url,
            "oauth_client_id": client_id, "oauth_client_secret": "cc-secret", "oauth_grant_type": "client_credentials",
            "settings": {"revoke_url": server.revoke_url}, **extra}


def test_client_credentials_fetch_refetch_and_revoke_on_delete(connect, server):
    body = post(connect, cc_body(server, oauth_scope="read"))
    assert server.token_calls("client_credentials") == 1
    assert server.token_requests[-1]["authenticated_method"] == "client_secret_basic"
    with connect.app.app_context(), database.connection_context():
        conn = Connection.get_by_id(body["connection_id"])
        first = read_settings(conn)["oauth"]["credentials"]["access_token"]
        assert conn.status == "active" and conn.type == "dynamiq.connections.OAuth2"

    # a change of the token inputs fetches again into the same connection; a rename does not
    r = connect.client.patch(f"/v1/credentials/{body['id']}", json={"name": "m2"}, headers=connect.auth)
    assert r.status_code == 200 and server.token_calls("client_credentials") == 1
    r = connect.client.patch(f"/v1/credentials/{body['id']}", json={"oauth_scope": "read write"}, headers=connect.auth)
    assert r.status_code == 200 and r.get_json()["connection_id"] == body["connection_id"]
    assert server.token_calls("client_credentials") == 2 and server.token_requests[-1]["form"]["scope"] == "read write"
    with connect.app.app_context(), database.connection_context():
        second = read_settings(Connection.get_by_id(body["connection_id"]))["oauth"]["credentials"]["access_token"]
    assert second != first

    assert connect.client.delete(f"/v1/credentials/{body['id']}", headers=connect.auth).status_code == 204
    assert [rv["token"] for rv in server.revocations] == [second] and server.revocations[0]["status"] == 200
    assert not server.token_is_active(second)
    with connect.app.app_context(), database.connection_context():
        assert Connection.get_or_none(Connection.id == body["connection_id"]) is None


def test_client_credentials_unreachable_token_endpoint_is_400_naming_it(connect, server):
    body = cc_body(server, oauth_token_url=f"http://127.0.0.1:{closed_port()}/token")
    err = post(connect, body, expect=400)
    assert list(details(err)) == ["oauth_token_url"]
    assert "could not reach the token endpoint: connection refused" in details(err)["oauth_token_url"]
    with connect.app.app_context(), database.connection_context():
        assert Credential.select().count() == 0 and Connection.select().count() == 0


def test_client_credentials_blocked_destination_is_400(connect, server):
    err = post(connect, cc_body(server, oauth_token_url="https://10.0.0.5/token"), expect=400)
    assert "not public" in details(err)["oauth_token_url"]


def test_client_credentials_rejected_or_down_is_400_with_the_provider_error(connect, server):
    err = post(connect, cc_body(server, oauth_client_secret="wrong"), expect=400)
    assert "invalid_client" in details(err)["oauth_token_url"]
    server.down = True
    err = post(connect, cc_body(server), expect=400)
    assert "HTTP 503" in details(err)["oauth_token_url"]


def test_action_account_client_credentials_are_not_fetched(connect, server):
    if connect.app.extensions["connect_registry"].by_connector("pipedream") is None:
        pytest.skip("pipedream plugin not installed")
    body = post(connect, {"name": "pd", "connector_name": "pipedream", "oauth_client_id": "pd-client",
                          "oauth_client_secret": "pd-secret", "oauth_grant_type": "client_credentials",
                          "oauth_token_url": server.token_url, "settings": {"project_id": "proj_abc123"}})
    assert server.token_calls() == 0 and body["connection_id"] is None
    assert body["settings"]["project_id"] == "proj_abc123" and body["settings"]["environment"] == "production"
    err = post(connect, {"name": "pd", "connector_name": "pipedream", "oauth_client_id": "pd-client",
                         "oauth_client_secret": "pd-secret", "oauth_grant_type": "client_credentials",
                         "settings": {}}, expect=400)
    assert "settings.project_id" in details(err)


# --------------------------------------------------------------------------- URL placeholders


@pytest.mark.parametrize("field", ["oauth_url", "oauth_token_url"])
@pytest.mark.parametrize("url", [
    "https://auth.example.com/{0}/authorize", "https://auth.example.com/{x.y}/a", "https://auth.example.com/{/a",
    "https://auth.example.com/a}", "https://auth.example.com/{client_id!r}/a",
    "https://auth.example.com/{client_id:>50}/a", "https://auth.example.com/{client_id:>999999999}/a",
    "https://auth.example.com/{tenant}/a",  # the generic connector has no tenant setting
    "https://auth.example.com/{{client_id}}/a",
])
def test_url_braces_other_than_known_placeholders_are_400_naming_the_field(connect, field, url):
    err = post(connect, {**SEED, field: url}, expect=400)
    assert list(details(err)) == [field]
    assert "{client_id}" in details(err)[field]
    created = post(connect, SEED)
    r = connect.client.patch(f"/v1/credentials/{created['id']}", json={field: url}, headers=connect.auth)
    assert r.status_code == 400 and list(r.get_json()["error"]["details"]) == [field]
    err = post(connect, {**SEED, "settings": {"revoke_url": url}}, expect=400)
    assert list(details(err)) == ["settings.revoke_url"]


def test_known_placeholders_are_filled_url_encoded(connect):
    body = post(connect, {"name": "ms", "connector_name": "microsoft", "oauth_client_id": "ms client",
                          "oauth_client_secret": "s", "settings": {"tenant": "contoso.example"},
                          "oauth_url": "https://login.example.com/{tenant}/authorize?app={client_id}",
                          "oauth_token_url": "https://login.example.com/{tenant}/token"})
    assert body["oauth_url"] == "https://login.example.com/contoso.example/authorize?app=ms%20client"
    assert body["oauth_token_url"] == "https://login.example.com/contoso.example/token"


def test_stored_urls_with_odd_braces_never_break_filling(connect):
    """Rows saved before braces were checked: filling leaves anything unknown as it is, never raises."""
    from connect_service import oauth

    cred = Credential(id="ccfg_b", org="org_b", connector_name="oauth2", oauth_client_id="cid",
                      oauth_url="https://a.example.com/{0}/{client_id:>50}/{/{client_id}",
                      oauth_token_url="https://a.example.com/{x.y}/token/{client_id}")
    with connect.app.app_context():
        provider = oauth.provider_for(cred)
    assert provider.authorize_url == "https://a.example.com/{0}/{client_id:>50}/{/cid"
    assert provider.token_url == "https://a.example.com/{x.y}/token/cid"


# --------------------------------------------------------------------------- one org-level connection


def test_parallel_client_credentials_fetches_share_one_org_connection(connect, server):
    """Concurrent saves of a credential that has no org-level connection yet create exactly one."""
    import threading

    body = post(connect, cc_body(server, oauth_scope="read"))
    for attempt in range(3):
        with connect.app.app_context(), database.connection_context():
            Connection.delete().where(Connection.credential == body["id"]).execute()
        barrier = threading.Barrier(6)
        codes = []

        def save():
            client = connect.app.test_client()
            barrier.wait()
            codes.append(client.patch(f"/v1/credentials/{body['id']}", json={"oauth_scope": "read"},
                                      headers=connect.auth).status_code)

        threads = [threading.Thread(target=save) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [200] * 6
        with connect.app.app_context(), database.connection_context():
            rows = list(Connection.select().where(Connection.credential == body["id"]))
        assert len(rows) == 1, f"attempt {attempt}: {len(rows)} org-level connections"
        assert rows[0].status == "active" and rows[0].app_id is None and rows[0].customer_id is None


# --------------------------------------------------------------------------- seed 003: owner, folder, test credential


def test_owner_is_the_creating_access_key_and_folder_id_is_stored_as_given(connect):
    body = post(connect, {**SEED, "connector_name": "oauth2", "folder_id": "Team folder / 7"})
    with connect.app.app_context(), database.connection_context():
        key = AccessKey.get(AccessKey.org == connect.org_id)
    assert body["owner"] == {"access_key_id": key.id, "name": "tests"}
    assert body["folder_id"] == "Team folder / 7"
    assert body["live_credential_id"] is None
    assert body["test_credential_enabled"] is False and body["test_credential"] is None
    r = connect.client.patch(f"/v1/credentials/{body['id']}", json={"folder_id": None}, headers=connect.auth)
    assert r.status_code == 200 and r.get_json()["folder_id"] is None
    assert r.get_json()["owner"] == body["owner"]


def test_live_credential_id_makes_a_test_credential(connect):
    live = post(connect, {**SEED, "connector_name": "oauth2", "name": "live"})
    test = post(connect, {**SEED, "connector_name": "oauth2", "name": "test", "live_credential_id": live["id"]})
    assert test["live_credential_id"] == live["id"]
    assert test["test_credential_enabled"] is False
    got = connect.client.get(f"/v1/credentials/{live['id']}", headers=connect.auth).get_json()
    assert got["test_credential_enabled"] is True
    assert got["test_credential"] == {"id": test["id"], "created_at": test["created_at"],
                                      "updated_at": test["updated_at"]}
    # one test credential per live one; no chains; not itself; only this org's
    for value, message in ((live["id"], "already has a test credential"), (test["id"], "is itself a test credential"),
                           ("ccfg_nope", "is not another credential of this organization")):
        r = connect.client.post("/v1/credentials", json={**SEED, "connector_name": "oauth2", "live_credential_id": value},
                                headers=connect.auth)
        assert r.status_code == 400 and details(r.get_json()) == {"live_credential_id": message}
    r = connect.client.patch(f"/v1/credentials/{live['id']}", json={"live_credential_id": live["id"]},
                             headers=connect.auth)
    assert r.status_code == 400 and "live_credential_id" in details(r.get_json())
    # clearing it (or deleting the test credential) turns the live one back
    r = connect.client.patch(f"/v1/credentials/{test['id']}", json={"live_credential_id": None}, headers=connect.auth)
    assert r.status_code == 200 and r.get_json()["live_credential_id"] is None
    got = connect.client.get(f"/v1/credentials/{live['id']}", headers=connect.auth).get_json()
    assert got["test_credential_enabled"] is False and got["test_credential"] is None
    # deleting the live credential leaves the test credential standing, unlinked
    connect.client.patch(f"/v1/credentials/{test['id']}", json={"live_credential_id": live["id"]}, headers=connect.auth)
    assert connect.client.delete(f"/v1/credentials/{live['id']}", headers=connect.auth).status_code == 204
    got = connect.client.get(f"/v1/credentials/{test['id']}", headers=connect.auth).get_json()
    assert got["live_credential_id"] is None


def test_live_credential_of_another_org_is_not_revealed(connect):
    other = connect.app.test_client()
    with connect.app.app_context(), database.connection_context():
        org = Organization.create(name="Other")
        _, other_key = create_access_key(org, "other")
    r = other.post("/v1/credentials", json={**SEED, "connector_name": "oauth2"},
                   headers={"Authorization": f"Bearer {other_key}"})
    assert r.status_code == 201
    r = connect.client.post("/v1/credentials", headers=connect.auth,
                            json={**SEED, "connector_name": "oauth2", "live_credential_id": r.get_json()["id"]})
    assert r.status_code == 400
    assert details(r.get_json()) == {"live_credential_id": "is not another credential of this organization"}
