"""The deployment as shipped: ``deploy/nginx-connect.conf`` over https in front of gunicorn
(``deploy/gunicorn.conf.py``, 3 workers, production mode, ``proxy_count = 1``) on a PostgreSQL
database of this module's own, set up with the operator's CLI commands.

Every request goes through nginx with real TLS (a self-signed certificate for ``connect.test``
and ``*.apps.test``, verified, SNI = the Host). Run with ``pytest -m nginx``; ``scripts/test.sh``
installs Debian's nginx first.
"""
from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import time
import uuid
from urllib.parse import urlencode, urlsplit

import pytest
import requests

from connect_service.testing import make_config
from tests.support import pg
from tests.support.gunicorn_server import BIN, ROOT, GunicornServer
from tests.support.nginx_server import NginxSite, find_nginx
from tests.support.oauth_server import OAuthTestServer

pytestmark = [pytest.mark.nginx, pytest.mark.slow]

PUBLIC_HOST = "connect.test"
HTTP_API_KEY = "dynamiq.connections.HttpApiKey"
OAUTH2 = "dynamiq.connections.OAuth2"
TOKENS_PER_MINUTE = 10


def cli(env: dict, *args: str) -> dict:
    """Run ``connect-service ARGS`` as an operator would; its one JSON line on stdout."""
    done = subprocess.run([os.path.join(BIN, "connect-service"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


class Deployment:
    def __init__(self, nginx: NginxSite, gunicorn: GunicornServer, access_key: str, oauth: OAuthTestServer):
        self.nginx, self.gunicorn, self.access_key, self.oauth = nginx, gunicorn, access_key, oauth
        self.public_url = f"https://{PUBLIC_HOST}:{nginx.https_port}"

    def call(self, method: str, path: str, body=None, host: str = PUBLIC_HOST, headers: dict | None = None,
             auth: str | None = None, source: str = "127.0.0.1"):
        """``(status, headers, parsed JSON or raw bytes)`` of one https request through nginx."""
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        status, resp_headers, payload = self.nginx.request(method, host, path, body, headers, source=source)
        if (resp_headers.get("Content-Type") or "").startswith("application/json"):
            payload = json.loads(payload)
        return status, resp_headers, payload

    def create_app(self, requirements: list[dict], prefix: str = "shop") -> dict:
        hostname = f"{prefix}-{uuid.uuid4().hex[:6]}.apps.test"
        status, _, app = self.call("POST", "/v1/apps", {"name": hostname, "hostname": hostname,
                                                        "visibility": "public"}, auth=self.access_key)
        assert status == 201, app
        status, _, version = self.call("POST", f"/v1/apps/{app['id']}/versions", {"requirements": requirements},
                                       auth=self.access_key)
        assert status == 201, version
        status, _, deployed = self.call("POST", f"/v1/apps/{app['id']}/versions/{version['number']}/deploy",
                                        auth=self.access_key)
        assert status == 200, deployed
        return app

    def mint(self, app: dict, user_id: str, headers: dict | None = None, source: str = "127.0.0.1"):
        return self.call("POST", "/v1/connect/tokens", {"user_id": user_id}, host=app["hostname"],
                         headers=headers, source=source)

    def token(self, app: dict, user_id: str) -> str:
        status, _, body = self.mint(app, user_id)
        assert status == 201, body
        return body["token"]

    def statuses(self, token: str) -> dict[str, str]:
        status, _, body = self.call("GET", "/v1/connect/requirements/statuses", auth=token)
        assert status == 200, body
        return {item["id"]: item["status"] for item in body["data"]}


def requirement(key: str, type_name: str) -> dict:
    return {"key": key, "type": "connection", "title": f"Connect {key}",
            "spec": {"type": "connection", "data": {"type": type_name}}}


def requirement_id(app: dict, key: str) -> str:
    return str(uuid.uuid5(uuid.UUID(app["id"]), key))


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
        org = cli(gunicorn.env, "create-org", "Deployment test org")
        key = cli(gunicorn.env, "create-access-key", "--org", org["id"], "--name", "deploy test")
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
    app = deployment.create_app([requirement("helpdesk", HTTP_API_KEY)])
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
    app = deployment.create_app([requirement("helpdesk", HTTP_API_KEY)])
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
    oauth = deployment.oauth
    client_id, secret = f"client-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    status, _, cred = deployment.call("POST", "/v1/credentials", {
        "name": "deploy oauth", "mode": "OAUTH", "connector_name": "oauth2", "oauth_url": oauth.authorize_url,
        "oauth_token_url": oauth.token_url, "oauth_client_id": client_id, "oauth_client_secret": secret,
        "oauth_scope": "read", "oauth_grant_type": "authorization_code",
        "oauth_token_endpoint_auth_method": "client_secret_basic"}, auth=deployment.access_key)
    assert status == 201, cred
    # per-credential callback when the service names one (issue 12), else the shared one
    callback = cred.get("redirect_uri") or f"{deployment.public_url}/v1/connect/oauth2/callback"
    assert callback.startswith(deployment.public_url + "/v1/connect/oauth2/callback")
    oauth.add_client(client_id, secret, [callback], token_endpoint_auth_method="client_secret_basic")

    app = deployment.create_app([requirement("account", OAUTH2)])
    token = deployment.token(app, "carol")
    req_id = requirement_id(app, "account")
    status, _, started = deployment.call("POST", f"/v1/connect/requirements/{req_id}/oauth2/authorize", auth=token)
    assert status == 201, started
    r = requests.get(started["authorization_url"], allow_redirects=False, timeout=30)
    assert r.status_code in (302, 303), r.text[:300]
    location = r.headers["Location"]
    assert location.startswith(callback + "?"), location
    back = urlsplit(location)
    status, _, page = deployment.call("GET", f"{back.path}?{back.query}")
    assert status == 200 and b"Connected" in page, page[:500]
    assert deployment.statuses(token) == {req_id: "completed"}
    (exchange,) = [t for t in oauth.token_requests if t["client_id"] == client_id]
    assert exchange["form"]["redirect_uri"] == callback and exchange["status"] == 200
    status, _, conn = deployment.call("GET", f"/v1/connections/{started['connection_id']}",
                                      auth=deployment.access_key)
    assert status == 200 and conn["status"] == "active", conn


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
    app = deployment.create_app([requirement("helpdesk", HTTP_API_KEY)], prefix="limits")
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


def test_logs_hold_no_query_strings_and_no_signed_segments(deployment):
    signed = "eyJjcmVkZW50aWFsIjoiYWJjIn0.c2lnbmF0dXJl"
    status, _, _ = deployment.call("GET", f"/v1/connect/oauth2/start/{signed}")
    assert status in (400, 404)
    status, _, _ = deployment.call("POST", f"/v1/connect/webhooks/pipedream/{signed}", {"event": "x"})
    assert status in (400, 401, 404)
    status, _, _ = deployment.call("GET", "/connect?token=not-a-real-token-secret")
    assert status == 401
    access = deployment.nginx.log("connect.access.log")
    assert "/v1/connect/oauth2/start/<signed>" in access and "/v1/connect/webhooks/pipedream/<signed>" in access
    assert '"GET /connect"' in access
    for secret in (signed, "not-a-real-token-secret", "token=", "code=", "state="):
        assert secret not in access
    assert "?" not in access
    # the service's own access log (one JSON line per request) holds no query string either;
    # (its handling of the start link's segment is issue 12's, tested with the service's logs)
    service = deployment.gunicorn.log()
    assert '"path": "/v1/connect/webhooks/pipedream/<signed>"' in service
    for secret in ("not-a-real-token-secret", "token=", "code=", "state="):
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
    assert '"GET /connect" 502' in deployment.nginx.log("connect.access.log")
    for name in ("connect.access.log", "connect.error.log", "main.error.log"):
        assert "secret-while-down" not in deployment.nginx.log(name)
