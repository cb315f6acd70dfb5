"""Rate-limit windows skip PostgreSQL's write-ahead log (UNLOGGED): counting a hit need not wait for a disk flush.

An unlogged table is emptied after a database crash, which for one-minute counters means at
most one window counted afresh; it is also not copied to streaming replicas (the counters only
matter on the primary that takes the writes). SQLite has no such setting: nothing changes there.
"""
from ..db import is_postgres


def up(migrator, db):
    if is_postgres():
        db.execute_sql('ALTER TABLE "rate_limit_hit" SET UNLOGGED')
