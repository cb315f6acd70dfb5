"""Oversized bodies are refused with 413 in the error shape, before routing and before the body is read."""
import json
import re
import socket

import pytest
from werkzeug.test import EnvironBuilder

from connect_service.testing import make_config
from tests.conftest import API_KEY_ONLY
from tests.support.gunicorn_server import GunicornServer

MAX = 1024
BODY_413 = {"error": {"code": "payload_too_large", "message": "Payload Too Large",
                      "details": {"input": f"must be at most {MAX} bytes"}}}


@pytest.fixture
def connect_config(tmp_path):
    return make_config(tmp_path, max_body_bytes=MAX)


class ExplodingInput:
    """A wsgi.input that fails the test if anybody reads the body."""

    reads = 0

    def _boom(self, *args, **kwargs):
        ExplodingInput.reads += 1
        raise AssertionError("the body was read")

    read = readline = readlines = __iter__ = _boom


def call_unread(app, method, path, host, length):
    environ = EnvironBuilder(path=path, method=method, base_url=f"http://{host}",
                             headers={"Content-Type": "application/json",
                                      "Authorization": "Bearer ak_whatever"}).get_environ()
    environ["CONTENT_LENGTH"] = str(length)
    environ["wsgi.input"] = ExplodingInput()
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body


def every_path(app):
    """One concrete path per route (placeholders filled in), plus paths nobody routes."""
    paths = set()
    for rule in app.url_map.iter_rules():
        paths.add(re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: "1" if "int" in m.group(0) else "x", rule.rule))
    return sorted(paths | {"/", "/nope", "/v1/nope/deeper", "/v1/connect/tokens/../x", "/%00", "/connect"})


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "GET"])
def test_413_before_reading_on_every_path_and_host(connect, method):
    app_row = connect.create_app_with_requirements(API_KEY_ONLY)
    ExplodingInput.reads = 0
    hosts = ["connect.test", app_row["hostname"], "unknown-host.example", "localhost"]
    paths = every_path(connect.app)
    assert "/v1/connect/tokens" in paths and "/v1/connections/x/check-host" in paths
    for host in hosts:
        for path in paths:
            status, headers, body = call_unread(connect.app, method, path, host, MAX + 1)
            assert status == "413 Payload Too Large", (host, path)
            assert headers["Content-Type"] == "application/json"
            assert json.loads(body) == BODY_413
    assert ExplodingInput.reads == 0


@pytest.mark.parametrize("length", ["99999999999999999999999", "-1", "abc", "1e9"])
def test_absurd_content_length_is_refused_unread(connect, length):
    status, _, body = call_unread(connect.app, "POST", "/v1/apps", "connect.test", length)
    assert status.startswith("413") and json.loads(body)["error"]["code"] == "payload_too_large"


def test_exactly_max_bytes_is_not_413(connect):
    body = json.dumps({"name": "x" * (MAX - 60), "hostname": "exact.test"})
    body += " " * (MAX - len(body))
    assert len(body) == MAX
    r = connect.client.post("/v1/apps", data=body, headers={**connect.auth, "Content-Type": "application/json"})
    assert r.status_code != 413


def test_413_through_the_test_client(connect, app_with_key):
    big = "x" * (MAX + 1)
    r = connect.client.post("/v1/connect/tokens", data=big, headers={"Host": app_with_key["hostname"]})
    assert r.status_code == 413 and r.get_json() == BODY_413
    r = connect.client.post("/v1/apps", data=big, headers=connect.auth)
    assert r.status_code == 413 and r.get_json() == BODY_413


# --- through a real socket, with gunicorn ----------------------------------------------------------

def raw_exchange(port, head: bytes, body: bytes = b"") -> bytes:
    """Send the request head (and maybe part of a body), then read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                break
    return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)content-length:\s*(\d+)", head)
    return bool(match) and len(body) >= int(match.group(1))


def parse(data: bytes):
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode("latin-1"), body


@pytest.fixture
def gunicorn(connect, tmp_path):
    cfg = dict(connect.app.config["CONNECT"])  # default max_body_bytes = 1 MiB is used below
    cfg["max_body_bytes"] = 1024 * 1024
    server = GunicornServer(cfg, str(tmp_path / "gunicorn.log")).start()
    yield server
    server.stop()


def test_413_over_a_real_socket_without_sending_the_body(connect, app_with_key, gunicorn):
    declared = 50 * 1024 * 1024
    for host, path in (("connect.test", "/v1/apps"), (app_with_key["hostname"], "/v1/connect/tokens"),
                       ("connect.test", "/no/such/path"), (app_with_key["hostname"], "/v1/apps"),
                       ("connect.test", "/connect")):
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {declared}\r\n\r\n").encode()
        # only a few bytes of the declared 50 MiB are ever sent: the answer cannot wait for the rest
        status, headers, body = parse(raw_exchange(gunicorn.port, head, b'{"user_id": '))
        assert status == 413, (host, path, headers)
        assert json.loads(body) == {"error": {"code": "payload_too_large", "message": "Payload Too Large",
                                              "details": {"input": "must be at most 1048576 bytes"}}}


def test_413_for_a_chunked_body_over_the_limit(connect, app_with_key, gunicorn):
    """No Content-Length to check up front: the body is read only up to the limit."""
    head = (f"POST /v1/connect/tokens HTTP/1.1\r\nHost: {app_with_key['hostname']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"  # 1.25 MiB
    status, _, payload = parse(raw_exchange(gunicorn.port, head, body))
    assert status == 413, payload
    assert json.loads(payload)["error"]["code"] == "payload_too_large"


def test_small_bodies_still_work_over_the_socket(connect, app_with_key, gunicorn):
    status, headers, body = gunicorn.request("POST", "/v1/connect/tokens", b'{"user_id": "u1"}',
                                             {"Host": app_with_key["hostname"], "Content-Type": "application/json"})
    assert status == 201 and headers["Cache-Control"] == "no-store"


def test_body_without_content_length_is_capped_not_truncated(connect, app_with_key):
    """werkzeug alone would read exactly max_body_bytes and accept the truncated body."""
    import io

    padded = b'{"user_id": "u1"}' + b" " * (2 * MAX)
    environ = EnvironBuilder(path="/v1/connect/tokens", method="POST", base_url=f"http://{app_with_key['hostname']}",
                             headers={"Content-Type": "application/json"}).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input"] = io.BytesIO(padded)
    environ["wsgi.input_terminated"] = True  # what gunicorn sets for a chunked body
    captured = {}
    body = b"".join(connect.app(environ, lambda status, headers, exc_info=None: captured.update(status=status)))
    assert captured["status"].startswith("413")
    assert json.loads(body) == BODY_413
    # a body that fits is read whole
    environ["wsgi.input"] = io.BytesIO(b'{"user_id": "u1"}')
    environ.pop("CONTENT_LENGTH", None)
    body = b"".join(connect.app(environ, lambda status, headers, exc_info=None: captured.update(status=status)))
    assert captured["status"].startswith("201"), body
