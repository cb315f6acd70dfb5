"""Issue 12 item 10: an ``allowed_private_hosts`` entry may name a port, and then allows only that port."""
import http.server
import threading

import pytest

from connect_service.config import ConfigError, load_config
from connect_service.hosts import parse_private_host, private_host_allowed
from connect_service.http import BlockedDestination, GuardedClient
from connect_service.testing import make_config


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def two_servers():
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield [server.server_address[1] for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_an_entry_with_a_port_allows_only_that_port(two_servers):
    allowed, other = two_servers
    with GuardedClient(allowed_private_hosts=[f"127.0.0.1:{allowed}"]) as client:
        assert client.get(f"http://127.0.0.1:{allowed}/").text == "ok"
        with pytest.raises(BlockedDestination):
            client.get(f"http://127.0.0.1:{other}/")
        with pytest.raises(BlockedDestination):  # the port belongs to 127.0.0.1, not to every loopback name
            client.get(f"http://localhost:{allowed}/")
    with GuardedClient(allowed_private_hosts=["127.0.0.1"]) as client:  # without a port: every port
        assert client.get(f"http://127.0.0.1:{other}/").text == "ok"


def test_parse_private_host():
    assert parse_private_host("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_private_host("IdP.Internal") == ("idp.internal", None)
    assert parse_private_host("[::1]:443") == ("::1", 443)
    assert parse_private_host("::1") == ("::1", None)
    for bad in ("127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:９０", "host:", "http://x", ""):
        with pytest.raises(ValueError):
            parse_private_host(bad)
    entries = ["127.0.0.1:9000", "idp.internal"]
    assert private_host_allowed(entries, "127.0.0.1", 9000)
    assert not private_host_allowed(entries, "127.0.0.1", 9001)
    assert private_host_allowed(entries, "idp.internal", 1234)


def test_a_bad_entry_stops_start_up_with_one_line(tmp_path):
    with pytest.raises(ConfigError, match="CONNECT_ALLOWED_PRIVATE_HOSTS"):
        load_config(make_config(tmp_path, allowed_private_hosts=["127.0.0.1:http"]))


def test_credential_http_urls_follow_the_port_rule(connect, monkeypatch):
    connect.app.config["CONNECT"]["allowed_private_hosts"] = ["127.0.0.1:9000"]
    body = {"name": "c", "mode": "OAUTH", "connector_name": "oauth2", "oauth_client_id": "cid",
            "oauth_client_secret": "s", "oauth_grant_type": "authorization_code"}
    r = connect.client.post("/v1/credentials", headers=connect.auth, json={
        **body, "oauth_url": "http://127.0.0.1:9000/auth", "oauth_token_url": "http://127.0.0.1:9000/token"})
    assert r.status_code == 201, r.get_json()
    r = connect.client.post("/v1/credentials", headers=connect.auth, json={
        **body, "oauth_url": "http://127.0.0.1:9001/auth", "oauth_token_url": "http://127.0.0.1:9000/token"})
    assert r.status_code == 400 and set(r.get_json()["error"]["details"]) == {"oauth_url"}


def test_webhook_endpoint_http_urls_follow_the_port_rule(connect):
    """The same rule on the other URL the org hands the service: a webhook receiver."""
    connect.app.config["CONNECT"]["allowed_private_hosts"] = ["127.0.0.1:9000"]
    r = connect.client.post("/v1/webhook-endpoints", headers=connect.auth, json={"url": "http://127.0.0.1:9000/hook"})
    assert r.status_code == 201, r.get_json()
    r = connect.client.post("/v1/webhook-endpoints", headers=connect.auth, json={"url": "http://127.0.0.1:9001/hook"})
    assert r.status_code == 400 and r.get_json()["error"]["details"] == {"url": "must use https"}
