"""A value ending in a newline is refused wherever a pattern judges it.

Python's ``$`` (and so ``re.match(r"^…$")`` and marshmallow's ``validate.Regexp``) also matches before a final
``"\\n"``; the OpenAPI documents' patterns (ECMA regex) do not. Every check here goes through the public API (or the
plugin hook the service calls) and expects the documented answer: a 400 naming the field.
"""
from __future__ import annotations

import pytest
from marshmallow import Schema

from conftest import HTTP_API_KEY
from connect_service import ConnectionType
from connect_service.testing import connection_requirement

POSTGRES = "dynamiq.connections.PostgreSQL"


def bad_request(response, field: str) -> None:
    body = response.get_json()
    assert response.status_code == 400, body
    assert body["error"]["code"] == "bad_request"
    assert field in body["error"]["details"], body


@pytest.mark.parametrize("path", ["/v1/apps", "/v1/connections", "/v1/credentials", "/v1/audit-events"])
def test_keyset_cursor_with_a_trailing_newline_is_400(connect, path):
    assert connect.client.get(path, query_string={"cursor": "123.abc"}, headers=connect.auth).status_code == 200
    bad_request(connect.client.get(path, query_string={"cursor": "123.abc\n"}, headers=connect.auth), "cursor")


def test_version_cursor_with_a_trailing_newline_is_400(connect):
    app = connect.create_app()
    path = f"/v1/apps/{app['id']}/versions"
    assert connect.client.get(path, query_string={"cursor": "2"}, headers=connect.auth).status_code == 200
    bad_request(connect.client.get(path, query_string={"cursor": "2\n"}, headers=connect.auth), "cursor")


def test_connection_type_cursor_with_a_trailing_newline_is_400(connect):
    query = {"cursor": HTTP_API_KEY}
    assert connect.client.get("/v1/connection-types", query_string=query, headers=connect.auth).status_code == 200
    query = {"cursor": HTTP_API_KEY + "\n"}
    bad_request(connect.client.get("/v1/connection-types", query_string=query, headers=connect.auth), "cursor")


def test_app_slug_with_a_trailing_newline_is_400(connect):
    body = {"name": "Slugged", "hostname": "slugged.test", "slug": "slugged\n"}
    bad_request(connect.client.post("/v1/apps", json=body, headers=connect.auth), "slug")
    app = connect.create_app()
    bad_request(connect.client.patch(f"/v1/apps/{app['id']}", json={"slug": "x\n"}, headers=connect.auth), "slug")
    assert connect.client.get(f"/v1/apps/{app['id']}", headers=connect.auth).get_json()["slug"] == app["slug"]


def test_requirement_key_with_a_trailing_newline_is_400(connect):
    app = connect.create_app()
    requirement = connection_requirement("api\n", HTTP_API_KEY)
    r = connect.client.post(f"/v1/apps/{app['id']}/versions", json={"requirements": [requirement]},
                            headers=connect.auth)
    bad_request(r, "requirements.0.key")


def _submit(connect, type_name: str, config: dict):
    app = connect.create_app_with_requirements([connection_requirement("it", type_name)])
    token = connect.token(app, "u-newline")
    return connect.submit_credentials(token, connect.requirement_id(app, "it"), type_name, config)


def test_host_field_with_a_newline_inside_a_label_is_400(connect):
    config = {"host": "db.example.com", "database": "d", "user": "u", "password": "p"}
    assert _submit(connect, POSTGRES, config).status_code == 201
    bad_request(_submit(connect, POSTGRES, {**config, "host": "db\n.example.com"}), "config.host")


def test_connection_type_name_with_a_trailing_newline_is_refused_at_start_up():
    def type_named(name: str) -> type[ConnectionType]:
        return type("Named", (ConnectionType,), {"name": name, "title": "Named", "schema": Schema})

    type_named("tests.connections.Named").check_definition()
    with pytest.raises(TypeError, match="must be 1-200 letters"):
        type_named("tests.connections.Named\n").check_definition()


