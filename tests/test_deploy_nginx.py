"""The deployment as shipped: ``deploy/nginx-connect.conf`` over https in front of gunicorn
(``deploy/gunicorn.conf.py``, 3 workers, production mode, ``proxy_count = 1``) on a PostgreSQL
database of this module's own, set up with the operator's CLI commands.

Every request goes through nginx with real TLS (a self-signed certificate for ``connect.test``
and ``*.apps.test``, verified, SNI = the Host). Run with ``pytest -m nginx``; ``scripts/test.sh``
installs Debian's nginx first.
"""
from __future__ import annotations

import re
import ssl
import time
from urllib.parse import urlencode

import pytest

from connect_service.testing import make_config
from tests.support import pg
from tests.support.gunicorn_server import GunicornServer
from tests.support.live_service import LiveClient, cli, last_json, requirement, requirement_id
from tests.support.nginx_server import NginxSite, find_nginx
from tests.support.oauth_server import OAuthTestServer

pytestmark = [pytest.mark.nginx, pytest.mark.slow]

PUBLIC_HOST = "connect.test"
HTTP_API_KEY = "dynamiq.connections.HttpApiKey"
OAUTH2 = "dynamiq.connections.OAuth2"
TOKENS_PER_MINUTE = 10


class Deployment(LiveClient):
    """The API through nginx over https (SNI and Host = ``host``, certificate verified)."""

    def __init__(self, nginx: NginxSite, gunicorn: GunicornServer, access_key: str, oauth: OAuthTestServer):
        self.nginx, self.gunicorn, self.access_key, self.oauth = nginx, gunicorn, access_key, oauth
        self.public_url = f"https://{PUBLIC_HOST}:{nginx.https_port}"

    def call(self, method, path, body=None, host=None, auth=None, headers=None, source="127.0.0.1"):
        body, headers = self._prepare(body, auth, headers)
        status, resp_headers, payload = self.nginx.request(method, host or PUBLIC_HOST, path, body, headers,
                                                           source=source)
        return status, resp_headers, self._parse(resp_headers.get("Content-Type"), payload)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    if find_nginx() is None:
        pytest.skip("nginx is not installed (scripts/test.sh installs it: apt-get install nginx)")
    if not pg.reachable():
        pytest.fail(f"PostgreSQL is not reachable at {pg.ADMIN_URL} (CONNECT_TEST_PG_ADMIN_URL)")
    tmp = tmp_path_factory.mktemp("deploy")
    with pg.temporary_database("cs_nginx") as dbname, OAuthTestServer() as oauth:
        oauth.auto_approve = True
        cfg = make_config(tmp, env="production", database_url=pg.url_for(dbname), proxy_count=1,
                          rate_limit_tokens_per_minute=TOKENS_PER_MINUTE, rate_limit_credentials_per_minute=20)
        gunicorn = GunicornServer(cfg, str(tmp / "gunicorn.log"), workers=3)
        nginx = NginxSite(str(tmp / "nginx"), gunicorn.port, [PUBLIC_HOST, "*.apps.test"])
        gunicorn.env["CONNECT_PUBLIC_URL"] = f"https://{PUBLIC_HOST}:{nginx.https_port}"
        cli(gunicorn.env, "migrate")
        org = last_json(cli(gunicorn.env, "create-org", "Deployment test org").stdout)
        key = last_json(cli(gunicorn.env, "create-access-key", "--org", org["id"], "--name", "deploy test").stdout)
        access_key = key["key"]
        gunicorn.start()
        try:
            nginx.start()
            try:
                yield Deployment(nginx, gunicorn, access_key, oauth)
            finally:
                nginx.stop()
        finally:
            gunicorn.stop()
        assert oauth.errors == []


def test_http_redirects_to_https_and_https_answers_carry_hsts(deployment):
    status, headers, _ = deployment.nginx.request("GET", PUBLIC_HOST, "/readyz?probe=1", https=False)
    assert status == 301
    assert headers["Location"] == f"https://{PUBLIC_HOST}/readyz?probe=1"
    status, headers, body = deployment.call("GET", "/readyz")
    assert status == 200 and body["database"] == "ok"
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    # errors carry it too
    status, headers, _ = deployment.call("GET", "/v1/apps")
    assert status == 401 and "max-age" in headers["Strict-Transport-Security"]


def test_a_token_is_minted_on_an_app_host_that_server_name_covers(deployment):
    app = deployment.create_app([requirement("helpdesk", HTTP_API_KEY)], domain="apps.test")
    status, _, body = deployment.mint(app, "alice")
    assert status == 201, body
    assert deployment.statuses(body["token"]) == {requirement_id(app, "helpdesk"): "pending"}
    # the management host does not mint (the app is chosen by its host, not by a body field)
    status, _, body = deployment.call("POST", "/v1/connect/tokens", {"user_id": "alice"})
    assert status == 404 and body["error"]["code"] == "not_found"
    # a name outside server_name never reaches the service: nginx refuses the TLS handshake
    with pytest.raises(ssl.SSLError):
        deployment.call("POST", "/v1/connect/tokens", {"user_id": "alice"}, host="shop.elsewhere.test")


def test_hosted_page_and_a_credentials_form_submit(deployment):
    app = deployment.create_app([requirement("helpdesk", HTTP_API_KEY)], domain="apps.test")
    token = deployment.token(app, "bob")
    req_id = requirement_id(app, "helpdesk")
    status, headers, _ = deployment.call("GET", "/connect?" + urlencode({"token": token}))
    assert status == 303, headers
    page_path = headers["Location"]
    cookies = "; ".join(c.split(";", 1)[0] for c in headers.get_all("Set-Cookie"))
    assert all("Secure" in c for c in headers.get_all("Set-Cookie"))  # https public URL: Secure cookies
    status, _, html = deployment.call("GET", page_path, headers={"Cookie": cookies})
    assert status == 200 and b"Connect helpdesk" in html
    csrf = re.search(rb'name="csrf_token" value="([^"]+)"', html).group(1).decode()
    action = re.search(rb'action="([^"]*/requirements/' + req_id.encode() + rb'/credentials)"', html).group(1)
    form = urlencode({"csrf_token": csrf, "config.url": "https://api.example.com", "config.api_key": "k-123"})
    status, headers, _ = deployment.call("POST", action.decode(), form.encode(), headers={
        "Cookie": cookies, "Content-Type": "application/x-www-form-urlencoded",
        "Origin": deployment.public_url})
    assert status == 303, headers
    assert deployment.statuses(token) == {req_id: "completed"}
    # and the same through the JSON API
    other = deployment.token(app, "bob-api")
    status, _, body = deployment.call("POST", f"/v1/connect/requirements/{req_id}/credentials",
                                      {"type": HTTP_API_KEY, "config": {"url": "https://api.example.com",
                                                                        "api_key": "k-456"}}, auth=other)
    assert status == 201, body
    assert deployment.statuses(other) == {req_id: "completed"}


def test_oauth2_flow_returns_to_the_https_public_callback(deployment):
    cred = deployment.oauth_credential("oauth2")
    callback = cred["callback"]
    assert callback.startswith(deployment.public_url + "/v1/connect/oauth2/callback")
    app = deployment.create_app([requirement("account", OAUTH2)], domain="apps.test")
    token = deployment.token(app, "carol")
    req_id = requirement_id(app, "account")
    started, back = deployment.start_flow(token, req_id, callback)
    status, _, page = deployment.call("GET", back)
    assert status == 200 and b"Connected" in page, page[:500]
    assert deployment.statuses(token) == {req_id: "completed"}
    (exchange,) = [t for t in deployment.oauth.token_requests if t["client_id"] == cred["oauth_client_id"]]
    assert exchange["form"]["redirect_uri"] == callback and exchange["status"] == 200
    assert deployment.connection(started["connection_id"])["status"] == "active"


def test_an_oversized_body_gets_the_json_413(deployment):
    status, headers, body = deployment.call("POST", "/v1/apps", b"{" + b" " * (1024 * 1024 + 10) + b"}",
                                            headers={"Content-Type": "application/json"},
                                            auth=deployment.access_key)
    assert status == 413
    assert headers["Content-Type"] == "application/json"
    assert body == {"error": {"code": "payload_too_large", "message": "Payload Too Large",
                              "details": {"input": "must be at most 1048576 bytes"}}}


def _fresh_window(seconds: float = 10.0) -> None:
    """Start a real-clock burst early in a rate-limit minute so it does not straddle two."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.05)


def test_rate_limits_key_on_the_address_nginx_forwards_not_on_client_headers(deployment):
    app = deployment.create_app([requirement("helpdesk", HTTP_API_KEY)], prefix="limits", domain="apps.test")
    _fresh_window()
    for i in range(TOKENS_PER_MINUTE):  # each with a different forged X-Forwarded-For
        status, _, body = deployment.mint(app, f"u{i}", headers={"X-Forwarded-For": f"198.51.100.{i}"})
        assert status == 201, body
    status, headers, body = deployment.mint(app, "over", headers={"X-Forwarded-For": "198.51.100.200"})
    assert status == 429 and body["error"]["code"] == "too_many_requests"
    assert 1 <= int(headers["Retry-After"]) <= 60
    status, _, _ = deployment.mint(app, "over", headers={"X-Forwarded-For": "127.0.0.2"})
    assert status == 429
    # another client address (as nginx sees it) has its own budget
    status, _, body = deployment.mint(app, "neighbour", source="127.0.0.2")
    assert status == 201, body


def logged(deployment, name: str, line: str) -> str:
    """The nginx log ``name`` once it holds ``line``: nginx writes an access-log line only after it has sent
    the answer, so a log read right after a request may not have it yet (gives up after 10 s)."""
    deadline = time.monotonic() + 10
    while line not in (text := deployment.nginx.log(name)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return text


def test_logs_hold_no_query_strings_and_no_signed_segments(deployment):
    signed = "eyJjcmVkZW50aWFsIjoiYWJjIn0.c2lnbmF0dXJl"
    status, _, _ = deployment.call("GET", f"/v1/connect/oauth2/start/{signed}")
    assert status in (400, 404)
    status, _, _ = deployment.call("POST", f"/v1/connect/webhooks/pipedream/{signed}", {"event": "x"})
    assert status in (400, 401, 404)
    status, _, _ = deployment.call("GET", "/connect?token=not-a-real-token-secret")
    assert status == 401
    access = logged(deployment, "connect.access.log", '"GET /connect" 401')  # the last request's line is in
    assert "/v1/connect/oauth2/start/<signed>" in access and "/v1/connect/webhooks/pipedream/<signed>" in access
    assert '"GET /connect"' in access
    for secret in (signed, "not-a-real-token-secret", "token=", "code=", "state="):
        assert secret not in access
    assert "?" not in access
    # the service's own access log (one JSON line per request) holds no query string and no signed segment
    service = deployment.gunicorn.log()
    assert '"path": "/v1/connect/webhooks/pipedream/<signed>"' in service
    assert '"path": "/v1/connect/oauth2/start/<signed>"' in service
    for secret in (signed, "not-a-real-token-secret", "token=", "code=", "state="):
        assert secret not in service


def test_with_the_service_down_nginx_answers_502_in_the_error_shape(deployment):
    deployment.gunicorn.stop()  # last test of the module: the fixture's stop() is then a no-op
    status, headers, body = deployment.call("GET", "/v1/apps", auth=deployment.access_key)
    assert status == 502
    assert headers["Content-Type"] == "application/json"
    assert body["error"]["code"] == "bad_gateway" and body["error"]["message"] == "Bad Gateway"
    assert "max-age" in headers["Strict-Transport-Security"]
    # nginx's error log would quote the request line of a failed upstream request: it stays quiet
    status, _, _ = deployment.call("GET", "/connect?token=secret-while-down")
    assert status == 502
    assert '"GET /connect" 502' in logged(deployment, "connect.access.log", '"GET /connect" 502')
    for name in ("connect.access.log", "connect.error.log", "main.error.log"):
        assert "secret-while-down" not in deployment.nginx.log(name)
