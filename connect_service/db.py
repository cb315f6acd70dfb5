"""The peewee database: one proxy, bound by ``init_app`` from ``database_url``.

SQLite (WAL, busy timeout) by default; PostgreSQL for deployments with
several processes or hosts. Both go through playhouse's connection pool, so
a request reuses an open connection (PostgreSQL: at most
``database_pool_size`` per process; SQLite: one per thread that needs one,
pragmas applied once per connection, not once per request).
Nothing connects before a query needs it (``autoconnect``), so ``/healthz``
never touches the database; teardown hands the connection back to the pool.
Connecting gives up after :data:`CONNECT_TIMEOUT_SECONDS`, and a connection
the server dropped is discarded by the pool, so an outage answers fast and
the service recovers on its own when the database is back.
"""
from __future__ import annotations

import datetime
from typing import Callable
from urllib.parse import urlsplit

import peewee
from playhouse.db_url import connect as connect_url
from playhouse.pool import MaxConnectionsExceeded

database = peewee.DatabaseProxy()

#: seconds a new PostgreSQL connection may take (TCP plus start-up) before the request answers 503
CONNECT_TIMEOUT_SECONDS = 2
#: seconds a request waits for a free pooled connection when all are in use
POOL_WAIT_SECONDS = 10
#: what a request can meet when the database is away: the error handler answers 503 for these
UNAVAILABLE_ERRORS = (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded)

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 15000,
    "foreign_keys": 1,
    "synchronous": "normal",
}


def open_database(url: str, pool_size: int = 8) -> peewee.Database:
    """Build a peewee database from a URL (``sqlite:///path`` or ``postgresql://…``)."""
    if url.startswith("sqlite"):
        # ``timeout`` here is the pool's wait; SQLite's busy wait is the busy_timeout pragma. A pooled
        # connection serves one thread at a time but not always the thread that opened it.
        db = connect_url(url.replace("sqlite://", "sqlite+pool://", 1), pragmas=SQLITE_PRAGMAS,
                         max_connections=None, stale_timeout=300, timeout=POOL_WAIT_SECONDS,
                         check_same_thread=False)
    elif url.startswith(("postgres://", "postgresql://")):
        scheme, rest = url.split("://", 1)
        db = connect_url(f"{scheme}+pool://{rest}", max_connections=pool_size, stale_timeout=300,
                         timeout=POOL_WAIT_SECONDS, connect_timeout=CONNECT_TIMEOUT_SECONDS, autoconnect=True)
    else:
        raise ValueError("database_url must start with sqlite:// or postgresql://")
    return db


def close_pool() -> None:
    """Close this process's connection and every idle pooled one (before a fork, after a check)."""
    if database.obj is None:
        return
    if not database.is_closed():
        database.close()
    close_all = getattr(database.obj, "close_all", None)
    if close_all:
        close_all()


def check_connection() -> None:
    """Open and close one connection; raises the driver's error (see :func:`describe_error`)."""
    with database.connection_context():
        database.execute_sql("SELECT 1").fetchone()


def describe_error(exc: BaseException, url: str) -> str:
    """One line saying why the database could not be used, without the URL's password."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    password = urlsplit(url).password if "://" in url else None
    if password:
        text = text.replace(password, "***")
    return text


#: SQL text of hot queries, built once per process and database kind (see :func:`compiled_sql`)
_COMPILED: dict[tuple[str, type], str] = {}


def compiled_sql(name: str, build: Callable[[], peewee.Query | str]) -> str:
    """The SQL of the query ``build()`` returns, built by peewee once per process and database kind.

    Hot paths run it with ``Model.raw(sql, *params)`` or ``database.execute_sql``, so peewee
    does not rebuild the same SQL on every request. ``build`` must give a query whose parameters
    are placeholders in a fixed order (their values are ignored), or the SQL text itself.
    """
    key = (name, type(database.obj))
    sql = _COMPILED.get(key)
    if sql is None:
        built = build()
        sql = _COMPILED[key] = built if isinstance(built, str) else built.sql()[0]
    return sql


def fetch_models(sql: str, params: tuple, *models: type) -> list[tuple]:
    """Run ``sql`` (selecting every column of each of ``models``, in field order) and build instances.

    One tuple of instances per row, as peewee's own cursor wrapper builds them (no defaults
    computed, nothing dirty), without peewee building the SQL again.
    """
    shapes = [(model, model._meta.sorted_fields) for model in models]
    out = []
    for row in database.execute_sql(sql, params).fetchall():
        instances, i = [], 0
        for model, fields in shapes:
            obj = model(__no_default__=1, **{f.name: f.python_value(row[i + n]) for n, f in enumerate(fields)})
            obj._dirty.clear()
            instances.append(obj)
            i += len(fields)
        out.append(tuple(instances))
    return out


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

    @app.teardown_appcontext
    def _close(exc):
        if not database.is_closed():
            database.close()  # pooled: back to the pool (or discarded when the server dropped it)
