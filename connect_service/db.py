"""The peewee database: one proxy, bound by ``init_app`` from ``database_url``.

SQLite (WAL, busy timeout) by default; PostgreSQL for deployments with
several processes or hosts, through playhouse's connection pool
(``database_pool_size`` connections per process, reused across requests).
Nothing connects before a query needs it (``autoconnect``), so ``/healthz``
never touches the database; teardown hands the connection back to the pool.
Connecting gives up after :data:`CONNECT_TIMEOUT_SECONDS`, and a connection
the server dropped is discarded by the pool, so an outage answers fast and
the service recovers on its own when the database is back.
"""
from __future__ import annotations

import datetime
import os
import threading
from urllib.parse import urlsplit

import peewee
from playhouse.db_url import connect as connect_url
from playhouse.db_url import parse as parse_url
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

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


class FailFastPool(PooledPostgresqlDatabase):
    """playhouse's pool, but an outage costs each process one connect timeout at a time, not one per thread.

    The pool opens new connections while holding its lock, so during an outage
    the threads of a process queue behind the one that is connecting, and each
    then waits out a timeout of its own: requests pile up far past
    :data:`CONNECT_TIMEOUT_SECONDS`. Here a thread that queued behind a failed
    connect fails at once (503) instead of trying again itself; the next
    request after that tries afresh, so recovery is immediate.
    """

    def __init__(self, *args, **kwargs):
        self._failed_connects = 0
        self._seen = threading.local()
        super().__init__(*args, **kwargs)

    def connect(self, reuse_if_open=False):
        # noted before peewee's own connection lock, behind which the threads queue
        self._seen.failed_connects = self._failed_connects
        return super().connect(reuse_if_open)

    def _connect(self):
        seen = getattr(self._seen, "failed_connects", self._failed_connects)
        with self._pool_lock:  # reentrant: the pool's own _connect takes it again
            if self._failed_connects != seen:
                raise peewee.OperationalError("the database could not be reached just now")
            try:
                return super()._connect()
            except MaxConnectionsExceeded:
                raise
            except Exception:
                self._failed_connects += 1
                raise


def open_database(url: str, pool_size: int = 8) -> peewee.Database:
    """Build a peewee database from a URL (``sqlite:///path`` or ``postgresql://…``)."""
    if url.startswith("sqlite"):
        _create_private_file(urlsplit(url).path[1:])
        db = connect_url(url, pragmas=SQLITE_PRAGMAS, timeout=15)
    elif url.startswith(("postgres://", "postgresql://")):
        params = parse_url(url)
        db = FailFastPool(params.pop("database"), max_connections=pool_size, stale_timeout=300,
                          timeout=POOL_WAIT_SECONDS, connect_timeout=CONNECT_TIMEOUT_SECONDS, autoconnect=True,
                          **params)
    else:
        raise ValueError("database_url must start with sqlite:// or postgresql://")
    return db


def _create_private_file(path: str) -> None:
    """Create a missing SQLite file with mode 0600 (it holds encrypted secrets and hashes).

    SQLite would create it with the umask's mode (often world-readable), and
    gives its ``-wal``/``-shm`` files the database file's mode.
    """
    if not path or path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:  # another process created it meanwhile
        pass
    except OSError:  # e.g. the folder does not exist: SQLite reports that itself on connecting
        pass


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
