"""Connection rows: encrypted settings, the public (seed 002) view, state changes.

Everything that reads or writes a connection's secrets goes through here so
the associated data (table, column, row id) is always the same.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

from flask import current_app

from .models import Connection, utcnow

log = logging.getLogger(__name__)

TABLE = "connection"
COLUMN = "settings"
#: keys of an OAuth credentials object that are secret
OAUTH_SECRET_KEYS = ("access_token", "refresh_token", "id_token", "raw")


def _keyring():
    return current_app.extensions["connect_keyring"]


def _registry():
    return current_app.extensions["connect_registry"]


def read_settings(conn: Connection) -> dict[str, Any]:
    """Decrypted settings of a connection (``{}`` when none are stored)."""
    if not conn.settings_encrypted:
        return {}
    return _keyring().decrypt_json(conn.settings_encrypted, TABLE, COLUMN, conn.id)


def seal_settings(conn: Connection, settings: dict[str, Any]) -> str:
    """Ciphertext for ``settings`` bound to this connection row (assign, then save)."""
    return _keyring().encrypt_json(settings, TABLE, COLUMN, conn.id)


def public_settings(conn: Connection, settings: dict[str, Any]) -> dict[str, Any]:
    """Settings with every secret removed: what a read without ``include_secrets`` shows."""
    out = copy.deepcopy(settings)
    oauth = out.get("oauth")
    if isinstance(oauth, dict) and isinstance(oauth.get("credentials"), dict):
        for key in OAUTH_SECRET_KEYS:
            oauth["credentials"].pop(key, None)
        return out
    cls = _registry().get(conn.type)
    secret = set(cls.secret_fields()) if cls else set(out)
    for key in list(out):
        if key in secret:
            out.pop(key)
    return out


def to_public(conn: Connection, include_secrets: bool = False) -> dict[str, Any]:
    """The seed 002 response shape (plus ``status``, ``app_id``, ``type``, ``requirement_id``)."""
    from .timestamps import iso

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
    _registry().notify("connection_activated", connection=hook_view(conn))


def notify_failed(conn: Connection, reason: str) -> None:
    _registry().notify("connection_failed", connection=hook_view(conn), reason=reason)


def mark_error(conn: Connection, reason: str, *, generation: int | None = None) -> bool:
    """Move ``conn`` to ``error`` with ``reason`` and fire ``connection_failed``; True when it did.

    With ``generation`` (the ``refresh_generation`` the caller's decision was
    based on) the update is conditional: when a refresh or re-authorization
    stored a token meanwhile, nothing changes, no hook fires and the answer
    is False.
    """
    query = Connection.update(status="error", status_reason=reason[:500], updated_at=utcnow()).where(
        Connection.id == conn.id)
    if generation is not None:
        query = query.where(Connection.refresh_generation == generation)
    if query.execute() != 1:
        return False
    conn.status, conn.status_reason = "error", reason[:500]
    notify_failed(conn, reason)
    return True


def revoke_at_provider(conn: Connection) -> bool:
    """Best effort RFC 7009 revocation of an OAuth connection's tokens; True when the provider confirmed.

    A provider that is down or refuses does not block the deletion (logged, no secrets).
    """
    from . import oauth
    from .connection_types import ProviderError
    from .http import OutboundError
    from .models import Credential

    from . import accounts  # it records accounts through this module: a top-level import is a cycle

    cls = _registry().get(conn.type)
    if cls is not None and cls.auth == "action_account":  # e.g. delete the linked platform account
        return accounts.revoke_linked_account(conn)
    if conn.credential_id is None:
        return False
    settings = read_settings(conn)
    if not isinstance(settings.get("oauth"), dict):
        return False
    credential = Credential.get_or_none(Credential.id == conn.credential_id)
    if credential is None:
        return False
    try:
        return bool(oauth.revoke_tokens(credential, settings))
    except (OutboundError, ProviderError) as exc:
        log.warning("token revocation failed; deleting anyway",
                    extra={"fields": {"connection_id": conn.id, "error": type(exc).__name__}})
        return False


def delete_connection(conn: Connection) -> None:
    """Revoke at the provider where it can (best effort), delete the row, then notify ``connection_revoked``."""
    revoke_at_provider(conn)
    snapshot = hook_view(conn)
    Connection.delete().where(Connection.id == conn.id).execute()
    _registry().notify("connection_revoked", connection=snapshot)
