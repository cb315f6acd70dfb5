"""The webhook outbox: events written in the same transaction as the change they report.

A domain function that changes a connection calls :func:`emit_connection`
inside its own transaction. The event row and one pending delivery per
matching endpoint are inserted there, so a change that rolls back emits
nothing and a committed change is never lost: ``connect-service
deliver-webhooks`` (:mod:`connect_service.webhook_delivery`) sends them later.
The payload is the connection's public view, never a secret.
"""
from __future__ import annotations

from typing import Any

from .db import compiled_sql, database, fetch_columns
from .models import Connection, WebhookDelivery, WebhookEndpoint, WebhookEvent, utcnow
from .timestamps import iso

CONNECTION_EVENTS = ("connection.created", "connection.updated", "connection.refreshed",
                     "connection.refresh_failed", "connection.error", "connection.deleted")
REQUIREMENT_COMPLETED = "requirement.completed"
#: every event type an endpoint may subscribe to
EVENT_TYPES = (*CONNECTION_EVENTS, REQUIREMENT_COMPLETED)


def connection_data(conn: Connection) -> dict[str, Any]:
    """A connection as webhook payloads show it: identity and state, no settings, no secret."""
    return {"id": conn.id, "app_id": conn.app_id, "customer_id": conn.customer_id,
            "requirement_id": conn.requirement_id, "connector_name": conn.connector_name,
            "status": conn.status, "display_name": conn.display_name, "error": conn.status_reason}


def _subscribers(org_id: str, app_id: str | None, event_type: str) -> list[WebhookEndpoint]:
    """The enabled endpoints of the org (and of the app, if any) subscribed to ``event_type``.

    The SQL is built once per process: refresh-due looks endpoints up for every batch it writes.
    """
    fields = (WebhookEndpoint.id, WebhookEndpoint.events)
    if app_id:
        sql = compiled_sql("outbox.subscribers_app", lambda: WebhookEndpoint.select(*fields).where(
            WebhookEndpoint.org == "org", WebhookEndpoint.disabled_at.is_null(),
            WebhookEndpoint.app.is_null() | (WebhookEndpoint.app == "app")))
        params: tuple = (org_id, app_id)
    else:
        sql = compiled_sql("outbox.subscribers_org", lambda: WebhookEndpoint.select(*fields).where(
            WebhookEndpoint.org == "org", WebhookEndpoint.disabled_at.is_null(), WebhookEndpoint.app.is_null()))
        params = (org_id,)
    return [ep for ep in fetch_columns(sql, params, WebhookEndpoint, fields)
            if not ep.events or event_type in ep.events]


def emit(org_id: str, app_id: str | None, event_type: str, data: dict[str, Any], *,
         dedupe_key: str | None = None) -> WebhookEvent | None:
    """Insert an event and its pending deliveries; call it inside the transaction of the change.

    With ``dedupe_key`` the event is written at most once ever (None when it
    already was). Runs in a savepoint of the caller's transaction (or a
    transaction of its own when there is none).
    """
    now = utcnow()
    with database.atomic():
        if dedupe_key is not None:
            if WebhookEvent.select().where(WebhookEvent.dedupe_key == dedupe_key).exists():
                return None
            event = WebhookEvent(org=org_id, app_id=app_id, type=event_type, dedupe_key=dedupe_key, created_at=now,
                                 payload={"type": event_type, "timestamp": iso(now), "data": data})
            inserted = WebhookEvent.insert(event.__data__).on_conflict_ignore().execute()
            if not inserted or not WebhookEvent.select().where(WebhookEvent.id == event.id).exists():
                return None  # a concurrent writer recorded it first
        else:
            event = WebhookEvent.create(org=org_id, app_id=app_id, type=event_type, dedupe_key=None, created_at=now,
                                        payload={"type": event_type, "timestamp": iso(now), "data": data})
        rows = [{"id": WebhookDelivery.id.default(), "event": event.id, "endpoint": ep.id, "status": "pending",
                 "attempts": 0, "next_attempt_at": now, "created_at": now, "updated_at": now}
                for ep in _subscribers(org_id, app_id, event_type)]
        if rows:
            WebhookDelivery.insert_many(rows).execute()
    return event


def emit_connection(conn: Connection, event_type: str) -> None:
    """Emit ``event_type`` for ``conn``; a connection that is now active also completes its requirement once."""
    emit(conn.org_id, conn.app_id, event_type, connection_data(conn))
    if event_type in ("connection.created", "connection.updated", "connection.refreshed") \
            and conn.status == "active" and conn.requirement_id:
        emit_requirement_completed(conn, conn.requirement_id)


def _insert(model: type, rows: list[dict[str, Any]]) -> None:
    """One multi-row ``INSERT`` of ``rows`` (dicts keyed by field name, all with the same keys).

    The SQL text is put together here rather than by peewee's ``insert_many``, whose
    building cost (per value) showed in refresh-due's profile; values still go through each
    field's ``db_value`` and as parameters.
    """
    if not rows:
        return
    fields = [model._meta.fields[name] for name in rows[0]]
    param = database.obj.param
    one = "(" + ", ".join([param] * len(fields)) + ")"
    columns = ", ".join(f'"{f.column_name}"' for f in fields)
    params = [f.db_value(row[f.name]) for row in rows for f in fields]
    database.execute_sql(f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES '
                         + ", ".join([one] * len(rows)), params)


def emit_connections(conns: list[Connection], event_type: str) -> None:
    """:func:`emit_connection` for many connections at once, in few statements (refresh-due's batches).

    The same rows as one :func:`emit_connection` per connection: an event each, a pending delivery
    per matching endpoint, and ``requirement.completed`` where one was never written. Endpoints are
    looked up once per (org, app); events and deliveries are inserted with one statement each.
    Call it inside the transaction of the change.
    """
    if not conns:
        return
    now = utcnow()
    subscribers: dict[tuple[str, str | None], list[WebhookEndpoint]] = {}
    events, deliveries = [], []
    for conn in conns:
        key = (conn.org_id, conn.app_id)
        if key not in subscribers:
            subscribers[key] = _subscribers(conn.org_id, conn.app_id, event_type)
        event_id = WebhookEvent.id.default()
        events.append({"id": event_id, "org": conn.org_id, "app_id": conn.app_id, "type": event_type,
                       "dedupe_key": None, "created_at": now,
                       "payload": {"type": event_type, "timestamp": iso(now), "data": connection_data(conn)}})
        deliveries.extend({"id": WebhookDelivery.id.default(), "event": event_id, "endpoint": ep.id,
                           "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
                           "updated_at": now} for ep in subscribers[key])
    with database.atomic():
        _insert(WebhookEvent, events)
        _insert(WebhookDelivery, deliveries)
        if event_type not in ("connection.created", "connection.updated", "connection.refreshed"):
            return
        completing = {f"{REQUIREMENT_COMPLETED}:{c.app_id}:{c.customer_id}:{c.requirement_id}": c for c in conns
                      if c.status == "active" and c.requirement_id and c.customer_id and c.app_id}
        if not completing:
            return
        # one look for the keys already written (the usual case); emit() checks again for the rest
        written = {row.dedupe_key for row in WebhookEvent.select(WebhookEvent.dedupe_key)
                   .where(WebhookEvent.dedupe_key.in_(list(completing)))}
        for key, conn in completing.items():
            if key not in written:
                emit_requirement_completed(conn, conn.requirement_id)


def emit_requirement_completed(conn: Connection, requirement_id: str) -> None:
    """``requirement.completed`` for the requirement ``conn`` fulfils, the first time only (per app and user).

    A linked action-connector account fulfils requirements it names by key, not by id, so its
    caller passes the requirement id; other connections carry theirs.
    """
    if not (conn.customer_id and conn.app_id):
        return
    emit(conn.org_id, conn.app_id, REQUIREMENT_COMPLETED,
         {"app_id": conn.app_id, "customer_id": conn.customer_id, "requirement_id": requirement_id,
          "connection_id": conn.id},
         dedupe_key=f"{REQUIREMENT_COMPLETED}:{conn.app_id}:{conn.customer_id}:{requirement_id}")
