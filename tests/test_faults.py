"""Faults against the real processes: gunicorn workers killed mid-request, the database taken away
under load, ``connect-service refresh-due`` killed mid-batch. Run with ``pytest -m faults``.

The service runs under gunicorn (``deploy/gunicorn.conf.py``) on a PostgreSQL database of this
module's own, reached through a TCP proxy the tests can cut (the machine's PostgreSQL is shared
with the other test pass and is never stopped). The worker-kill tests pause a request at an exact
point through the public plugin API (``tests/support/fault_app.py``) and ``kill -9`` the worker
that holds it.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import os
import signal
import subprocess
import threading
import time
from urllib.parse import urlsplit

import pytest

from connect_service.testing import make_config
from tests.support import pg
from tests.support.fault_app import CONNECTOR, OAUTH2 as FAULT_OAUTH2, SLOW
from tests.support.gunicorn_server import BIN, ROOT, GunicornServer
from tests.support.live_service import CLIENT_TIMEOUT, LiveClient, cli, last_json, requirement, requirement_id
from tests.support.oauth_server import OAuthTestServer
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.faults, pytest.mark.slow]

PUBLIC_HOST = "connect.test"
PUBLIC_URL = f"http://{PUBLIC_HOST}"
HTTP_API_KEY = "dynamiq.connections.HttpApiKey"
GENERIC_OAUTH2 = "dynamiq.connections.OAuth2"


class Service(LiveClient):
    """The fault app under gunicorn, called directly (every request on a fresh connection)."""

    public_url = PUBLIC_URL

    def __init__(self, gunicorn: GunicornServer, access_key: str, oauth: OAuthTestServer, fault_dir: str):
        self.gunicorn, self.access_key, self.oauth, self.fault_dir = gunicorn, access_key, oauth, fault_dir

    def call(self, method, path, body=None, host=None, auth=None, headers=None):
        body, headers = self._prepare(body, auth, headers)
        headers["Host"] = host or PUBLIC_HOST
        conn = http.client.HTTPConnection("127.0.0.1", self.gunicorn.port, timeout=CLIENT_TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.headers, self._parse(resp.getheader("Content-Type"), resp.read())
        finally:
            conn.close()

    def flag(self, name: str) -> str:
        path = os.path.join(self.fault_dir, name)
        open(path, "w").close()
        return path

    def wait_for_pause(self, flag: str) -> int:
        """The pid of the worker paused at ``flag`` (see tests/support/fault_app.py)."""
        pid_file = os.path.join(self.fault_dir, f"{flag}.pid")
        for _ in range(600):
            if os.path.exists(pid_file):
                with open(pid_file) as fh:
                    pid = int(fh.read())
                os.unlink(pid_file)
                assert pid != self.gunicorn.proc.pid  # a worker, never the master
                return pid
            time.sleep(0.05)
        raise AssertionError(f"no request paused at {flag}: {self.gunicorn.log()[-3000:]}")


@pytest.fixture(scope="module")
def proxy():
    if not pg.reachable():
        pytest.fail(f"PostgreSQL is not reachable at {pg.ADMIN_URL} (CONNECT_TEST_PG_ADMIN_URL)")
    parts = urlsplit(pg.ADMIN_URL)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as p:
        yield p


@pytest.fixture(scope="module")
def service(tmp_path_factory, proxy):
    tmp = tmp_path_factory.mktemp("faults")
    fault_dir = tmp / "flags"
    fault_dir.mkdir()
    with pg.temporary_database("cs_faults") as dbname, OAuthTestServer() as oauth:
        oauth.auto_approve = True
        cfg = make_config(tmp, env="production", public_url=PUBLIC_URL,
                          database_url=pg.url_for(dbname, port=proxy.port))
        gunicorn = GunicornServer(cfg, str(tmp / "gunicorn.log"), workers=2, app="tests.support.fault_app:build()",
                                  extra_env={"CONNECT_FAULT_DIR": str(fault_dir)})
        cli(gunicorn.env, "migrate")
        org = last_json(cli(gunicorn.env, "create-org", "Faults test org").stdout)
        key = last_json(cli(gunicorn.env, "create-access-key", "--org", org["id"]).stdout)
        with gunicorn:
            yield Service(gunicorn, key["key"], oauth, str(fault_dir))
        assert oauth.errors == []


def in_background(fn, *args):
    """Run ``fn(*args)`` in a thread; returns a dict that gets ``result`` or ``error``."""
    out: dict = {}

    def run():
        try:
            out["result"] = fn(*args)
        except Exception as exc:  # the killed worker's client sees a reset; the test inspects it
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    out["thread"] = thread
    return out


# --------------------------------------------------------------------------- workers killed mid-request


def test_worker_killed_during_a_credentials_submit_writes_nothing_and_the_retry_succeeds(service):
    app = service.create_app([requirement("slow", SLOW), requirement("helpdesk", HTTP_API_KEY)])
    slow_id, helpdesk_id = requirement_id(app, "slow"), requirement_id(app, "helpdesk")
    neighbour = service.token(app, "erin")
    assert service.call("POST", f"/v1/connect/requirements/{slow_id}/credentials",
                        {"type": SLOW, "config": {"api_key": "erin-key"}}, auth=neighbour)[0] == 201
    token = service.token(app, "dave")
    assert service.call("POST", f"/v1/connect/requirements/{helpdesk_id}/credentials",
                        {"type": HTTP_API_KEY, "config": {"url": "https://api.example.com", "api_key": "d"}},
                        auth=token)[0] == 201

    flag = service.flag("block-validate")
    submit = in_background(service.call, "POST", f"/v1/connect/requirements/{slow_id}/credentials",
                           {"type": SLOW, "config": {"api_key": "dave-key"}}, PUBLIC_HOST, token)
    os.kill(service.wait_for_pause("block-validate"), signal.SIGKILL)
    os.unlink(flag)
    submit["thread"].join(CLIENT_TIMEOUT)
    assert "result" not in submit, submit  # the client lost its answer with the worker
    assert isinstance(submit["error"], (ConnectionError, http.client.HTTPException)), submit

    # nothing half-written: the killed submission left no connection; nothing else changed
    assert service.statuses(token) == {slow_id: "pending", helpdesk_id: "completed"}
    assert service.statuses(neighbour) == {slow_id: "completed", helpdesk_id: "pending"}
    status, _, body = service.call("POST", f"/v1/connect/requirements/{slow_id}/credentials",
                                {"type": SLOW, "config": {"api_key": "dave-key"}}, auth=token)
    assert status == 201, body
    assert service.statuses(token) == {slow_id: "completed", helpdesk_id: "completed"}
    assert service.call("GET", "/healthz")[0] == 200  # the master replaced the worker


def test_worker_killed_after_the_code_exchange_stores_nothing_and_a_new_flow_succeeds(service):
    cred = service.oauth_credential(CONNECTOR)
    app = service.create_app([requirement("account", FAULT_OAUTH2)])
    req_id = requirement_id(app, "account")
    gina = service.token(app, "gina")
    gina_flow, callback = service.start_flow(gina, req_id, cred["callback"])
    assert service.call("GET", callback)[0] == 200
    gina_before = service.connection(gina_flow["connection_id"], secrets=True)
    assert gina_before["status"] == "active"

    frank = service.token(app, "frank")
    started, callback = service.start_flow(frank, req_id, cred["callback"])
    flag = service.flag("block-token")
    calls_before = service.oauth.token_calls("authorization_code")
    result = in_background(service.call, "GET", callback)
    os.kill(service.wait_for_pause("block-token"), signal.SIGKILL)
    os.unlink(flag)
    result["thread"].join(CLIENT_TIMEOUT)
    assert "result" not in result, result
    # the provider did exchange the code; the service stored nothing of it
    assert service.oauth.token_calls("authorization_code") == calls_before + 1
    half = service.connection(started["connection_id"], secrets=True)
    assert (half["status"], half["settings"]) == ("pending", {})  # no token half-stored
    assert service.statuses(frank) == {req_id: "pending"}

    # the same callback again is a clear error (its state was consumed), with no second exchange
    status, _, page = service.call("GET", callback)
    assert status == 400 and b"already used" in page
    assert service.oauth.token_calls("authorization_code") == calls_before + 1
    # a new flow succeeds, and the other user's connection is untouched
    started, callback = service.start_flow(frank, req_id, cred["callback"])
    status, _, page = service.call("GET", callback)
    assert status == 200 and b"Connected" in page
    assert service.statuses(frank) == {req_id: "completed"}
    conn = service.connection(started["connection_id"], secrets=True)
    assert conn["status"] == "active"
    assert conn["settings"]["oauth"]["credentials"]["access_token"] == service.oauth.last_token(
        cred["oauth_client_id"]).access_token
    gina_after = service.connection(gina_flow["connection_id"], secrets=True)
    assert gina_after["status"] == "active"
    assert gina_after["settings"]["oauth"]["credentials"] == gina_before["settings"]["oauth"]["credentials"]


# --------------------------------------------------------------------------- refresh-due killed mid-batch


class TokenGate:
    """WSGI middleware in front of the OAuth test server: holds the token call after ``allow`` calls.

    The held call never reaches the server (the provider never sees it), until ``release()``,
    which answers it 503 (its client is gone by then).
    """

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app
        self.allow: int | None = None
        self.seen = 0
        self.held = threading.Event()
        self._release = threading.Event()

    def __call__(self, environ, start_response):
        if self.allow is not None and environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"].endswith("/token"):
            self.seen += 1
            if self.seen > self.allow:
                self.held.set()
                self._release.wait(60)
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"held by the test"]
        return self.wsgi_app(environ, start_response)

    def release(self) -> None:
        self.allow = None
        self._release.set()


def _access_token(view: dict) -> str:
    """The access token in a connection's view with secrets."""
    return view["settings"]["oauth"]["credentials"]["access_token"]


def test_refresh_due_killed_mid_batch_is_finished_by_the_next_run_without_double_refresh(service):
    oauth = service.oauth
    cred = service.oauth_credential("oauth2")
    app = service.create_app([requirement("account", GENERIC_OAUTH2)])
    req_id = requirement_id(app, "account")
    oauth.access_token_lifetime = 60  # inside the refresh margin (300 s): due at once
    conn_ids = []
    try:
        for n in range(6):
            started, callback = service.start_flow(service.token(app, f"user-{n}"), req_id, cred["callback"])
            assert service.call("GET", callback)[0] == 200
            conn_ids.append(started["connection_id"])
    finally:
        oauth.access_token_lifetime = 3600  # refreshed tokens are not due again
    before = {c: service.connection(c, secrets=True) for c in conn_ids}

    gate = TokenGate(oauth.app.wsgi_app)
    oauth.app.wsgi_app = gate
    env = dict(service.gunicorn.env, CONNECT_REFRESH_LEASE_SECONDS="3")
    try:
        gate.allow = 2
        run = subprocess.Popen([os.path.join(BIN, "connect-service"), "refresh-due", "--batch-size", "4"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert gate.held.wait(60), run.communicate(timeout=5)
            # the run calls several connections at once (--concurrency): kill it once the two answers the
            # provider gave are stored, while the held calls (claimed, never at the provider) are in flight.
            # An answer lost to the kill would be the documented crash window, not what this test is about.
            for _ in range(300):
                if sum(_access_token(service.connection(c, secrets=True)) != _access_token(before[c])
                       for c in conn_ids) >= 2:
                    break
                time.sleep(0.1)
            run.send_signal(signal.SIGKILL)
            run.wait(10)
        finally:
            gate.release()
        assert run.returncode == -signal.SIGKILL
        assert oauth.token_calls("refresh_token") == 2  # the third never reached the provider

        # the next runs finish the batch once the dead run's lease on the third row (3 s) expires
        for _ in range(60):
            done = cli(env, "refresh-due", check=False)
            assert done.returncode == 0, done.stderr
            if oauth.token_calls("refresh_token") >= len(conn_ids):
                break
            time.sleep(0.5)
        cli(env, "refresh-due")  # and one more run finds nothing left to do
    finally:
        oauth.app.wsgi_app = gate.wsgi_app

    assert oauth.token_calls("refresh_token") == len(conn_ids)  # each connection exactly once
    assert oauth.family_revocations == []  # no refresh token was ever presented twice
    latest = {t.parent_refresh_token: t for t in oauth.issued_tokens if t.grant_type == "refresh_token"}
    for conn_id in conn_ids:
        after = service.connection(conn_id, secrets=True)
        old = before[conn_id]["settings"]["oauth"]["credentials"]
        new = after["settings"]["oauth"]["credentials"]
        issued = latest[old["refresh_token"]]  # refreshed from the token it held
        assert after["status"] == "active"
        assert (new["access_token"], new["refresh_token"]) == (issued.access_token, issued.refresh_token)


# --------------------------------------------------------------------------- database outage


def _load(service: Service, app: dict, token: str, n: int, workers: int = 8) -> list:
    """``n`` requests of three kinds (access key, connect token, app-host mint); (status, body) or the exception."""
    kinds = [("GET", "/v1/apps", None, PUBLIC_HOST, service.access_key),
             ("GET", "/v1/connect/requirements/statuses", None, PUBLIC_HOST, token),
             ("POST", "/v1/connect/tokens", {"user_id": "load"}, app["hostname"], None)]

    def one(i):
        method, path, body, host, auth = kinds[i % len(kinds)]
        try:
            status, _, payload = service.call(method, path, body, host=host, auth=auth)
            return status, payload
        except Exception as exc:  # a timeout (a hang) or a reset, reported by the assertions
            return exc

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        results = []
        for future in concurrent.futures.as_completed(futures):
            results.append(future.result())
            if isinstance(results[-1], Exception):  # don't wait out the rest: report it now
                for other in futures:
                    other.cancel()
                break
        return results


def test_database_outage_gets_fast_503s_and_the_service_recovers_without_a_restart(service, proxy):
    """200 requests: 80 healthy, 40 while the database host is gone (connects hang), 80 after it is back.

    Pooled connections are cut mid-stream and new connects get no answer at all, so every
    request of the outage depends on the service's own connect timeout to answer 503.
    """
    app = service.create_app([requirement("helpdesk", HTTP_API_KEY)])
    token = service.token(app, "olga")
    workers_before = service.gunicorn.proc.pid

    healthy = _load(service, app, token, 80)
    assert [r for r in healthy if isinstance(r, Exception) or r[0] not in (200, 201)] == []

    proxy.cut(silent=True)  # a vanished host: connects hang until the client's own timeout
    try:
        status, _, body = service.call("GET", "/healthz")
        assert status == 200, body
        status, _, body = service.call("GET", "/readyz")
        assert status == 503 and body["error"]["code"] == "service_unavailable", body
        outage = _load(service, app, token, 40)
        problems = [r for r in outage
                    if isinstance(r, Exception) or r[0] != 503 or r[1]["error"]["code"] != "service_unavailable"]
        assert problems == [], problems[:5]
        assert len(outage) == 40
    finally:
        proxy.restore()

    for _ in range(60):  # back without a restart: the pool reconnects by itself
        if service.call("GET", "/readyz")[0] == 200:
            break
        time.sleep(0.5)
    recovered = _load(service, app, token, 80)
    assert [r for r in recovered if isinstance(r, Exception) or r[0] not in (200, 201)] == []
    assert service.gunicorn.proc.poll() is None and service.gunicorn.proc.pid == workers_before
