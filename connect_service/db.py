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

import contextlib
import datetime
import functools
import os
import threading
import time
import weakref
from typing import Any, Callable
from urllib.parse import urlsplit

import peewee
from playhouse.db_url import connect as connect_url
from playhouse.db_url import parse as parse_url
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

from .write_turns import WriteTurns, turn_of

database = peewee.DatabaseProxy()

#: seconds a new PostgreSQL connection may take (TCP plus start-up) before the request answers 503
CONNECT_TIMEOUT_SECONDS = 2
#: seconds a request waits for a free pooled connection when all are in use
POOL_WAIT_SECONDS = 10
#: a pooled PostgreSQL connection idle longer than this is pinged before reuse
PING_AFTER_IDLE_SECONDS = 1.0
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


class RecentlyUsedPool(FailFastPool):
    """:class:`FailFastPool`, without a ``SELECT 1`` round trip for a connection just handed back.

    The stock pool pings every connection it hands out, one extra round trip per request.
    Here a connection returned idle less than :data:`PING_AFTER_IDLE_SECONDS` ago is handed
    out as it is (the driver's own ``closed`` flag and transaction state are still checked);
    one idle longer is pinged as before, so after an outage the pool still drops the dead
    connections instead of failing a request on each. A connection that breaks in use fails
    that request (503) and is discarded when it comes back.
    """

    #: hot statements run as server-side prepared statements (``database_prepared_statements``)
    prepare_statements = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._returned_at: dict[int, float] = {}
        #: per driver connection (held weakly: a closed and collected connection takes its entry along, and a
        #: new connection is never mistaken for an old one at the same address): SQL text → statement name
        self._prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def execute_prepared(self, sql: str, params: tuple):
        """Run ``sql`` (``%s`` placeholders) as a prepared statement of this thread's connection.

        PostgreSQL plans a statement on every ``execute``; for the hot lookups planning costs
        more than running them (a three-table join: 0.7 ms as text, 0.25 ms prepared, measured
        here). Each connection prepares a statement once, on first use, and keeps it for its life
        (a rollback does not drop it; a closed connection takes its statements along).
        """
        conn = self.connection()
        prepared = self._prepared.get(conn)
        if prepared is None:  # setdefault would make a weak reference and a dict on every call
            prepared = self._prepared[conn] = {}
        name = prepared.get(sql)
        if name is None:
            parts = sql.split("%s")
            if "%" in "".join(parts) or len(parts) - 1 != len(params):  # not a plain placeholder statement
                return self.execute_sql(sql, params)
            name = f"connect_{len(prepared)}"
            self.execute_sql(f"PREPARE {name} AS " + "".join(
                part + (f"${i + 1}" if i < len(parts) - 1 else "") for i, part in enumerate(parts)))
            prepared[sql] = name
        if not params:
            return self.execute_sql(f"EXECUTE {name}")
        return self.execute_sql(f"EXECUTE {name} ({', '.join(['%s'] * len(params))})", params)

    def _is_closed(self, conn) -> bool:
        if conn.closed:
            return True
        returned = self._returned_at.get(self.conn_key(conn))
        if (returned is not None and time.monotonic() - returned < PING_AFTER_IDLE_SECONDS
                and self._adapter.txn_status(conn) == self._adapter.txn_idle):
            return False
        return super()._is_closed(conn)

    def _close(self, conn, close_conn=False):
        if close_conn:
            self._returned_at.pop(self.conn_key(conn), None)
        else:
            self._returned_at[self.conn_key(conn)] = time.monotonic()
        super()._close(conn, close_conn)

    def _close_raw(self, conn):
        self._returned_at.pop(self.conn_key(conn), None)
        super()._close_raw(conn)


def open_database(url: str, pool_size: int = 8, prepared_statements: bool = True) -> peewee.Database:
    """Build a peewee database from a URL (``sqlite:///path`` or ``postgresql://…``).

    ``prepared_statements``: PostgreSQL runs the hot statements prepared (see
    :meth:`RecentlyUsedPool.execute_prepared`); off behind a pooler that does not keep sessions
    (PgBouncer in transaction mode). SQLite's driver keeps its statements prepared itself.
    """
    if url.startswith("sqlite"):
        _create_private_file(urlsplit(url).path[1:])
        # ``timeout`` here is the pool's wait; SQLite's busy wait is the busy_timeout pragma. A pooled
        # connection serves one thread at a time but not always the thread that opened it.
        db = connect_url(url.replace("sqlite://", "sqlite+pool://", 1), pragmas=SQLITE_PRAGMAS,
                         max_connections=None, stale_timeout=300, timeout=POOL_WAIT_SECONDS,
                         check_same_thread=False)
        path = urlsplit(url).path[1:]
        if path and path != ":memory:" and not path.startswith("file:"):
            db.write_turns = WriteTurns(path)  # see write_turn
    elif url.startswith(("postgres://", "postgresql://")):
        params = parse_url(url)
        db = RecentlyUsedPool(params.pop("database"), max_connections=pool_size, stale_timeout=300,
                              timeout=POOL_WAIT_SECONDS, connect_timeout=CONNECT_TIMEOUT_SECONDS, autoconnect=True,
                              **params)
        db.prepare_statements = prepared_statements
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


#: SQL text of hot queries, built once per process and database kind (see :func:`compiled_sql`)
_COMPILED: dict[tuple[str, type], str] = {}


def compiled_sql(name: str, build: Callable[[], peewee.Query | str]) -> str:
    """The SQL of the query ``build()`` returns, built by peewee once per process and database kind.

    Hot paths run it with :func:`execute_compiled` (or :func:`fetch_models`), so peewee
    does not rebuild the same SQL on every request. ``build`` must give a query whose parameters
    are placeholders in a fixed order (their values are ignored), or the SQL text itself.
    """
    key = (name, type(database.obj))
    sql = _COMPILED.get(key)
    if sql is None:
        built = build()
        sql = _COMPILED[key] = built if isinstance(built, str) else built.sql()[0]
    return sql


def execute_compiled(sql: str, params: tuple):
    """Run SQL from :func:`compiled_sql` with ``params``; the cursor.

    On PostgreSQL (unless ``database_prepared_statements`` is off) as a prepared statement
    of the connection, so the server does not plan it again on every request.
    """
    obj = database.obj
    if isinstance(obj, RecentlyUsedPool) and obj.prepare_statements:
        return obj.execute_prepared(sql, params)
    return database.execute_sql(sql, params)


def loaded_instance(model: type, fields: tuple, values) -> Any:
    """A (partial) ``model`` instance of ``fields`` holding ``values`` as the database returned them."""
    return as_loaded(model, {name: v if convert is None else convert(v)
                             for (name, convert), v in zip(converters(fields), values)})


_PLAIN_TEXT = (peewee.CharField, peewee.TextField, peewee.FixedCharField)


def _converter(field: peewee.Field) -> Callable | None:
    """``field.python_value``, or None where it returns what both drivers give (text columns: a str or None)."""
    target = field.rel_field if isinstance(field, peewee.ForeignKeyField) else field
    plain = (type(target).python_value is peewee.Field.python_value
             and type(target).adapt is peewee._StringField.adapt and isinstance(target, _PLAIN_TEXT))
    return None if plain else field.python_value


@functools.lru_cache(maxsize=256)  # per tuple of fields, which the models fix: built once per worker
def converters(fields: tuple) -> tuple[tuple[str, Callable | None], ...]:
    """``(name, python_value or None)`` per field, None where the driver's value is already the field's."""
    return tuple((f.name, _converter(f)) for f in fields)


def as_loaded(model: type, data: dict) -> Any:
    """An instance holding ``data`` as loaded from the database (what ``Model(__no_default__=1, **data)``
    followed by clearing ``_dirty`` gives, without a descriptor call per field)."""
    obj = model.__new__(model)
    obj.__data__ = data
    obj._dirty = set()
    obj.__rel__ = {}
    return obj


def fetch_models(sql: str, params: tuple, *models: type, extra: tuple = ()) -> list[tuple]:
    """Run ``sql`` (selecting every column of each of ``models``, in field order) and build instances.

    One tuple of instances per row, as peewee's own cursor wrapper builds them (no defaults
    computed, nothing dirty), without peewee building the SQL again. With ``extra`` (fields
    selected after the models' columns), each row is ``(instances, extra values)`` instead.
    """
    shapes = [(model, converters(tuple(model._meta.sorted_fields))) for model in models]
    out = []
    for row in execute_compiled(sql, params).fetchall():
        instances, i = [], 0
        for model, shape in shapes:
            instances.append(as_loaded(model, {name: v if convert is None else convert(v)
                                               for (name, convert), v in zip(shape, row[i:i + len(shape)])}))
            i += len(shape)
        if extra:
            out.append((tuple(instances), tuple(f.python_value(v) for f, v in zip(extra, row[i:]))))
        else:
            out.append(tuple(instances))
    return out


def fetch_columns(sql: str, params: tuple, model: type, fields: tuple) -> list:
    """Run ``sql`` (selecting exactly ``fields`` of ``model``, in order): partial instances, one per row."""
    return [loaded_instance(model, fields, row) for row in execute_compiled(sql, params).fetchall()]


def is_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


def write_turn():
    """Around a write made outside a transaction (run it and read its rows inside): on SQLite, this thread's
    turn to write (:mod:`connect_service.write_turns`); a no-op on PostgreSQL and inside a transaction."""
    return turn_of(database.obj)


@contextlib.contextmanager
def write_transaction():
    """A transaction that takes the write lock up front on SQLite (no upgrade deadlocks), in its write turn."""
    if isinstance(database.obj, peewee.SqliteDatabase):
        with write_turn(), database.atomic("IMMEDIATE"):
            yield
    else:
        with database.atomic():
            yield


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
    database.initialize(open_database(cfg["database_url"], cfg["database_pool_size"],
                                      cfg["database_prepared_statements"]))

    @app.teardown_appcontext
    def _close(exc):
        if not database.is_closed():
            database.close()  # pooled: back to the pool (or discarded when the server dropped it)
