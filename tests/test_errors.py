"""Every route answers errors in the one shape, and bad input is never a 500."""
import re

import pytest

ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type", 429: "too_many_requests", 502: "bad_gateway"}


def assert_error_shape(response):
    body = response.get_json()
    assert body is not None, (response.status_code, response.get_data(as_text=True)[:200])
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"code", "message", "details"}, error
    assert error["code"] == ERROR_CODES[response.status_code], body
    assert isinstance(error["message"], str) and error["message"]
    if "details" in error:
        assert isinstance(error["details"], dict) and error["details"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in error["details"].items())


def concrete(rule):
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: "1" if "int" in m.group(0) else "unknown-" + m.group(1),
                  rule)


BODIES = [None, "", "null", "{}", "[]", "{bad json", '{"x": 1}', '{"name": 5, "hostname": []}', '"text"']


def api_routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith(("/docs", "/openapi")):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.rule, method


def test_walk_every_route_with_bad_input(connect, app_with_key):
    token = connect.token(app_with_key, "u")
    auths = [{}, connect.auth, {"Authorization": f"Bearer {token}"}, {"Authorization": "Bearer garbage"}]
    seen = 0
    for rule, method in api_routes(connect.app):
        path = concrete(rule)
        for headers in auths:
            for body in BODIES if method in ("POST", "PUT", "PATCH") else [None]:
                kwargs = {"headers": {**headers, "Accept": "application/json"}}
                if body is not None:
                    kwargs.update(data=body, content_type="application/json")
                r = connect.client.open(path, method=method, **kwargs)
                seen += 1
                assert r.status_code < 500, (method, path, headers, body, r.get_data(as_text=True)[:300])
                if r.status_code >= 400 and not rule.startswith("/connect"):
                    assert_error_shape(r)
    assert seen > 50


def test_hosted_page_routes_answer_html_pages(connect):
    """Browser pages (the hosted page) answer errors as pages, never a 500 or a traceback."""
    for rule, method in api_routes(connect.app):
        if not rule.startswith("/connect"):
            continue
        r = connect.client.open(concrete(rule), method=method)
        assert 400 <= r.status_code < 500 or r.status_code in (200, 302, 303), (method, rule, r.status_code)
        assert "Traceback" not in r.get_data(as_text=True)


def test_unknown_route_and_method(connect):
    r = connect.client.get("/nope")
    assert r.status_code == 404
    assert r.get_json() == {"error": {"code": "not_found", "message": "Not Found"}}
    r = connect.client.put("/v1/apps", headers=connect.auth)
    assert r.status_code == 405
    assert r.get_json()["error"] == {"code": "method_not_allowed", "message": "Method Not Allowed"}
    assert "GET" in r.headers["Allow"]


def test_non_json_content_type(connect):
    r = connect.client.post("/v1/apps", data="name=x", content_type="application/x-www-form-urlencoded",
                            headers=connect.auth)
    assert r.status_code == 415
    assert_error_shape(r)


def test_unexpected_exception_is_500_shape_without_message(connect, monkeypatch, caplog):
    from connect_service.api import apps

    def boom(*a, **k):
        raise RuntimeError("-".join(["secret", "value", "in", "exception"]))

    monkeypatch.setattr(apps, "app_view", boom)
    r = connect.client.post("/v1/apps", json={"name": "x", "hostname": "boom.test"}, headers=connect.auth)
    assert r.status_code == 500
    assert r.get_json() == {"error": {"code": "internal_server_error", "message": "Internal Server Error"}}
    assert "secret-value-in-exception" not in caplog.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health(connect, path):
    r = connect.client.get(path)
    assert r.status_code == 200 and r.get_json()["status"] == "ok"


def test_openapi_and_docs(connect):
    r = connect.client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.get_json()
    assert spec["openapi"].startswith("3.")
    assert "/v1/connect/requirements" in spec["paths"]
    assert "/v1/apps" in spec["paths"]
    assert connect.client.get("/docs").status_code == 200


def test_nul_characters_are_400_naming_the_field(connect, app_with_key):
    """PostgreSQL text cannot hold NUL: it is refused as bad input, never a driver error (500)."""
    r = connect.client.post("/v1/apps", json={"name": "a\x00b", "hostname": "nul.test"}, headers=connect.auth)
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {"name": "must not contain NUL characters"}
    r = connect.client.post("/v1/apps", json={"name": "x", "hostname": "nul.test", "return_urls": ["https://a\x00"]},
                            headers=connect.auth)
    assert r.status_code == 400 and "return_urls.0" in r.get_json()["error"]["details"]
    r = connect.client.get("/v1/apps?cursor=a%00", headers=connect.auth)
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {"cursor": "must not contain NUL characters"}
    r = connect.client.get("/v1/apps/app%00id", headers=connect.auth)
    assert r.status_code == 404
    token = connect.token(app_with_key, "u")
    rid = connect.requirement_id(app_with_key, "helpdesk")
    r = connect.submit_credentials(token, rid, "dynamiq.connections.HttpApiKey",
                                   {"url": "https://h.example", "api_key": "k\x00"})
    assert r.status_code == 400 and "config.api_key" in r.get_json()["error"]["details"]


def test_deeply_nested_json_is_400(connect, app_with_key):
    body = "[" * 100000 + "]" * 100000
    r = connect.client.post("/v1/apps", data=body, content_type="application/json", headers=connect.auth)
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {"input": "is nested too deeply"}
    r = connect.client.post("/v1/connect/tokens", data=body, content_type="application/json",
                            headers={"Host": app_with_key["hostname"]})
    assert r.status_code == 400


def test_huge_version_number_is_404(connect):
    app = connect.create_app()
    r = connect.client.post(f"/v1/apps/{app['id']}/versions/9223372036854775808/deploy", headers=connect.auth)
    assert r.status_code == 404
