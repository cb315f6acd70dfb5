"""The audit log: who read a secret or changed a credential, connection, key or webhook endpoint.

:func:`record` is called inside the transaction of the change it records, so
a change that rolls back (or a read that fails) leaves no row. An event names
the actor, the action and the target, never a secret. ``connect-service
prune`` deletes events older than ``audit_retention_days``.
"""
from __future__ import annotations

import datetime
from typing import Any

from flask import g

from . import errors
from .db import as_loaded, compiled_sql, database, execute_compiled, write_turn
from .logs import current_request
from .models import AuditEvent, new_id, utcnow
from .timestamps import iso

#: the actions recorded (``GET /v1/audit-events?action=``)
ACTIONS = (
    "connection.secrets_read", "connection.created", "connection.updated", "connection.deleted",
    "credential.created", "credential.updated", "credential.deleted",
    "access_key.created", "access_key.revoked",
    "keys.rotated", "token.revoked",
    "webhook_endpoint.created", "webhook_endpoint.deleted", "webhook_endpoint.secret_rotated",
    "proxy.request",
)


def _actor(in_request: bool) -> tuple[str, str | None]:
    if in_request:
        key = g.get("access_key")
        if key is not None:
            return "access_key", key.id
        identity = g.get("connect")
        if identity is not None:
            return "connect_token", identity.user_id
    return "system", None


def record(action: str, *, org_id: str | None, target_type: str | None = None, target_id: str | None = None,
           app_id: str | None = None, details: dict[str, Any] | None = None) -> AuditEvent:
    """Write one audit event; call it inside the transaction of the change it records.

    The actor, client address and request id come from the current request
    (``system`` outside one). ``details`` must never hold a secret.
    """
    facts = current_request()
    actor_type, actor_id = _actor(facts is not None)
    ip, request_id = facts or (None, None)
    row = {"id": new_id("aud"), "org": org_id, "at": utcnow(), "actor_type": actor_type, "actor_id": actor_id,
           "action": action, "target_type": target_type, "target_id": target_id, "app_id": app_id, "ip": ip,
           "request_id": request_id, "details": details or {}}
    # one INSERT whose SQL peewee builds once per process (a secrets read writes one on every request), its
    # values converted by the fields themselves; the instance is built as loaded, without a default to compute
    fields = AuditEvent._meta.sorted_fields
    sql = compiled_sql("audit.record", lambda: AuditEvent.insert({f: "" for f in fields}))
    params = tuple(f.db_value(row[f.name]) for f in fields)
    with write_turn():
        execute_compiled(sql, params).close()
    return as_loaded(AuditEvent, row)


def event_view(event: AuditEvent) -> dict[str, Any]:
    """``GET /v1/audit-events`` item."""
    return {"id": event.id, "at": iso(event.at), "actor": {"type": event.actor_type, "id": event.actor_id},
            "action": event.action, "target": {"type": event.target_type, "id": event.target_id},
            "app_id": event.app_id, "ip": event.ip, "request_id": event.request_id, "details": event.details or {}}


#: the cursor: microseconds since the epoch of the last event's ``at``, a dot, its id (every string of the
#: documented pattern, up to 16 digits, decodes)
EPOCH = datetime.datetime(1970, 1, 1)


def _cursor(event: AuditEvent) -> str:
    delta = event.at.replace(tzinfo=None) - EPOCH
    return f"{(delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds}.{event.id}"


def list_events(org_id: str, filters: dict[str, Any]) -> tuple[list[AuditEvent], str | None]:
    """The org's events (and system-wide ones such as key rotations), newest first, keyset-paged on (at, id).

    ``filters``: ``action``, ``target_id``, ``actor_id``, ``since``, ``until`` (datetimes), ``cursor``, ``limit``.
    """
    query = AuditEvent.select().where(AuditEvent.org.is_null() | (AuditEvent.org == org_id))
    for name in ("action", "target_id", "actor_id"):
        if filters.get(name):
            query = query.where(getattr(AuditEvent, name) == filters[name])
    if filters.get("since"):
        query = query.where(AuditEvent.at >= _naive(filters["since"]))
    if filters.get("until"):
        query = query.where(AuditEvent.at < _naive(filters["until"]))
    if filters.get("cursor"):
        micros, _, event_id = filters["cursor"].partition(".")
        try:
            at = EPOCH + datetime.timedelta(microseconds=int(micros))
        except (ValueError, OverflowError):
            raise errors.BadRequest({"cursor": "is not a valid cursor"}) from None
        query = query.where((AuditEvent.at < at) | ((AuditEvent.at == at) & (AuditEvent.id < event_id)))
    limit = filters.get("limit") or 50
    rows = list(query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit + 1))
    return rows[:limit], (_cursor(rows[limit - 1]) if len(rows) > limit else None)


def _naive(value: datetime.datetime) -> datetime.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def prune(retention_days: int, batch_size: int = 1000) -> int:
    """Delete events older than ``retention_days`` in bounded batches; return how many."""
    cutoff = utcnow() - datetime.timedelta(days=retention_days)
    total = 0
    while True:
        doomed = AuditEvent.select(AuditEvent.id).where(AuditEvent.at < cutoff).limit(batch_size)
        with database.atomic():
            deleted = AuditEvent.delete().where(AuditEvent.id.in_(doomed)).execute()
        total += deleted
        if deleted < batch_size:
            return total
