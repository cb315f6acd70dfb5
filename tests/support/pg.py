"""PostgreSQL for process-level tests: a database of the test's own (cut outages with tests/support/tcp_proxy.py).

The machine's PostgreSQL is shared with the other test pass: these helpers only ever create and
drop their own database, and simulate an outage by cutting a proxy in front of the server,
never by stopping it.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg2

ADMIN_URL = os.environ.get("CONNECT_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin(sql: str) -> None:
    conn = psycopg2.connect(ADMIN_URL, connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def reachable() -> bool:
    try:
        _admin("SELECT 1")
        return True
    except Exception:  # any driver or network error: not reachable
        return False


def url_for(database: str, port: int | None = None) -> str:
    """The admin URL with another database name (and optionally another port on the same host)."""
    parts = urlsplit(ADMIN_URL)
    netloc = parts.netloc
    if port is not None:
        netloc = f"{netloc.rsplit('@', 1)[0]}@{parts.hostname}:{port}" if "@" in netloc else f"{parts.hostname}:{port}"
    return urlunsplit((parts.scheme, netloc, "/" + database, parts.query, ""))


@contextlib.contextmanager
def temporary_database(prefix: str):
    """Create a fresh database named ``<prefix>_<random>``; yield its name; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
