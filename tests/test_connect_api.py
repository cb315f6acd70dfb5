"""End-user connect API (seeds 000, 001) driven through real HTTP requests to the app."""
import json
import sqlite3

import jwt
import pytest

from conftest import HTTP_API_KEY, SEED_REQUIREMENTS

SEED_001_RESPONSE = {
    "data": [
        {"id": None, "type": "pipedream_account", "title": "Connect your Gmail account",
         "description": "Used to send triage replies on your behalf.",
         "spec": {"type": "pipedream_account", "data": {"app_slug": "gmail"}}},
        {"id": None, "type": "connection", "title": "Helpdesk API key",
         "description": "Read-only access to your helpdesk tickets.",
         "spec": {"type": "connection", "data": {"type": "dynamiq.connections.HttpApiKey"}}},
    ]
}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def seed_app(connect):
    return connect.create_app_with_requirements(SEED_REQUIREMENTS)


def test_seed_001_list_requirements_exact_json(connect, seed_app):
    token = connect.token(seed_app, "user-1")
    r = connect.client.get("/v1/connect/requirements", headers=bearer(token))
    assert r.status_code == 200
    expected = json.loads(json.dumps(SEED_001_RESPONSE))
    expected["data"][0]["id"] = connect.requirement_id(seed_app, "gmail")
    expected["data"][1]["id"] = connect.requirement_id(seed_app, "helpdesk")
    assert r.get_json() == expected
    # the exact JSON, key order included, of every object
    assert json.loads(r.get_data(as_text=True), object_pairs_hook=list) == json.loads(
        json.dumps(expected), object_pairs_hook=list)


def test_seed_000_submit_credentials(connect, seed_app):
    token = connect.token(seed_app, "user-1")
    rid = connect.requirement_id(seed_app, "helpdesk")
    r = connect.client.post(
        f"/v1/connect/requirements/{rid}/credentials",
        data='{ "type": "dynamiq.connections.HttpApiKey", "config": { "url": "https://helpdesk.example.com/api", '
             '"api_key": "hd_live_9f3a7c1e2b54" } }',
        headers={**bearer(token), "Content-Type": "application/json"})
    assert r.status_code == 201
    assert r.get_json() == {"message": "created"}
    statuses = connect.statuses(token)
    assert statuses[rid] == "completed"
    assert statuses[connect.requirement_id(seed_app, "gmail")] == "pending"


def test_statuses_shape(connect, seed_app):
    token = connect.token(seed_app, "user-1")
    r = connect.client.get("/v1/connect/requirements/statuses", headers=bearer(token))
    items = r.get_json()["data"]
    assert [i["status"] for i in items] == ["pending", "pending"]
    assert set(items[1]) == {"id", "type", "title", "description", "spec", "status"}


def test_token_claims_and_response(connect, seed_app):
    r = connect.client.post("/v1/connect/tokens", json={"user_id": "alice"}, headers={"Host": seed_app["hostname"]})
    assert r.status_code == 201
    body = r.get_json()
    assert set(body) == {"token", "expires_at", "connect_url"}
    assert body["connect_url"] == f"http://connect.test/connect?token={body['token']}"
    assert r.headers["Cache-Control"] == "no-store"
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "HS256" and header["kid"]
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert set(claims) == {"iss", "aud", "sub", "app", "iat", "iat_us", "exp", "jti"}
    assert claims["sub"] == "alice" and claims["app"] == seed_app["id"] and claims["aud"] == "connect"
    assert claims["iss"] == "http://connect.test"
    assert claims["exp"] - claims["iat"] == 24 * 3600
    assert body["expires_at"].endswith("Z")


def test_token_via_x_forwarded_host(connect, seed_app):
    r = connect.client.post("/v1/connect/tokens", json={"user_id": "alice"},
                            headers={"Host": "internal:8000", "X-Forwarded-Host": seed_app["hostname"].upper()})
    assert r.status_code == 201


def test_token_unknown_host_and_management_host(connect):
    r = connect.client.post("/v1/connect/tokens", json={"user_id": "a"}, headers={"Host": "nope.example"})
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
    r = connect.client.post("/v1/connect/tokens", json={"user_id": "a"}, base_url="http://connect.test")
    assert r.status_code == 404


def test_app_host_serves_only_tokens(connect, seed_app):
    r = connect.client.get("/v1/apps", headers={"Host": seed_app["hostname"], **connect.auth})
    assert r.status_code == 404
    assert r.get_json() == {"error": {"code": "not_found", "message": "Not Found"}}


def test_private_app_needs_key_of_its_org(connect):
    app = connect.create_app_with_requirements(SEED_REQUIREMENTS[1:], visibility="private")
    host = {"Host": app["hostname"]}
    assert connect.client.post("/v1/connect/tokens", json={"user_id": "a"}, headers=host).status_code == 401
    wrong = {"Authorization": "Bearer ak_" + "x" * 43}
    assert connect.client.post("/v1/connect/tokens", json={"user_id": "a"}, headers={**host, **wrong}).status_code == 401
    # a key of another org
    from connect_service.api.access_keys import create_access_key
    from connect_service.models import Organization
    with connect.app.app_context():
        other = Organization.create(name="other")
        _, other_key = create_access_key(other)
    r = connect.client.post("/v1/connect/tokens", json={"user_id": "a"},
                            headers={**host, "Authorization": f"Bearer {other_key}"})
    assert r.status_code == 401
    r = connect.client.post("/v1/connect/tokens", json={"user_id": "a"}, headers={**host, **connect.auth})
    assert r.status_code == 201


@pytest.mark.parametrize("body", [None, "", "   ", "null", "{}"])
def test_blank_body_is_input_cannot_be_blank(connect, seed_app, body):
    token = connect.token(seed_app, "u")
    rid = connect.requirement_id(seed_app, "helpdesk")
    kwargs = {} if body is None else {"data": body, "content_type": "application/json"}
    r = connect.client.post(f"/v1/connect/requirements/{rid}/credentials", headers=bearer(token), **kwargs)
    assert r.status_code == 400
    assert r.get_json() == {"error": {"code": "bad_request", "message": "Bad Request",
                                      "details": {"input": "cannot be blank"}}}


@pytest.mark.parametrize("payload,field", [
    ({"type": "dynamiq.connections.HttpApiKey", "config": {"url": "https://x.example"}}, "config.api_key"),
    ({"type": "dynamiq.connections.HttpApiKey", "config": {"url": "ftp://x.example", "api_key": "k"}}, "config.url"),
    ({"type": "dynamiq.connections.HttpApiKey", "config": {"url": "https://x.example", "api_key": ""}},
     "config.api_key"),
    ({"type": "dynamiq.connections.Http", "config": {"url": "https://x.example"}}, "type"),
    ({"config": {"url": "https://x.example", "api_key": "k"}}, "type"),
    ({"type": "dynamiq.connections.HttpApiKey"}, "config"),
    ({"type": "dynamiq.connections.HttpApiKey", "config": "nope"}, "config"),
    ({"type": "dynamiq.connections.HttpApiKey", "config": {"url": "https://x.example", "api_key": "k", "x": 1}},
     "config.x"),
])
def test_bad_credentials_name_the_field(connect, seed_app, payload, field):
    token = connect.token(seed_app, "u")
    rid = connect.requirement_id(seed_app, "helpdesk")
    r = connect.client.post(f"/v1/connect/requirements/{rid}/credentials", json=payload, headers=bearer(token))
    assert r.status_code == 400, r.get_json()
    assert field in r.get_json()["error"]["details"]
    assert "hd_" not in r.get_data(as_text=True)


def test_malformed_json_is_400(connect, seed_app):
    token = connect.token(seed_app, "u")
    rid = connect.requirement_id(seed_app, "helpdesk")
    r = connect.client.post(f"/v1/connect/requirements/{rid}/credentials", data="{not json",
                            content_type="application/json", headers=bearer(token))
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {"input": "is not valid JSON"}


def test_type_must_be_a_string_and_user_id_not_blank(connect, seed_app):
    token = connect.token(seed_app, "u")
    rid = connect.requirement_id(seed_app, "helpdesk")
    r = connect.client.post(f"/v1/connect/requirements/{rid}/credentials", json={"type": 1, "config": {}},
                            headers=bearer(token))
    assert r.get_json()["error"]["details"]["type"] == "must be a string"
    r = connect.client.post("/v1/connect/tokens", json={"user_id": "   "}, headers={"Host": seed_app["hostname"]})
    assert r.status_code == 400 and "user_id" in r.get_json()["error"]["details"]


def test_requirement_retyped_in_a_new_version_is_pending_again(connect, seed_app):
    token = connect.token(seed_app, "u")
    rid = connect.requirement_id(seed_app, "helpdesk")
    connect.submit_credentials(token, rid, HTTP_API_KEY, {"url": "https://h.example", "api_key": "k"})
    retyped = dict(SEED_REQUIREMENTS[1], spec={"type": "connection", "data": {"type": "dynamiq.connections.OpenAI"}})
    connect.deploy(seed_app, [retyped])
    assert connect.statuses(token)[rid] == "pending"


def test_disabled_connection_refuses_new_credentials(connect, seed_app):
    token = connect.token(seed_app, "u")
    rid = connect.requirement_id(seed_app, "helpdesk")
    connect.submit_credentials(token, rid, HTTP_API_KEY, {"url": "https://h.example", "api_key": "k"})
    conn_id = connect.client.get(f"/v1/connections?app_id={seed_app['id']}", headers=connect.auth).get_json()["data"][0]["id"]
    assert connect.client.patch(f"/v1/connections/{conn_id}", json={"disabled": True},
                                headers=connect.auth).status_code == 200
    r = connect.submit_credentials(token, rid, HTTP_API_KEY, {"url": "https://h.example", "api_key": "k2"})
    assert r.status_code == 409 and "disabled" in r.get_json()["error"]["details"]["input"]
    assert connect.statuses(token)[rid] == "pending"


def test_pipedream_requirement_rejects_credentials(connect, seed_app):
    token = connect.token(seed_app, "u")
    rid = connect.requirement_id(seed_app, "gmail")
    r = connect.submit_credentials(token, rid, "pipedream_account", {"x": "y"})
    assert r.status_code == 400
    assert "accounts" in r.get_json()["error"]["details"]["input"]


def test_unknown_requirement_is_404_whatever_the_body(connect, seed_app):
    token = connect.token(seed_app, "u")
    r = connect.client.post("/v1/connect/requirements/00000000-0000-0000-0000-000000000000/credentials",
                            data="", headers=bearer(token))
    assert r.status_code == 404


def test_resubmission_updates_in_place(connect, seed_app):
    from connect_service.connections import read_settings
    from connect_service.models import Connection

    token = connect.token(seed_app, "u")
    rid = connect.requirement_id(seed_app, "helpdesk")
    for key in ("first_key", "second_key"):
        r = connect.submit_credentials(token, rid, HTTP_API_KEY, {"url": "https://h.example", "api_key": key})
        assert r.status_code == 201
    with connect.app.app_context():
        rows = list(Connection.select().where(Connection.app == seed_app["id"]))
        assert len(rows) == 1
        assert read_settings(rows[0])["api_key"] == "second_key"


def test_isolation_between_apps_and_users(connect, seed_app):
    other_app = connect.create_app_with_requirements(SEED_REQUIREMENTS)
    token_a_u = connect.token(seed_app, "u")
    token_a_v = connect.token(seed_app, "v")
    token_b_u = connect.token(other_app, "u")
    rid_a = connect.requirement_id(seed_app, "helpdesk")
    rid_b = connect.requirement_id(other_app, "helpdesk")
    # a token of app A cannot touch app B's requirement
    r = connect.submit_credentials(token_a_u, rid_b, HTTP_API_KEY, {"url": "https://h.example", "api_key": "k"})
    assert r.status_code == 404
    assert connect.submit_credentials(token_a_u, rid_a, HTTP_API_KEY,
                                      {"url": "https://h.example", "api_key": "k"}).status_code == 201
    assert connect.statuses(token_a_u)[rid_a] == "completed"
    assert connect.statuses(token_a_v)[rid_a] == "pending"
    assert connect.statuses(token_b_u)[rid_b] == "pending"


def test_no_deployed_version_is_404(connect):
    app = connect.create_app()
    token = connect.token(app, "u")
    r = connect.client.get("/v1/connect/requirements", headers=bearer(token))
    assert r.status_code == 404


def test_requirement_ids_survive_redeploy(connect, seed_app):
    token = connect.token(seed_app, "u")
    rid = connect.requirement_id(seed_app, "helpdesk")
    connect.submit_credentials(token, rid, HTTP_API_KEY, {"url": "https://h.example", "api_key": "k"})
    version = connect.deploy(seed_app, list(reversed(SEED_REQUIREMENTS)))
    assert version["number"] == 2
    r = connect.client.get("/v1/connect/requirements", headers=bearer(token))
    assert [i["id"] for i in r.get_json()["data"]] == [rid, connect.requirement_id(seed_app, "gmail")]
    assert connect.statuses(token)[rid] == "completed"


def test_auth_kinds_are_not_interchangeable(connect, seed_app):
    token = connect.token(seed_app, "u")
    assert connect.client.get("/v1/connect/requirements", headers=connect.auth).status_code == 401
    assert connect.client.get("/v1/apps", headers=bearer(token)).status_code == 401
    assert connect.client.get("/v1/connect/requirements").status_code == 401


@pytest.mark.parametrize("mutate", ["expired", "garbage", "wrong_key", "alg_none", "other_issuer"])
def test_bad_tokens_are_401(connect, seed_app, mutate):
    import datetime

    from connect_service.testing import TEST_SECRET_KEY
    from connect_service.tokens import mint_connect_token, signing_kid

    good = connect.token(seed_app, "u")
    claims = jwt.decode(good, options={"verify_signature": False})
    if mutate == "expired":
        token, _ = mint_connect_token(TEST_SECRET_KEY, "http://connect.test", seed_app["id"], "u",
                                      now=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2))
    elif mutate == "garbage":
        token = "not.a.jwt"
    elif mutate == "wrong_key":
        other = "another-secret-key-" + "y" * 32
        token = jwt.encode(claims, other.encode(), algorithm="HS256", headers={"kid": signing_kid(other)})
    elif mutate == "alg_none":
        token = jwt.encode(claims, None, algorithm="none", headers={"kid": signing_kid(TEST_SECRET_KEY)})
    else:
        token = jwt.encode(dict(claims, iss="http://evil.test"), TEST_SECRET_KEY.encode(), algorithm="HS256",
                           headers={"kid": signing_kid(TEST_SECRET_KEY)})
    r = connect.client.get("/v1/connect/requirements", headers=bearer(token))
    assert r.status_code == 401
    assert r.get_json() == {"error": {"code": "unauthorized", "message": "Unauthorized"}}


def test_api_key_is_encrypted_at_rest(connect, seed_app, connect_config):
    token = connect.token(seed_app, "u")
    rid = connect.requirement_id(seed_app, "helpdesk")
    connect.submit_credentials(token, rid, HTTP_API_KEY, {"url": "https://h.example", "api_key": "hd_live_9f3a7c1e2b54"})
    from connect_service.db import database, is_postgres
    from connect_service.models import Connection

    with connect.app.app_context():
        if is_postgres():
            rows = database.execute_sql("SELECT * FROM connection").fetchall()
            dump = repr(rows)
        else:
            con = sqlite3.connect(connect_config["database_url"].removeprefix("sqlite:///"))
            dump = "\n".join(con.iterdump())
            con.close()
        assert "hd_live_9f3a7c1e2b54" not in dump
        cipher = Connection.get().settings_encrypted
        assert cipher.startswith("v1:")
