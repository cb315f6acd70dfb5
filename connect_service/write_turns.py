"""The writers of one SQLite file take turns instead of sleeping in SQLite's busy handler.

SQLite lets one connection write at a time. A connection that finds the write lock
taken waits in SQLite's busy handler, which sleeps 1, 2, 5, 10 … ms between tries
(Python's ``sqlite3`` module offers no other handler), while a hot single-row write
holds the lock for some 30–50 µs. Under load, the request threads of the gunicorn
workers woke late from those sleeps, with the CPUs partly idle.

:class:`WriteTurns` queues writers instead: the threads of a process on a lock, the
processes on ``flock`` of a file beside the database (``<database>-writers``). Both
wake the next writer as soon as the turn is given back. A turn is taken by
``db.write_transaction`` (the outermost one, for its whole length) and by the hot
single-statement writes made outside a transaction (``db.write_turn``: a rate-limit
hit, the audit row of a secrets read).

Nothing takes a turn inside a transaction. A transaction that did not begin with one
(``database.atomic()``) may hold SQLite's write lock while a writer holding the turn
waits for that lock; if the transaction then waited for the turn, neither could go
on until the busy timeout. Such transactions, and writes outside ``write_turn``, keep
SQLite's own waiting; a turn's holder waits for them there.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from typing import Any, ContextManager

#: guards a process's first use of a :class:`WriteTurns` (made anew in a forked child: see below)
_SETUP = threading.Lock()


def _new_setup_lock() -> None:
    global _SETUP
    _SETUP = threading.Lock()


os.register_at_fork(after_in_child=_new_setup_lock)


class WriteTurns:
    """A context manager: this thread's turn to write to the SQLite file at ``database_path``."""

    def __init__(self, database_path: str):
        self.path = f"{database_path}-writers"
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._fd: int | None = None

    def __del__(self) -> None:  # a database dropped (tests open many) takes its file descriptor along
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)

    def _own(self) -> tuple[threading.Lock, int]:
        """This process's lock and file descriptor: a forked child opens its own, since ``flock``
        belongs to the open file, which a child shares with its parent."""
        pid = os.getpid()
        if self._pid != pid:
            with _SETUP:
                if self._pid != pid:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    if self._fd is not None:  # the parent's: closing this copy leaves the parent's lock alone
                        os.close(self._fd)
                    self._lock, self._fd, self._pid = threading.Lock(), fd, pid
        return self._lock, self._fd

    def __enter__(self) -> None:
        lock, fd = self._own()
        lock.acquire()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            lock.release()
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()


def turn_of(db: Any) -> ContextManager:
    """``db``'s write turn for a write outside a transaction; a no-op inside one, or for a database
    without turns (PostgreSQL, which locks rows, not the whole database)."""
    turns = getattr(db, "write_turns", None)
    if turns is None or db.in_transaction():
        return contextlib.nullcontext()
    return turns
