"""Exactly one refresh under concurrency, across processes: real gunicorn workers and real CLI runners.

The database is the suite's (SQLite file with WAL in tmp_path, or PostgreSQL via
CONNECT_TEST_DATABASE_URL); the test process seeds it through the models, then
starts gunicorn / ``connect-service refresh-due`` with the same settings passed as
``CONNECT_*`` environment variables.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests

from test_refresh import (CONNECTOR, TYPE_NAME, connect_plugins, create_oauth_connection, credential, future,  # noqa: F401
                          issue_tokens, oauth_server, past, read_secrets, stored)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"

WSGI_MODULE = textwrap.dedent(f'''
    """gunicorn entry point for the concurrency tests: the real app plus the tests' OAuth type."""
    import os

    from connect_service import ConnectionType, OAuth2Provider, create_app, hookimpl


    class RefreshOAuth(ConnectionType):
        name = {TYPE_NAME!r}
        title = "Refresh test OAuth"
        auth = "oauth2"
        connector_name = {CONNECTOR!r}
        provider = OAuth2Provider(revoke_url=os.environ["TEST_OAUTH_REVOKE_URL"], default_token_lifetime=1800)


    class Plugin:
        @hookimpl
        def register_connection_types(self):
            return [RefreshOAuth]


    _app = create_app(plugins=[Plugin()])  # settings come from CONNECT_* env vars


    def app(environ, start_response):
        """Tag each response with the worker process that served it."""
        def start(status, headers, exc_info=None):
            headers.append(("X-Test-Worker-Pid", str(os.getpid())))
            return start_response(status, headers, exc_info)
        return _app(environ, start)
''')


def service_env(config: dict, server) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONNECT_")}
    env.update({
        "CONNECT_ENV": "testing",
        "CONNECT_DATABASE_URL": config["database_url"],
        "CONNECT_SECRET_KEY": config["secret_key"],
        "CONNECT_ENCRYPTION_KEYS": ",".join(config["encryption_keys"]),
        "CONNECT_PUBLIC_URL": config["public_url"],
        "CONNECT_ALLOWED_PRIVATE_HOSTS": "127.0.0.1",
        "CONNECT_INSTANCE_PATH": config["instance_path"],
        "CONNECT_LOG_LEVEL": "WARNING",
        "TEST_OAUTH_REVOKE_URL": server.revoke_url,
        "PYTHONPATH": str(ROOT),
    })
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gunicorn(tmp_path: Path, env: dict, workers: int = 4, threads: int = 4):
    """Run gunicorn and yield its base URL.

    ``--preload``: every worker is ready when forked. ``--worker-connections``
    = threads: a worker accepts only what its threads can serve at once, so
    more concurrent requests than one worker's threads must go to other
    processes (and nothing waits unseen in a worker's own queue).
    """
    app_dir = tmp_path / "wsgi_app"
    app_dir.mkdir()
    (app_dir / "refresh_wsgi.py").write_text(WSGI_MODULE)
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "w+")
    proc = subprocess.Popen(
        [str(VENV_BIN / "gunicorn"), "--preload", "--workers", str(workers), "--threads", str(threads),
         "--worker-class", "gthread", "--worker-connections", str(threads), "--keep-alive", "0", "--bind", f"127.0.0.1:{port}", "--chdir", str(app_dir), "--graceful-timeout", "5",
         "refresh_wsgi:app"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                break
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"gunicorn exited: {log.read()[-3000:]}")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.seek(0)
        output = log.read()
        log.close()
        assert "Traceback" not in output, output[-3000:]


def test_twenty_concurrent_reads_over_gunicorn_workers_refresh_exactly_once(connect, connect_config,
                                                                           oauth_server, credential,
                                                                           tmp_path):
    old = issue_tokens(oauth_server)
    conn_id = create_oauth_connection(connect.app, connect.org_id, credential, old, expires_at=past())
    oauth_server.token_delay = 0.5
    oauth_server.rotate_refresh_tokens = True  # reuse of a rotated refresh token revokes the family
    oauth_server.reset_records()

    results: list[requests.Response] = []
    errors: list[BaseException] = []
    with gunicorn(tmp_path, service_env(connect_config, oauth_server)) as base:
        barrier = threading.Barrier(20)

        def reader():
            try:
                barrier.wait()
                results.append(requests.get(f"{base}/v1/connections/{conn_id}?include_secrets=true",
                                            headers={**connect.auth, "Host": "connect.test"}, timeout=60))
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert errors == []
    assert [r.status_code for r in results] == [200] * 20, [r.text[:300] for r in results if r.status_code != 200]
    pids = {r.headers["X-Test-Worker-Pid"] for r in results}
    tokens = {r.json()["settings"]["oauth"]["credentials"]["access_token"] for r in results}
    print(f"\n20 readers over {len(pids)} gunicorn workers; token endpoint calls: "
          f"{oauth_server.token_calls('refresh_token')}; distinct tokens answered: {len(tokens)}")

    assert len(pids) >= 2, "the reads were not spread over several processes"
    assert oauth_server.token_calls("refresh_token") == 1
    assert oauth_server.token_calls() == 1
    assert len(tokens) == 1
    new = tokens.pop()
    assert new != old["access_token"]
    assert oauth_server.token_is_active(new)
    assert oauth_server.family_revocations == []
    assert all(r.headers["Cache-Control"] == "no-store" for r in results)
    row, saved = stored(connect.app, conn_id)
    assert row.status == "active" and row.refresh_generation == 1
    assert row.refresh_lease_until is None
    assert saved["access_token"] == new
    assert oauth_server.refresh_token_is_active(saved["refresh_token"])


def test_concurrent_forced_reads_over_gunicorn_merge(connect, connect_config, oauth_server, credential, tmp_path):
    token = issue_tokens(oauth_server)
    conn_id = create_oauth_connection(connect.app, connect.org_id, credential, token,
                                      expires_at=future())  # fresh for another hour
    oauth_server.token_delay = 0.5
    oauth_server.reset_records()
    results = []
    with gunicorn(tmp_path, service_env(connect_config, oauth_server), workers=2, threads=4) as base:
        barrier = threading.Barrier(8)

        def reader():
            barrier.wait()
            results.append(requests.get(f"{base}/v1/connections/{conn_id}?include_secrets=true&refresh=force",
                                        headers={**connect.auth, "Host": "connect.test"}, timeout=60))

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [r.status_code for r in results] == [200] * 8
    assert oauth_server.token_calls("refresh_token") == 1
    assert len({r.json()["settings"]["oauth"]["credentials"]["access_token"] for r in results}) == 1


def test_three_refresh_due_processes_in_parallel_refresh_each_connection_once(connect, connect_config,
                                                                              oauth_server, credential):
    ids = [create_oauth_connection(connect.app, connect.org_id, credential, issue_tokens(oauth_server),
                                   expires_at=past(10 + i), customer_id=f"customer-{i}") for i in range(18)]
    oauth_server.token_delay = 0.2
    oauth_server.reset_records()
    env = service_env(connect_config, oauth_server)
    # the CLI builds its app from the environment: give it the tests' plugin through a sitecustomize-free
    # route: a tiny launcher that registers the plugin and runs the real command group
    launcher = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(Path(connect_config["instance_path"]) / "cli")!r})
        from connect_service import cli as cli_module
        from connect_service import app as app_module
        import refresh_cli_plugin

        def _create_app():
            return app_module.create_app(plugins=[refresh_cli_plugin.Plugin()])

        cli_module._create_app = _create_app
        cli_module.cli.create_app = _create_app
        sys.exit(cli_module.cli.main(["refresh-due", "--batch-size", "3", "--concurrency", "3"],
                                     prog_name="connect-service"))
    ''')
    cli_dir = Path(connect_config["instance_path"]) / "cli"
    cli_dir.mkdir()
    (cli_dir / "refresh_cli_plugin.py").write_text(WSGI_MODULE.split("_app = create_app")[0])
    procs = [subprocess.Popen([sys.executable, "-c", launcher], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [0, 0, 0], outputs
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(s["refreshed"] for s in summaries) == 18
    assert sum(s["failed"] for s in summaries) == 0
    assert all("refresh-due: processed" in err for _, err in outputs)
    print(f"\nthree refresh-due runners: {summaries}; token endpoint calls: "
          f"{oauth_server.token_calls('refresh_token')}")
    assert oauth_server.token_calls("refresh_token") == 18
    presented = [r["form"]["refresh_token"] for r in oauth_server.token_requests]
    assert len(set(presented)) == 18  # no refresh token presented twice
    assert oauth_server.family_revocations == []
    for conn_id in ids:
        row, saved = stored(connect.app, conn_id)
        assert row.refresh_generation == 1 and row.status == "active"
        assert oauth_server.token_is_active(saved["access_token"])


def test_no_database_lock_is_held_while_the_token_endpoint_is_called(connect, oauth_server, credential,
                                                                     monkeypatch):
    """A slow token endpoint holds a refresh in flight; a PATCH of the same row completes meanwhile.

    The test server's ``token_delay`` sleep is replaced by a gate the test opens, so "in flight" is
    a fact, not a timing guess: were a row lock (PostgreSQL) or the write lock (SQLite) held during
    the provider call, the PATCH could not finish before the gate opens.
    """
    import types

    from tests.support import oauth_server as server_module

    old = issue_tokens(oauth_server)
    conn_id = create_oauth_connection(connect.app, connect.org_id, credential, old, expires_at=past())
    arrived, gate = threading.Event(), threading.Event()

    def gated_sleep(seconds):
        arrived.set()
        gate.wait(120)

    monkeypatch.setattr(server_module, "time", types.SimpleNamespace(time=time.time, sleep=gated_sleep))
    oauth_server.token_delay = 1  # the sleep is the gate above
    read, patched = [], []
    reader = threading.Thread(target=lambda: read.append(read_secrets(connect, conn_id)))
    reader.start()
    try:
        assert arrived.wait(60), "the refresh never reached the token endpoint"
        patcher = threading.Thread(target=lambda: patched.append(connect.app.test_client().patch(
            f"/v1/connections/{conn_id}", json={"metadata": {"note": "edited mid-refresh"}},
            headers=connect.auth)))
        patcher.start()
        patcher.join(60)  # a hang guard only: without a lock the PATCH returns at once
        patch_finished_in_flight = not patcher.is_alive() and reader.is_alive() and not gate.is_set()
    finally:
        gate.set()
        reader.join(60)
    patcher.join(60)
    assert patch_finished_in_flight, "the PATCH waited for the provider call: a database lock was held"
    assert patched[0].status_code == 200, patched[0].get_json()
    assert read[0].status_code == 200, read[0].get_json()
    assert read[0].get_json()["settings"]["oauth"]["credentials"]["access_token"] != old["access_token"]
    row, saved = stored(connect.app, conn_id)
    # both writes landed: the refresh's token columns and the PATCH's metadata
    assert row.metadata == {"note": "edited mid-refresh"} and row.refresh_generation == 1
    assert saved["access_token"] == read[0].get_json()["settings"]["oauth"]["credentials"]["access_token"]
    assert oauth_server.token_calls("refresh_token") == 1
