"""SQLite's hot writers take turns (connect_service/write_turns.py): across processes, and never
with a transaction waiting for a turn that waits for the transaction's lock."""
import fcntl
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from connect_service import audit, migrations, ratelimit
from connect_service.db import close_pool, database, open_database, write_transaction
from connect_service.models import RateLimitHit


@pytest.fixture
def sqlite_file(tmp_path):
    path = str(tmp_path / "turns.db")
    db = open_database(f"sqlite:///{path}")
    database.initialize(db)
    migrations.migrate()
    yield path, db
    close_pool()
    database.initialize(None)


def buckets_in_write_order() -> list[str]:
    return [row[0] for row in database.execute_sql('SELECT "bucket" FROM "rate_limit_hit" ORDER BY rowid')]


def test_a_hot_write_waits_for_the_turn_another_process_holds(sqlite_file):
    path, db = sqlite_file
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, sys, time
        from connect_service.write_turns import WriteTurns
        turns = WriteTurns({path!r})
        with turns:
            print("holding", flush=True)
            time.sleep(0.5)
            conn = sqlite3.connect({path!r}, isolation_level=None)
            conn.execute('INSERT INTO "rate_limit_hit" ("bucket", "window", "count") VALUES (?, 1, 1)', ("holder",))
            conn.close()
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        ratelimit.hit("waiter", 10)  # SQLite's write lock is free: only the turn keeps this write waiting
    finally:
        assert holder.wait(timeout=30) == 0
    assert buckets_in_write_order() == ["holder", "waiter"]
    assert os.path.exists(f"{path}-writers")


def test_a_write_transaction_holds_the_turn_for_its_whole_length(sqlite_file):
    path, db = sqlite_file
    other = os.open(f"{path}-writers", os.O_RDWR)
    try:
        with write_transaction():
            RateLimitHit.insert(bucket="transaction", window=1, count=1).execute()
            with pytest.raises(BlockingIOError):  # another process would wait here
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with write_transaction():  # nested: a savepoint, no second turn to wait for
                audit.record("keys.rotated", org_id=None)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # given back with the commit
    finally:
        os.close(other)


def test_a_write_inside_a_transaction_does_not_wait_for_a_turn(sqlite_file):
    """A transaction begun without a turn holds SQLite's write lock, and the other thread holds the turn,
    waiting for that lock: the transaction's audit row goes ahead, then the other thread's write."""
    path, db = sqlite_file
    failures = []

    def hit():
        try:
            ratelimit.hit("other thread", 10)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            database.close()

    with database.atomic():
        RateLimitHit.insert(bucket="transaction", window=1, count=1).execute()  # now holds SQLite's lock
        other = threading.Thread(target=hit)
        other.start()
        deadline = time.monotonic() + 10
        while not db.write_turns._lock.locked():  # the other thread has the turn (and waits for SQLite's lock)
            assert time.monotonic() < deadline, "the other thread never took its turn"
            time.sleep(0.01)
        audit.record("keys.rotated", org_id=None)
    other.join(timeout=30)
    assert not other.is_alive() and failures == []
    assert buckets_in_write_order() == ["transaction", "other thread"]
