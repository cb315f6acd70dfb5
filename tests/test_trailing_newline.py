"""A value ending in a newline is refused wherever a pattern judges it.

Python's ``$`` (and so ``re.match(r"^…$")`` and marshmallow's ``validate.Regexp``) also matches before a final
``"\\n"``; the OpenAPI documents' patterns (ECMA regex) do not. Every check here goes through the public API (or the
plugin hook the service calls) and expects the documented answer: a 400 naming the field.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from marshmallow import Schema

from conftest import HTTP_API_KEY
from connect_service import ConnectionType
from connect_service.testing import connection_requirement

POSTGRES = "dynamiq.connections.PostgreSQL"
AWS = "dynamiq.connections.AWS"
HTTP = "dynamiq.connections.Http"


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


@pytest.mark.parametrize("field, value", [("access_key_id", "AKIAIOSFODNN7EXAMPLE\n"), ("region", "us-east-1\n")])
def test_aws_config_with_a_trailing_newline_is_400(connect, field, value):
    config = {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "s", "region": "us-east-1"}
    assert _submit(connect, AWS, config).status_code == 201
    bad_request(_submit(connect, AWS, {**config, field: value}), f"config.{field}")


def test_http_header_name_with_a_trailing_newline_is_400(connect):
    config = {"url": "https://api.example.com", "headers": {"X-Api-Key": "v"}}
    assert _submit(connect, HTTP, config).status_code == 201
    bad_request(_submit(connect, HTTP, {**config, "headers": {"X-Api-Key\n": "v"}}), "config.headers")


def test_requirement_header_with_a_trailing_newline_falls_back_to_bearer(connect):
    cls = connect.registry.types[HTTP_API_KEY]
    assert cls.proxy_injection({"header": "X-Api-Key"}) == ("header", "X-Api-Key")
    assert cls.proxy_injection({"header": "X-Api-Key\n"}) == ("bearer", None)


def _credential(connect, connector: str, settings: dict):
    body = {"name": connector, "connector_name": connector, "oauth_client_id": "c", "oauth_client_secret": "s",
            "settings": settings}
    return connect.client.post("/v1/credentials", json=body, headers=connect.auth)


def test_microsoft_tenant_with_a_trailing_newline_is_400(connect):
    assert _credential(connect, "microsoft", {"tenant": "contoso.onmicrosoft.com"}).status_code == 201
    bad_request(_credential(connect, "microsoft", {"tenant": "common\n"}), "settings.tenant")


def test_pipedream_project_id_with_a_trailing_newline_is_400(connect):
    if connect.registry.by_connector("pipedream") is None:
        pytest.skip("pipedream plugin not installed")
    assert _credential(connect, "pipedream", {"project_id": "proj_abc123"}).status_code == 201
    bad_request(_credential(connect, "pipedream", {"project_id": "proj_abc123\n"}), "settings.project_id")


def test_connection_type_name_with_a_trailing_newline_is_refused_at_start_up():
    def type_named(name: str) -> type[ConnectionType]:
        return type("Named", (ConnectionType,), {"name": name, "title": "Named", "schema": Schema})

    type_named("tests.connections.Named").check_definition()
    with pytest.raises(TypeError, match="must be 1-200 letters"):
        type_named("tests.connections.Named\n").check_definition()



def _regexp_calls_anchored_at_the_end(source: str) -> list[int]:
    """Lines of ``validate.Regexp(<pattern>)`` calls whose pattern ends with ``$`` or is not a literal."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Regexp":
            pattern = node.args[0] if node.args else None
            if not (isinstance(pattern, ast.Constant) and not str(pattern.value).endswith("$")):
                lines.append(node.lineno)
    return lines


def test_no_end_anchored_pattern_is_judged_with_re_match():
    """The siblings stay fixed: an end-anchored pattern in the core or a built-in plugin uses ``fields.FullMatch``."""
    root = Path(__file__).resolve().parent.parent
    offenders = [f"{path.relative_to(root)}:{line}" for folder in ("connect_service", "plugins")
                 for path in sorted((root / folder).rglob("*.py"))
                 for line in _regexp_calls_anchored_at_the_end(path.read_text())]
    assert offenders == []
    assert _regexp_calls_anchored_at_the_end('validate.Regexp(r"^[a-z]+$")') == [1]
