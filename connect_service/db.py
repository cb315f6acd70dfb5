"""The peewee database: one proxy, bound by ``init_app`` from ``database_url``.

SQLite (WAL, busy timeout) by default; PostgreSQL (pooled) for deployments
with several processes or hosts. Connections open per request and close on
teardown, so nothing about a request outlives it in process memory.
"""
from __future__ import annotations

import datetime

import peewee
from playhouse.db_url import connect as connect_url

database = peewee.DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 15000,
    "foreign_keys": 1,
    "synchronous": "normal",
}


def open_database(url: str, pool_size: int = 8) -> peewee.Database:
    """Build a peewee database from a URL (``sqlite:///path`` or ``postgresql://…``)."""
    if url.startswith("sqlite"):
        db = connect_url(url, pragmas=SQLITE_PRAGMAS, timeout=15)
    elif url.startswith(("postgres://", "postgresql://")):
        scheme, rest = url.split("://", 1)
        db = connect_url(f"{scheme}+pool://{rest}", max_connections=pool_size, stale_timeout=300,
                         timeout=10, autoconnect=True)
    else:
        raise ValueError("database_url must start with sqlite:// or postgresql://")
    return db


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


def write_transaction():
    """A transaction that takes the write lock up front on SQLite (no upgrade deadlocks)."""
    if isinstance(database.obj, peewee.SqliteDatabase):
        return database.atomic("IMMEDIATE")
    return database.atomic()


def db_now() -> datetime.datetime:
    """The database server's clock (naive UTC); leases use it, not this host's clock."""
    if is_postgres():
        value = database.execute_sql("SELECT (now() AT TIME ZONE 'UTC')").fetchone()[0]
    else:
        value = database.execute_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").fetchone()[0]
        value = datetime.datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")
    return value


def init_app(app) -> None:
    cfg = app.config["CONNECT"]
    database.initialize(open_database(cfg["database_url"], cfg["database_pool_size"]))

    @app.before_request
    def _connect():
        database.connect(reuse_if_open=True)

    @app.teardown_appcontext
    def _close(exc):
        if not database.is_closed():
            database.close()

