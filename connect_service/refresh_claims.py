"""refresh-due's leases for many connections at once: candidates, the batch claim, the release.

The rules are :func:`connect_service.refresh.try_claim`'s, for a batch: a lease is taken only
while nobody holds a live one, only while the connection is active and enabled, and only at the
``refresh_generation`` the caller saw (so a connection refreshed meanwhile is not claimed again);
lease times come from the database clock.
"""
from __future__ import annotations

import datetime

import peewee

from .db import compiled_sql, db_now, fetch_models, is_postgres, write_transaction
from .extensions import settings
from .models import Connection


def due_candidates(due_before: datetime.datetime, now: datetime.datetime,
                    after: tuple[datetime.datetime, str] | None, limit: int) -> list[Connection]:
    """Active, enabled connections expiring before ``due_before`` whose lease is free at ``now``,
    keyset-paged on (expires_at, id)."""
    query = (Connection.select(Connection.id, Connection.expires_at, Connection.refresh_generation)
             .where(Connection.expires_at.is_null(False), Connection.expires_at <= due_before,
                    Connection.status == "active", Connection.disabled == False,  # noqa: E712
                    Connection.refresh_lease_until.is_null() | (Connection.refresh_lease_until < now)))
    if after is not None:
        query = query.where((Connection.expires_at > after[0])
                            | ((Connection.expires_at == after[0]) & (Connection.id > after[1])))
    return list(query.order_by(Connection.expires_at, Connection.id).limit(limit))


def claim_batch(seen: dict[str, int], owner: str) -> list[Connection]:
    """Claim the leases of the connections ``{id: refresh_generation seen}`` that are still free.

    One write transaction: a conditional ``UPDATE`` per distinct generation (each row is
    claimed only at the generation the caller saw, only while active, enabled and not leased
    by anyone else), then the claimed rows read back whole. Returns the claimed rows, soonest
    expiring first.
    """
    lease = datetime.timedelta(seconds=settings()["refresh_lease_seconds"])
    by_generation: dict[int, list[str]] = {}
    for conn_id, generation in seen.items():
        by_generation.setdefault(generation, []).append(conn_id)
    with write_transaction():
        now = db_now()
        for generation, ids in by_generation.items():
            (Connection.update(refresh_lease_until=now + lease, refresh_lease_owner=owner)
             .where(Connection.id.in_(ids), Connection.refresh_generation == generation,
                    Connection.status == "active", Connection.disabled == False,  # noqa: E712
                    Connection.refresh_lease_until.is_null() | (Connection.refresh_lease_until < now))
             .execute())
        claimed = _leased_rows(list(seen), owner)
    mine = [c for c in claimed if c.refresh_generation == seen[c.id]]
    return sorted(mine, key=lambda c: (c.expires_at or datetime.datetime.min, c.id))  # soonest expiring first


def _leased_rows(ids: list[str], owner: str) -> list[Connection]:
    """The rows of ``ids`` whose lease ``owner`` holds, whole (PostgreSQL: SQL built once per process)."""
    if not is_postgres():
        return list(Connection.select().where(Connection.id.in_(ids), Connection.refresh_lease_owner == owner))
    sql = compiled_sql("refresh_due.leased_rows", lambda: Connection.select().where(
        Connection.id == peewee.SQL("ANY(%s)"), Connection.refresh_lease_owner == "owner"))
    return [row for (row,) in fetch_models(sql, (ids, owner), Connection)]


def release_many(conn_ids: list[str], owner: str) -> None:
    """Give leases back without a new token (only those ``owner`` still holds)."""
    if conn_ids:
        (Connection.update(refresh_lease_until=None, refresh_lease_owner=None)
         .where(Connection.id.in_(conn_ids), Connection.refresh_lease_owner == owner).execute())
