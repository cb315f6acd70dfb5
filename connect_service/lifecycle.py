"""A connection's life beyond its row: import, reads that refresh, revocation and deletion.

These steps reach a provider (through :mod:`connect_service.oauth` and
:mod:`connect_service.refresh`), so they sit above both; :mod:`.connections`
below them only stores rows and their encrypted settings.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from . import accounts, audit, errors, outbox, refresh
from .connection_types import ConnectionType
from .oauth2_provider import ProviderError
from .connections import connection_view, hook_view, notify_activated, read_settings, seal_settings
from .db import write_transaction
from .extensions import registry
from .fields import NonBlank
from .http import OutboundError
from .models import App, Connection, Credential, utcnow
from .oauth import MAX_TOKEN_LIFETIME_SECONDS, credential_available_to, revoke_tokens, store_tokens
from .oauth.errors import NotRefreshable, ProviderUnavailable, RefreshRejected

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- import (seed 002)


class OAuthCredentialsSchema(ma.Schema):
    """Imported OAuth tokens (seed 002's ``settings.oauth.credentials``)."""

    class Meta:
        unknown = ma.EXCLUDE

    access_token = NonBlank(required=True)
    refresh_token = fields.String(allow_none=True)
    expires_in = fields.Integer(allow_none=True, validate=validate.Range(
        min=0, max=MAX_TOKEN_LIFETIME_SECONDS, error="must be between 0 and {max} seconds (10 years)"))
    expires_at = fields.DateTime(allow_none=True, metadata={
        "description": "ISO 8601; at most 10 years ahead (a past time means: refresh at the next read)"})
    scope = fields.String(allow_none=True)
    token_type = fields.String(allow_none=True)
    id_token = fields.String(allow_none=True)
    client_id = fields.String(allow_none=True)
    raw = fields.Dict(allow_none=True)


class OAuthImportSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    credentials = fields.Nested(OAuthCredentialsSchema, required=True)
    metadata = fields.Dict(allow_none=True)

    @ma.validates_schema(skip_on_field_errors=True)
    def _expiry_in_range(self, data, **kwargs):
        given = (data.get("credentials") or {}).get("expires_at")
        if given is None:
            return
        try:
            naive = given.astimezone(datetime.timezone.utc).replace(tzinfo=None) if given.tzinfo else given
        except (OverflowError, ValueError):
            naive = None
        latest = utcnow() + datetime.timedelta(seconds=MAX_TOKEN_LIFETIME_SECONDS)
        if naive is None or naive > latest:
            message = "must be a valid time at most 10 years from now"
            raise ma.ValidationError({"credentials": {"expires_at": [message]}})


class OAuthSettingsSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    oauth = fields.Nested(OAuthImportSchema, required=True)


def _resolve_connector(connector_name: str) -> tuple[type[ConnectionType], bool]:
    """(connection type class, is_oauth) for a connector name, else 400."""
    reg = registry()
    cls = reg.get(connector_name)
    if cls is not None and cls.auth == "credentials":
        return cls, False
    cls = reg.by_connector(connector_name)
    if cls is not None and cls.auth == "oauth2":
        return cls, True
    if cls is not None:
        raise errors.BadRequest({"data.connector_name": "accounts of this connector are linked through the "
                                                        "connect flow, not imported"})
    raise errors.BadRequest({"data.connector_name": "is not a registered connector or credentials type"})


def _load_settings(loader, raw: Any) -> dict[str, Any]:
    try:
        return loader(raw)
    except ma.ValidationError as exc:
        raise errors.BadRequest(errors.flatten_messages(exc.messages, "data.settings")) from None


def import_connection(org_id: str, data: dict[str, Any]) -> Connection:
    """``POST /v1/connections``: store a connection whose credentials the app already holds (seed 002).

    OAuth tokens go through :func:`connect_service.oauth.store_tokens`, like
    every other token; a credentials type's config through its own schema.
    The credential must be the org's and, with ``app_id``, available to that app.
    """
    credential = Credential.get_or_none(Credential.id == data["connector_config_id"], Credential.org == org_id)
    if credential is None:
        raise errors.BadRequest({"connector_config_id": "is not a credential of this organization"})
    app = None
    if data.get("app_id"):
        app = App.get_or_none(App.id == data["app_id"], App.org == org_id)
        if app is None:
            raise errors.BadRequest({"app_id": "is not an app of this organization"})
        if not credential_available_to(credential, app):
            raise errors.BadRequest({"connector_config_id": "is not available to this app (see the "
                                                            "credential's read_access)"})
    connector_name = data["data"]["connector_name"]
    cls, is_oauth = _resolve_connector(connector_name)
    conn = Connection(org=org_id, app=app, customer_id=data.get("customer_id"), credential=credential,
                      metadata=data.get("metadata") or {}, display_name=data.get("display_name"),
                      type=cls.name, integration_id=cls.name)
    if is_oauth:
        if credential.connector_name != connector_name:
            raise errors.BadRequest({"connector_config_id": f"serves {credential.connector_name!r}, "
                                                            f"not {connector_name!r}"})
        loaded = _load_settings(OAuthSettingsSchema().load, data["data"]["settings"])
        conn.connector_name = connector_name
        return store_tokens(conn, credential, loaded["oauth"], create=True)
    config = _load_settings(cls.load_config, data["data"]["settings"])
    now = utcnow()
    conn.connector_name = cls.connector_name
    conn.status, conn.expires_at = "active", None
    conn.created_at = conn.updated_at = now
    conn.settings_encrypted = seal_settings(conn, config)
    with write_transaction():
        conn.save(force_insert=True)
        outbox.emit_connection(conn, "connection.created")
        audit.record("connection.created", org_id=conn.org_id, target_type="connection", target_id=conn.id,
                     app_id=conn.app_id)
    notify_activated(conn)
    return conn


# --------------------------------------------------------------------------- reads

#: a secrets read stamps ``last_fetched_at`` at most this often (seconds), so a hot read is not a write
LAST_FETCHED_RESOLUTION_SECONDS = 1


def read_connection(conn: Connection, *, include_secrets: bool, refresh_mode: str = "auto",
                    not_before: datetime.datetime | None = None) -> dict[str, Any]:
    """A connection's view; with secrets, refreshed per ``refresh_mode`` (auto/force/never) and stamped read.

    ``not_before`` (database clock: when the request arrived) lets overlapping
    forced reads share one refresh. Refresh failures become API errors: a
    provider in trouble or a refused grant is a 502, nothing to refresh a 409.
    """
    if not include_secrets:
        return connection_view(conn)
    # auto refreshes a token about to expire: without a stored expiry (an API key, a token that never
    # expires) nothing is ever due (refresh.is_due), so no clock is read and no settings decrypted for it
    if refresh_mode == "force" or (refresh_mode == "auto" and conn.expires_at is not None):
        conn = refreshed(conn, refresh_mode == "force", not_before)
    now = utcnow()
    last = conn.last_fetched_at
    # recorded only once the read succeeded; every read is audited, the stamp written at most once a second
    # (with it, one transaction holds both writes; without it, the audit INSERT alone commits by itself)
    stamp = last is None or not 0 <= (now - last).total_seconds() < LAST_FETCHED_RESOLUTION_SECONDS
    with write_transaction() if stamp else contextlib.nullcontext():
        if stamp:
            Connection.update(last_fetched_at=now).where(Connection.id == conn.id).execute()
            conn.last_fetched_at = now
        audit.record("connection.secrets_read", org_id=conn.org_id, target_type="connection", target_id=conn.id,
                     app_id=conn.app_id)
    return connection_view(conn, include_secrets=True)


def refreshed(conn: Connection, force: bool, not_before: datetime.datetime | None) -> Connection:
    """``conn`` with a token good for the refresh margin (or refreshed anyway with ``force``); failures as API errors."""
    try:
        return refresh.refresh_connection(conn.id, force=force, not_before=not_before, loaded=conn)
    except ProviderUnavailable as exc:
        details = {"refresh": exc.reason, "provider": conn.connector_name}
        if exc.token_url:
            details["token_url"] = exc.token_url
        raise errors.BadGateway(details) from None
    except RefreshRejected as exc:
        raise errors.BadGateway({"refresh": exc.reason, "provider": conn.connector_name,
                                 "status": "error"}) from None
    except NotRefreshable as exc:
        raise errors.Conflict({"refresh": f"cannot refresh: {exc.reason}"}) from None


# --------------------------------------------------------------------------- revocation and deletion


def revoke_at_provider(conn: Connection) -> bool:
    """Best effort RFC 7009 revocation of an OAuth connection's tokens; True when the provider confirmed.

    A provider that is down or refuses does not block the deletion (logged, no secrets).
    """
    cls = registry().get(conn.type)
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
        return bool(revoke_tokens(credential, settings))
    except (OutboundError, ProviderError) as exc:
        log.warning("token revocation failed; deleting anyway",
                    extra={"fields": {"connection_id": conn.id, "error": type(exc).__name__}})
        return False


def delete_connection(conn: Connection) -> None:
    """Revoke at the provider where it can (best effort), delete the row, then notify ``connection_revoked``."""
    revoked = revoke_at_provider(conn)
    snapshot = hook_view(conn)
    with write_transaction():
        if Connection.delete().where(Connection.id == conn.id).execute() != 1:
            return  # deleted meanwhile: that deletion reported it
        outbox.emit_connection(conn, "connection.deleted")
        audit.record("connection.deleted", org_id=conn.org_id, target_type="connection", target_id=conn.id,
                     app_id=conn.app_id)
        if revoked:
            audit.record("token.revoked", org_id=conn.org_id, target_type="connection", target_id=conn.id,
                         app_id=conn.app_id)
    registry().notify("connection_revoked", connection=snapshot)
