"""Connection rows: encrypted settings, the public (seed 002) view, state changes.

Everything that reads or writes a connection's secrets goes through here so
the associated data (table, column, row id) is always the same. This module
sits below :mod:`connect_service.oauth` (which writes tokens through it);
what needs a provider (import, refreshing reads, revocation) is in
:mod:`connect_service.lifecycle`.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

from . import audit, errors, outbox
from .db import compiled_sql, fetch_models, write_transaction
from .extensions import keyring, registry
from .models import Connection, utcnow
from .timestamps import iso

log = logging.getLogger(__name__)

TABLE = "connection"
COLUMN = "settings"
#: keys of an OAuth credentials object that are secret
OAUTH_SECRET_KEYS = ("access_token", "refresh_token", "id_token", "raw")


def read_settings(conn: Connection) -> dict[str, Any]:
    """Decrypted settings of a connection (``{}`` when none are stored)."""
    if not conn.settings_encrypted:
        return {}
    return keyring().decrypt_json(conn.settings_encrypted, TABLE, COLUMN, conn.id)


def seal_settings(conn: Connection, settings: dict[str, Any]) -> str:
    """Ciphertext for ``settings`` bound to this connection row (assign, then save)."""
    return keyring().encrypt_json(settings, TABLE, COLUMN, conn.id)


def public_settings(conn: Connection, settings: dict[str, Any]) -> dict[str, Any]:
    """Settings with every secret removed: what a read without ``include_secrets`` shows."""
    out = copy.deepcopy(settings)
    oauth = out.get("oauth")
    if isinstance(oauth, dict) and isinstance(oauth.get("credentials"), dict):
        for key in OAUTH_SECRET_KEYS:
            oauth["credentials"].pop(key, None)
        return out
    cls = registry().get(conn.type)
    secret = set(cls.secret_fields()) if cls else set(out)
    for key in list(out):
        if key in secret:
            out.pop(key)
    return out


def to_public(conn: Connection, include_secrets: bool = False) -> dict[str, Any]:
    """The seed 002 response shape (plus ``status``, ``app_id``, ``type``, ``requirement_id``)."""
    settings = read_settings(conn)
    return {
        "id": conn.id,
        "customer_id": conn.customer_id,
        "connector_config_id": conn.credential_id,
        "integration_id": conn.integration_id,
        "created_at": iso(conn.created_at),
        "updated_at": iso(conn.updated_at),
        "display_name": conn.display_name,
        "disabled": conn.disabled,
        "metadata": conn.metadata or {},
        "connector_name": conn.connector_name,
        "settings": settings if include_secrets else public_settings(conn, settings),
        "status": conn.status,
        "status_reason": conn.status_reason,
        "app_id": conn.app_id,
        "type": conn.type,
        "requirement_id": conn.requirement_id,
        "last_fetched_at": iso(conn.last_fetched_at),
    }


def hook_view(conn: Connection) -> dict[str, Any]:
    """What lifecycle hooks receive: the public view without secrets."""
    return to_public(conn, include_secrets=False)


def notify_activated(conn: Connection) -> None:
    """Tell plugins (``connection_activated``) that ``conn`` now holds working credentials."""
    registry().notify("connection_activated", connection=hook_view(conn))


def notify_failed(conn: Connection, reason: str) -> None:
    """Tell plugins (``connection_failed``) why ``conn`` stopped working; ``reason`` holds no secrets."""
    registry().notify("connection_failed", connection=hook_view(conn), reason=reason)


def mark_error(conn: Connection, reason: str, *, generation: int | None = None,
               event: str = "connection.error") -> bool:
    """Move ``conn`` to ``error`` with ``reason`` and fire ``connection_failed``; True when it did.

    With ``generation`` (the ``refresh_generation`` the caller's decision was
    based on) the update is conditional: when a refresh or re-authorization
    stored a token meanwhile, nothing changes, no hook fires and the answer
    is False. The webhook ``event`` (``connection.error``, or
    ``connection.refresh_failed`` for a refused refresh) is written with the change.
    """
    query = Connection.update(status="error", status_reason=reason[:500], updated_at=utcnow()).where(
        Connection.id == conn.id)
    if generation is not None:
        query = query.where(Connection.refresh_generation == generation)
    with write_transaction():
        if query.execute() != 1:
            return False
        conn.status, conn.status_reason = "error", reason[:500]
        outbox.emit_connection(conn, event)
    notify_failed(conn, reason)
    return True


def connection_view(conn: Connection, include_secrets: bool = False) -> dict[str, Any]:
    """What ``/v1/connections`` answers: ``settings.oauth.last_fetched_at`` mirrors the column.

    Mirrored rather than stored so a secrets read need not re-encrypt the settings.
    """
    out = to_public(conn, include_secrets=include_secrets)
    oauth = out["settings"].get("oauth") if isinstance(out["settings"], dict) else None
    if isinstance(oauth, dict):
        oauth["last_fetched_at"] = iso(conn.last_fetched_at)
    return out


def get_org_connection(org_id: str, conn_id: str) -> Connection:
    """A connection of the org, else 404 (another org's connection does not exist for the caller)."""
    sql = compiled_sql("connections.of_org", lambda: Connection.select().where(
        Connection.id == "", Connection.org == ""))
    found = fetch_models(sql, (conn_id, org_id), Connection)
    if not found:
        raise errors.NotFound()
    return found[0][0]


def org_connections(org_id: str, filters: dict[str, Any]):
    """The org's connections matching ``customer_id``/``connector_name``/``type``/``status``/``app_id``."""
    query = Connection.select().where(Connection.org == org_id)
    for name in ("customer_id", "connector_name", "type", "status"):
        if filters.get(name) is not None:
            query = query.where(getattr(Connection, name) == filters[name])
    if filters.get("app_id") is not None:
        query = query.where(Connection.app == filters["app_id"])
    return query


def update_connection(conn: Connection, data: dict[str, Any]) -> Connection:
    """Shallow-merge ``metadata``, set ``display_name``/``disabled``; never touches the tokens.

    Only these columns are written, so a refresh storing a token at the same
    moment is never overwritten with the settings this request read.
    """
    with write_transaction():
        current = Connection.get_by_id(conn.id)
        changes = {Connection.updated_at: utcnow()}
        if "metadata" in data:
            changes[Connection.metadata] = {**(current.metadata or {}), **data["metadata"]}
        if "display_name" in data:
            changes[Connection.display_name] = data["display_name"]
        if "disabled" in data:
            changes[Connection.disabled] = data["disabled"]
        Connection.update(changes).where(Connection.id == conn.id).execute()
        audit.record("connection.updated", org_id=conn.org_id, target_type="connection", target_id=conn.id,
                     app_id=conn.app_id)
    return Connection.get_by_id(conn.id)
