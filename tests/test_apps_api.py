"""Management API: apps, versions, deploy, access keys."""
import pytest

from conftest import API_KEY_ONLY


def test_create_app_defaults_and_lowercase(connect):
    r = connect.client.post("/v1/apps", json={"name": "Triage", "hostname": "Triage.Example.COM"}, headers=connect.auth)
    assert r.status_code == 201
    app = r.get_json()
    assert app["visibility"] == "private"
    assert app["hostname"] == "triage.example.com"
    assert app["slug"] == "triage"
    assert app["deployed_version"] is None
    r = connect.client.post("/v1/apps", json={"name": "Other", "hostname": "triage.example.com"}, headers=connect.auth)
    assert r.status_code == 409 and "hostname" in r.get_json()["error"]["details"]


@pytest.mark.parametrize("body,field", [
    ({"hostname": "a.test"}, "name"),
    ({"name": "x"}, "hostname"),
    ({"name": "x", "hostname": "https://a.test/"}, "hostname"),
    ({"name": "x", "hostname": "a.test", "visibility": "secret"}, "visibility"),
    ({"name": "x", "hostname": "a.test", "return_urls": ["javascript:alert(1)"]}, "return_urls.0"),
    ({"name": " ", "hostname": "a.test"}, "name"),
])
def test_create_app_validation(connect, body, field):
    r = connect.client.post("/v1/apps", json=body, headers=connect.auth)
    assert r.status_code == 400
    assert field in r.get_json()["error"]["details"], r.get_json()


def test_list_paginates(connect):
    for i in range(5):
        connect.create_app()
    seen, cursor = [], None
    while True:
        q = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = connect.client.get("/v1/apps" + q, headers=connect.auth).get_json()
        seen += [a["id"] for a in body["data"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 5
    assert connect.client.get("/v1/apps?cursor=%%%", headers=connect.auth).status_code == 400
    assert connect.client.get("/v1/apps?limit=0", headers=connect.auth).status_code == 400


def test_get_patch_delete(connect):
    app = connect.create_app()
    r = connect.client.patch(f"/v1/apps/{app['id']}", json={"visibility": "private", "return_urls": ["https://a.test/x"]},
                             headers=connect.auth)
    assert r.status_code == 200 and r.get_json()["return_urls"] == ["https://a.test/x"]
    assert connect.client.get(f"/v1/apps/{app['id']}", headers=connect.auth).get_json()["visibility"] == "private"
    assert connect.client.delete(f"/v1/apps/{app['id']}", headers=connect.auth).status_code == 204
    assert connect.client.get(f"/v1/apps/{app['id']}", headers=connect.auth).status_code == 404


def test_other_org_sees_404(connect):
    from connect_service.api.access_keys import create_access_key
    from connect_service.models import Organization

    app = connect.create_app()
    with connect.app.app_context():
        _, other_key = create_access_key(Organization.create(name="other"))
    other = {"Authorization": f"Bearer {other_key}"}
    assert connect.client.get(f"/v1/apps/{app['id']}", headers=other).status_code == 404
    assert connect.client.patch(f"/v1/apps/{app['id']}", json={"name": "x"}, headers=other).status_code == 404
    assert connect.client.post(f"/v1/apps/{app['id']}/versions", json={}, headers=other).status_code == 404
    assert connect.client.get("/v1/apps", headers=other).get_json()["data"] == []


def test_versions_numbered_and_deployed(connect):
    app = connect.create_app()
    r = connect.client.post(f"/v1/apps/{app['id']}/versions", json={"requirements": API_KEY_ONLY}, headers=connect.auth)
    assert r.status_code == 201
    v = r.get_json()
    assert v["number"] == 1 and v["deployed_at"] is None
    assert v["requirements"][0]["key"] == "helpdesk"
    assert connect.client.post(f"/v1/apps/{app['id']}/versions", json={"requirements": API_KEY_ONLY},
                               headers=connect.auth).get_json()["number"] == 2
    r = connect.client.post(f"/v1/apps/{app['id']}/versions/2/deploy", headers=connect.auth)
    assert r.status_code == 200 and r.get_json()["deployed_at"].endswith("Z")
    assert connect.client.get(f"/v1/apps/{app['id']}", headers=connect.auth).get_json()["deployed_version"] == 2
    assert connect.client.post(f"/v1/apps/{app['id']}/versions/9/deploy", headers=connect.auth).status_code == 404


@pytest.mark.parametrize("req,field", [
    ({"key": "a", "type": "connection", "title": "A", "spec": {"type": "connection", "data": {"type": "nope"}}},
     "requirements.0.spec.data.type"),
    ({"key": "a", "type": "connection", "title": "A", "spec": {"type": "other", "data": {}}},
     "requirements.0.spec.type"),
    ({"key": "a b", "type": "connection", "title": "A", "spec": {"type": "connection", "data": {}}},
     "requirements.0.key"),
    ({"key": "a", "type": "connection", "spec": {"type": "connection", "data": {}}}, "requirements.0.title"),
])
def test_version_validation(connect, req, field):
    app = connect.create_app()
    r = connect.client.post(f"/v1/apps/{app['id']}/versions", json={"requirements": [req]}, headers=connect.auth)
    assert r.status_code == 400
    assert field in r.get_json()["error"]["details"], r.get_json()


def test_access_keys_lifecycle(connect):
    r = connect.client.post("/v1/access-keys", json={"name": "ci"}, headers=connect.auth)
    assert r.status_code == 201
    created = r.get_json()
    assert created["key"].startswith("ak_") and len(created["key"]) >= 35
    new = {"Authorization": f"Bearer {created['key']}"}
    assert connect.client.get("/v1/apps", headers=new).status_code == 200
    listed = connect.client.get("/v1/access-keys", headers=connect.auth).get_json()["data"]
    assert all("key" not in k for k in listed)
    assert connect.client.delete(f"/v1/access-keys/{created['id']}", headers=connect.auth).status_code == 200
    assert connect.client.get("/v1/apps", headers=new).status_code == 401


def test_access_keys_stored_hashed(connect):
    import hashlib

    from connect_service.models import AccessKey

    with connect.app.app_context():
        row = AccessKey.get()
        assert row.key_hash == hashlib.sha256(connect.access_key.encode()).hexdigest()
        assert connect.access_key not in repr(row.__data__)


@pytest.mark.parametrize("hostname,reason", [("127.0.0.1", "IP address"), ("connect.test", "own host")])
def test_app_hostname_cannot_shadow_the_service(connect, hostname, reason):
    r = connect.client.post("/v1/apps", json={"name": "x", "hostname": hostname}, headers=connect.auth)
    assert r.status_code == 400 and reason in r.get_json()["error"]["details"]["hostname"]


def test_versions_list_paginates(connect):
    app = connect.create_app()
    for _ in range(3):
        connect.client.post(f"/v1/apps/{app['id']}/versions", json={"requirements": API_KEY_ONLY}, headers=connect.auth)
    first = connect.client.get(f"/v1/apps/{app['id']}/versions?limit=2", headers=connect.auth).get_json()
    assert [v["number"] for v in first["data"]] == [1, 2] and first["next_cursor"] == "2"
    rest = connect.client.get(f"/v1/apps/{app['id']}/versions?limit=2&cursor=2", headers=connect.auth).get_json()
    assert [v["number"] for v in rest["data"]] == [3] and rest["next_cursor"] is None
    assert connect.client.get(f"/v1/apps/{app['id']}/versions?cursor=x", headers=connect.auth).status_code == 400


def test_sqlite_runs_in_wal_mode(connect):
    from connect_service.db import database, is_postgres

    if is_postgres():
        pytest.skip("journal mode is a SQLite setting; this run uses PostgreSQL")
    with connect.app.app_context():
        assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_deleting_an_app_deletes_its_connections_and_own_credentials(connect):
    """Connections go through the same path as DELETE /v1/connections/{id} (hook fired, secrets gone)."""
    from connect_service.models import Connection, Credential

    app = connect.create_app_with_requirements(API_KEY_ONLY)
    token = connect.token(app, "u")
    r = connect.submit_credentials(token, connect.requirement_id(app, "helpdesk"), "dynamiq.connections.HttpApiKey",
                                   {"url": "https://h.example", "api_key": "k"})
    assert r.status_code == 201
    cred = connect.client.post("/v1/credentials", headers=connect.auth, json={
        "name": "own", "mode": "OAUTH", "connector_name": "oauth2", "app_id": app["id"], "read_access": "APP",
        "oauth_url": "https://idp.example.com/authorize", "oauth_token_url": "https://idp.example.com/token",
        "oauth_client_id": "c", "oauth_client_secret": "s", "oauth_grant_type": "authorization_code"})
    assert cred.status_code == 201, cred.get_json()
    assert connect.client.delete(f"/v1/apps/{app['id']}", headers=connect.auth).status_code == 204
    with connect.app.app_context():
        assert Connection.select().count() == 0
        assert Credential.select().count() == 0
    assert [c["connection"]["customer_id"] for c in connect.hooks.of("connection_revoked")] == ["u"]
    assert connect.client.get("/v1/connections", headers=connect.auth).get_json()["data"] == []
