"""Health and outages: /healthz never touches the database, /readyz and every other request answer a
fast 503 in the error shape while it is away, pooled connections are reused and the service recovers
without a restart (a TCP proxy in front of the shared PostgreSQL is cut; the server itself never is)."""
from __future__ import annotations

import json
import os
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest

from connect_service import create_app
from connect_service.config import generate_key
from connect_service.db import CONNECT_TIMEOUT_SECONDS, close_pool, database
from connect_service.testing import make_config, reset_database
from tests.support.gunicorn_server import GunicornServer
from tests.support.tcp_proxy import TcpProxy

PG_URL = os.environ.get("CONNECT_TEST_DATABASE_URL", "")
needs_pg = pytest.mark.skipif(not PG_URL.startswith("postgres"), reason="PostgreSQL pass only")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_unavailable(response):
    assert response.status_code == 503, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "service_unavailable" and error["details"] == {"database": "is unavailable, retry shortly"}


def _in_thread(fn, limit=60):
    """Run ``fn`` in a thread; fail (rather than hang the suite) if it has not returned after ``limit`` s."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn()), daemon=True)
    thread.start()
    thread.join(limit)
    assert "value" in result, "request hung: no connect timeout"
    return result["value"]


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:{port}/connect",
                                 "sqlite:////nonexistent-{port}/dir/connect.db"])
def test_healthz_needs_no_database_and_the_rest_answer_503(url, tmp_path):
    app = create_app(make_config(tmp_path, database_url=url.format(port=closed_port())))
    client = app.test_client()
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}
    assert database.is_closed()
    assert_unavailable(client.get("/readyz"))
    assert_unavailable(client.get("/v1/apps", headers={"Authorization": "Bearer ak_whatever"}))
    assert_unavailable(client.post("/v1/connect/tokens", json={"user_id": "u"}, headers={"Host": "app.example"}))
    close_pool()


def test_a_silent_database_times_out_into_503(tmp_path):
    """A server that accepts TCP and never answers: the connect timeout turns it into a 503, not a hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        app = create_app(make_config(tmp_path, database_url=f"postgresql://postgres@127.0.0.1:{port}/connect"))
        assert database.obj.connect_params["connect_timeout"] == CONNECT_TIMEOUT_SECONDS
        client = app.test_client()
        assert_unavailable(_in_thread(lambda: client.get("/readyz")))
        assert_unavailable(_in_thread(lambda: client.get("/v1/apps", headers={"Authorization": "Bearer ak_x"})))
    close_pool()


def test_threads_queued_behind_a_failed_connect_fail_at_once(tmp_path):
    """playhouse's pool connects under its lock: without FailFastPool every queued thread would try (and wait
    out a timeout) in turn. Here one connect attempt reaches the silent server, and all six threads get 503."""
    accepted = []
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]

        def accept():
            while True:
                try:
                    conn, _ = silent.accept()
                except OSError:
                    return
                accepted.append(conn)  # held open and never answered

        threading.Thread(target=accept, daemon=True).start()
        app = create_app(make_config(tmp_path, database_url=f"postgresql://postgres@127.0.0.1:{port}/connect"))
        client = app.test_client()
        barrier = threading.Barrier(6)
        results = []

        def request():
            barrier.wait()
            results.append(client.get("/v1/apps", headers={"Authorization": "Bearer ak_x"}))

        threads = [threading.Thread(target=request) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 6, "a request hung"
        for r in results:
            assert_unavailable(r)
        assert len(accepted) == 1
        for conn in accepted:
            conn.close()
    close_pool()


def _via_proxy(proxy: TcpProxy) -> str:
    parts = urlsplit(PG_URL)
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"))


@pytest.fixture
def proxy():
    parts = urlsplit(PG_URL)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as p:
        yield p


@pytest.fixture
def connect_config(tmp_path, proxy):
    if not PG_URL.startswith("postgres"):
        return make_config(tmp_path)
    return make_config(tmp_path, database_url=_via_proxy(proxy), database_pool_size=3)


@needs_pg
def test_pool_is_reused_and_sized_by_the_setting(connect, proxy):
    assert database.obj._max_connections == 3  # playhouse keeps the size private
    opened = proxy.accepted
    for _ in range(5):
        assert connect.client.get("/v1/apps", headers=connect.auth).status_code == 200
    assert proxy.accepted - opened <= 1  # one pooled connection served every request


@needs_pg
def test_outage_answers_503_and_recovers_without_restart(connect, proxy):
    app = connect.create_app()
    assert connect.client.get("/readyz").status_code == 200
    proxy.cut()
    assert connect.client.get("/healthz").status_code == 200
    for _ in range(3):  # pooled connections the server dropped are discarded, new ones are refused
        assert_unavailable(_in_thread(lambda: connect.client.get("/readyz")))
        assert_unavailable(_in_thread(lambda: connect.client.get("/v1/apps", headers=connect.auth)))
        assert_unavailable(_in_thread(lambda: connect.client.post(
            "/v1/connect/tokens", json={"user_id": "u"}, headers={"Host": app["hostname"]})))
    proxy.restore()
    r = connect.client.get("/readyz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok", "database": "ok"}
    r = connect.client.get("/v1/apps", headers=connect.auth)
    assert r.status_code == 200 and [a["id"] for a in r.get_json()["data"]] == [app["id"]]
    assert connect.token(app, "after-outage")


@needs_pg
def test_gunicorn_outage_and_recovery(tmp_path, proxy):
    cfg = make_config(tmp_path, database_url=_via_proxy(proxy))
    app = create_app(cfg)
    with app.app_context():
        reset_database()
    close_pool()
    with GunicornServer(cfg, str(tmp_path / "gunicorn.log"), workers=2) as server:
        assert server.request("GET", "/readyz")[0] == 200
        proxy.cut()
        assert server.request("GET", "/healthz")[0] == 200
        for path in ("/readyz", "/v1/apps"):
            status, headers, body = server.request("GET", path, headers={"Authorization": "Bearer ak_x"})
            assert status == 503 and json.loads(body)["error"]["code"] == "service_unavailable", body
            assert headers["Retry-After"] == "2"
        proxy.restore()
        status, _, body = server.request("GET", "/readyz")
        assert status == 200, body
        status, _, body = server.request("GET", "/v1/apps", headers={"Authorization": "Bearer ak_unknown"})
        assert status == 401, body  # the database answers again: an unknown key, not an outage


def test_gunicorn_refuses_to_start_on_an_unreachable_database_with_one_line(tmp_path):
    """Checked once in gunicorn's master (deploy/gunicorn.conf.py on_starting): one line for 3 workers."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update(CONNECT_ENV="production", CONNECT_SECRET_KEY="s" * 40, CONNECT_ENCRYPTION_KEYS=generate_key(),
               CONNECT_PUBLIC_URL="https://connect.test", CONNECT_INSTANCE_PATH=str(tmp_path),
               CONNECT_DATABASE_URL=f"postgresql://postgres:hunter2-secret@127.0.0.1:{closed_port()}/connect",
               CONNECT_WORKERS="3", CONNECT_BIND="127.0.0.1:0")
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    proc = subprocess.run([gunicorn, "-c", os.path.join(root, "deploy", "gunicorn.conf.py"), "wsgi:app"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "Booting worker" not in proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("connect-service:")]
    assert len(ours) == 1 and ours[0].startswith("connect-service: CONNECT_DATABASE_URL: cannot use the database: "
                                                 "connection to server at"), proc.stderr
    assert "hunter2-secret" not in proc.stderr
