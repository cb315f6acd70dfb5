"""PostgreSQL for process-level tests: a database of the test's own, and a TCP proxy it can cut.

The machine's PostgreSQL is shared with the other test pass: these helpers only ever create and
drop their own database, and simulate an outage by cutting a proxy in front of the server,
never by stopping it.
"""
from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
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


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of the admin URL's server.

    ``cut()`` closes every open connection and then accepts new ones without ever answering (a
    database host that vanished: connects hang until the client's own timeout); ``restore()``
    forwards again.
    """

    def __init__(self):
        parts = urlsplit(ADMIN_URL)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._cut = False
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="pg-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:  # hold it open, silent
                    self._pairs.append((client, None))
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    with contextlib.suppress(OSError):
                        sock.close()

    def restore(self) -> None:
        with self._lock:
            self._cut = False
            held = [client for client, upstream in self._pairs if upstream is None]
            self._pairs = [pair for pair in self._pairs if pair[1] is not None]
        for client in held:  # connects made during the outage fail now rather than hang forever
            with contextlib.suppress(OSError):
                client.close()

    def close(self) -> None:
        self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()
