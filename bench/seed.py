"""Bench fixtures: a seeded database (SQLite or PostgreSQL) and the environment gunicorn gets.

``Fixture(db)`` makes an org, Access Key, a public app with one API-key requirement deployed,
a connect token and a stored connection for ``bench-user``. ``bulk_connections(n)`` tops the
connection table up to ``n`` rows spread over ``n / 100`` other users of the same app
(``generate_series`` on PostgreSQL, ``executemany`` in one transaction on SQLite).
"""
from __future__ import annotations

import datetime
import logging
import os
import socket
import tempfile

TYPE = "dynamiq.connections.HttpApiKey"
PER_USER = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recreate_pg_database(pg_url: str) -> None:
    """Drop (forcing its sessions out) and create the PostgreSQL database ``pg_url`` names."""
    import psycopg2  # imported here: only the PostgreSQL benches need the driver directly

    base, name = pg_url.rsplit("/", 1)
    admin = psycopg2.connect(f"{base}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()


class Fixture:
    def __init__(self, db: str, pg_url: str):
        # Imported here: bench_api.py puts the worktree on sys.path before importing this module.
        from connect_service import create_app
        from connect_service.config import generate_key, generate_secret
        from connect_service.db import database
        from connect_service.testing import ConnectHarness, make_config, reset_database

        self.db = db
        self.pg_url = pg_url
        self.tmp = tempfile.mkdtemp(prefix="connect-bench-")
        self.svc_port, self.bare_port = _free_port(), _free_port()
        if db == "postgresql":
            self._recreate_pg()
            url = pg_url
        else:
            url = f"sqlite:///{self.tmp}/bench.db"
        cfg = make_config(self.tmp, database_url=url, public_url=f"http://127.0.0.1:{self.svc_port}",
                          encryption_keys=[generate_key()], secret_key=generate_secret(),
                          rate_limit_tokens_per_minute=10**9, rate_limit_credentials_per_minute=10**9,
                          log_level="INFO")
        app = create_app(cfg)
        logging.getLogger("connect_service").setLevel(logging.WARNING)  # this process's seeding requests
        with app.app_context():
            reset_database()
        from connect_service.access_keys import create_access_key
        from connect_service.models import Organization

        with app.app_context(), database.connection_context():
            org = Organization.create(name="bench")
            _, key = create_access_key(org)
        h = ConnectHarness(app=app, client=app.test_client(), org_id=org.id, access_key=key)
        demo = h.create_app_with_requirements([
            {"key": "helpdesk", "type": "connection", "title": "Helpdesk",
             "spec": {"type": "connection", "data": {"type": TYPE}}}])
        self.app, self.org_id, self.app_id, self.hostname = app, org.id, demo["id"], demo["hostname"]
        self.access_key = key
        self.token = h.token(demo, "bench-user")
        self.requirement_id = h.requirement_id(demo, "helpdesk")
        r = h.submit_credentials(self.token, self.requirement_id, TYPE, {"url": "https://h.example", "api_key": "k"})
        assert r.status_code == 201, r.get_json()
        r = h.client.get("/v1/connections", headers=h.auth)
        self.connection_id = r.get_json()["data"][0]["id"]
        cfg = dict(cfg, env="development")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
        self.env.update({f"CONNECT_{k.upper()}": (",".join(v) if isinstance(v, list) else str(v))
                         for k, v in cfg.items() if v is not None})

    def _recreate_pg(self) -> None:
        recreate_pg_database(self.pg_url)

    def count(self) -> int:
        from connect_service.db import database

        with self.app.app_context(), database.connection_context():
            return database.execute_sql("SELECT count(*) FROM connection").fetchone()[0]

    def bulk_connections(self, total: int, chunk: int = 1_000_000) -> None:
        """Add connections of other users until the table holds ``total`` rows, then ANALYZE."""
        from connect_service.db import database

        with self.app.app_context(), database.connection_context():
            start = database.execute_sql("SELECT count(*) FROM connection").fetchone()[0]
            while start < total:
                end = min(total, start + chunk)
                with database.atomic():
                    if self.db == "postgresql":
                        database.execute_sql(
                            "INSERT INTO connection (id, org_id, app_id, type, connector_name, customer_id,"
                            " requirement_id, status, disabled, metadata, refresh_generation, created_at,"
                            " updated_at) SELECT 'conn_seed_' || i, %s, %s, %s, 'http_api_key',"
                            f" 'seed-u' || (i / {PER_USER}), 'r' || mod(i, {PER_USER}), 'active', false, '{{}}',"
                            " 0, now(), now() FROM generate_series(%s, %s) AS i",
                            (self.org_id, self.app_id, TYPE, start, end - 1))
                    else:
                        now = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S")
                        database.cursor().executemany(
                            "INSERT INTO connection (id, org_id, app_id, type, connector_name, customer_id,"
                            " requirement_id, status, disabled, metadata, refresh_generation, created_at,"
                            " updated_at) VALUES (?, ?, ?, ?, 'http_api_key', ?, ?, 'active', 0, '{}', 0, ?, ?)",
                            ((f"conn_seed_{i}", self.org_id, self.app_id, TYPE, f"seed-u{i // PER_USER}",
                              f"r{i % PER_USER}", now, now) for i in range(start, end)))
                start = end
                print(f"  {self.db}: {start} connections", flush=True)
            database.execute_sql("ANALYZE")

    def explain(self) -> str:
        """The plan of the statuses statement (app, revocation and the user's connections in one query).

        On PostgreSQL the service runs it prepared, so this shows the generic plan a prepared
        statement settles on (``plan_cache_mode = force_generic_plan``), executed.
        """
        from connect_service.db import database
        from connect_service.statuses import app_and_connections_sql

        params = ("bench-user", "bench-user", self.app_id)
        with self.app.app_context(), database.connection_context():
            sql = app_and_connections_sql()
            if self.db == "postgresql":
                numbered = sql
                for i in range(len(params)):
                    numbered = numbered.replace("%s", f"${i + 1}", 1)
                database.execute_sql(f"PREPARE bench_statuses AS {numbered}")
                database.execute_sql("SET plan_cache_mode = force_generic_plan")
                rows = database.execute_sql("EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_statuses (%s, %s, %s)",
                                            params).fetchall()
                database.execute_sql("DEALLOCATE bench_statuses")
                database.execute_sql("RESET plan_cache_mode")
            else:
                rows = database.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return "\n".join(" | ".join(str(c) for c in row) for row in rows)
