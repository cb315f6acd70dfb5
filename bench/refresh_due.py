"""refresh-due throughput: N due OAuth connections, R parallel ``connect-service refresh-due`` runners.

    .venv/bin/python bench/bench_api.py --refresh-due [--connections 4000] [--runners 4]

Seeds PostgreSQL (a database of its own) with one generic OAuth2 credential (the built-in
``dynamiq.connections.OAuth2`` type) whose token URL is a local token endpoint in this process,
and ``--connections`` active connections whose access tokens expired, each with its own refresh
token. Starts the runners together and reports refreshes per second (connections refreshed over
the wall time of the slowest runner) and double refreshes: a refresh token presented to the
endpoint more than once (each refresh rotates it, so a second use means two runners refreshed
one connection).
"""
from __future__ import annotations

import datetime
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TYPE = "dynamiq.connections.OAuth2"


class TokenEndpoint:
    """A minimal RFC 6749 token endpoint: every refresh_token grant rotates the refresh token."""

    def __init__(self):
        self.presented: Counter[str] = Counter()
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's name)
                body = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                token = body.get("refresh_token", [""])[0]
                with endpoint.lock:
                    endpoint.presented[token] += 1
                answer = json.dumps({"access_token": secrets.token_hex(16), "token_type": "Bearer",
                                     "expires_in": 3600, "refresh_token": secrets.token_hex(16),
                                     "scope": "read offline_access"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def seed(pg_url: str, count: int, token_url: str) -> dict:
    """A fresh database with the credential and ``count`` due connections; returns the service config."""
    import psycopg2

    from connect_service import create_app
    from connect_service.config import generate_key, generate_secret
    from connect_service.connections import seal_settings
    from connect_service.db import database
    from connect_service.models import Connection, Credential, Organization, utcnow
    from connect_service.testing import make_config, reset_database

    base, name = pg_url.rsplit("/", 1)
    admin = psycopg2.connect(f"{base}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    cfg = make_config(tempfile.mkdtemp(prefix="connect-bench-"), database_url=pg_url,
                      encryption_keys=[generate_key()], secret_key=generate_secret(), log_level="WARNING")
    app = create_app(cfg)
    with app.app_context():
        reset_database()
    with app.app_context(), database.connection_context():
        org = Organization.create(name="bench")
        cred = Credential(org=org.id, name="bench oauth", connector_name="oauth2", oauth_url=token_url,
                          oauth_token_url=token_url, oauth_client_id="bench-client", oauth_scope="read",
                          token_endpoint_auth_method="client_secret_basic")
        cred.oauth_client_secret_encrypted = app.extensions["connect_keyring"].encrypt_json(
            "bench-secret", "credential", "oauth_client_secret", cred.id)
        cred.save(force_insert=True)
        now = utcnow()
        expired = now - datetime.timedelta(seconds=60)
        rows = []
        for i in range(count):
            conn = Connection(org=org.id, type=TYPE, connector_name="oauth2", integration_id=TYPE,
                              credential=cred.id, status="active", expires_at=expired, customer_id=f"user-{i}")
            creds = {"access_token": secrets.token_hex(16), "refresh_token": secrets.token_hex(16),
                     "token_type": "Bearer", "scope": "read", "expires_in": 3600, "client_id": "bench-client",
                     "expires_at": expired.replace(microsecond=0).isoformat() + "Z"}
            conn.settings_encrypted = seal_settings(conn, {"oauth": {
                "credentials": creds, "created_at": now.isoformat() + "Z", "updated_at": now.isoformat() + "Z",
                "last_fetched_at": None, "metadata": {}}})
            rows.append(conn)
        with database.atomic():
            Connection.bulk_create(rows, batch_size=500)
    return cfg


def main(pg_url: str, count: int = 4000, runners: int = 4) -> None:
    count = int(os.environ.get("CONNECT_BENCH_REFRESH_CONNECTIONS", count))
    endpoint = TokenEndpoint()
    cfg = seed(pg_url.rsplit("/", 1)[0] + "/cs_perf_refresh", count, endpoint.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update({f"CONNECT_{k.upper()}": (",".join(v) if isinstance(v, list) else str(v))
                for k, v in dict(cfg, env="development").items() if v is not None})
    cli = os.path.join(os.path.dirname(sys.executable), "connect-service")
    started = time.monotonic()
    procs = [subprocess.Popen([cli, "refresh-due", "--batch-size", "100"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(runners)]
    outputs = [p.communicate(timeout=1800) for p in procs]
    wall = time.monotonic() - started
    summaries = []
    for p, (out, err) in zip(procs, outputs):
        try:
            summaries.append(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            summaries.append({"exit": p.returncode, "stderr": err[-500:]})
    refreshed = sum(s.get("refreshed", 0) for s in summaries)
    doubles = sum(1 for n in endpoint.presented.values() if n > 1)
    print(f"\nrefresh-due, PostgreSQL, {runners} runners, {count} due connections, local token endpoint; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"runners: {summaries}")
    print(f"refreshed {refreshed} in {wall:.1f} s wall (process start included): {refreshed / wall:.0f} refreshes/s; "
          f"token endpoint calls {sum(endpoint.presented.values())}; double refreshes {doubles}")
