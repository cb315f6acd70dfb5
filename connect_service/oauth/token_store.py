"""Writing OAuth tokens to a connection: the seed 002 settings shape and the one function that stores it.

Every token the service holds arrives through :func:`store_tokens`: a code
exchange at the callback, a client_credentials fetch, a refresh, and a seed
002 import (refresh-due's batches go through :mod:`.batch_store`, which
applies this module's :func:`token_settings` and the same generation check to
many refreshes in one transaction). So the rules that protect a connection
live in one place: expiry from the database clock and never "never expires",
a new grant never inherits the old grant's refresh token, a refresh never
overwrites a newer write.
"""
from __future__ import annotations

import datetime
import logging
import math
from typing import Any, Mapping

import jwt

from .. import audit, errors, outbox, strict_json
from ..oauth2_provider import OAuth2Provider
from ..connections import notify_activated, read_settings, seal_settings
from ..db import db_now, write_transaction
from ..extensions import settings as app_settings
from ..models import Connection, Credential, utcnow
from ..timestamps import iso, naive_utc
from .provider import provider_for

log = logging.getLogger(__name__)

#: the longest access-token lifetime believed (10 years): larger ``expires_in``/JWT ``exp`` are clamped
MAX_TOKEN_LIFETIME_SECONDS = 10 * 365 * 24 * 3600


def _jwt_exp(access_token: Any) -> float | None:
    if not isinstance(access_token, str) or access_token.count(".") != 2:
        return None
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False, "verify_exp": False,
                                                    "verify_aud": False, "verify_iat": False,
                                                    "verify_nbf": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    if isinstance(exp, float) and math.isnan(exp):
        return None
    return exp  # may be huge or infinite: _expiry_from_exp clamps it


def _lifetime_seconds(raw: Any) -> int | None:
    """``expires_in`` as whole seconds in 1..MAX_TOKEN_LIFETIME_SECONDS, or None when unusable.

    Larger values (``1e12``, ``"inf"``) are clamped to the maximum; zero,
    negative, NaN and non-numbers are unusable.
    """
    if raw is None or raw == "" or isinstance(raw, bool):
        return None
    if isinstance(raw, int):  # any size: no float conversion that could overflow
        value: float = raw if raw < MAX_TOKEN_LIFETIME_SECONDS else MAX_TOKEN_LIFETIME_SECONDS
    else:
        try:
            value = float(raw)
        except (TypeError, ValueError, OverflowError):
            return None
    if math.isnan(value) or value < 1:
        return None
    return int(min(value, MAX_TOKEN_LIFETIME_SECONDS))


def _expiry_from_exp(exp: float, now: datetime.datetime) -> datetime.datetime:
    """A JWT ``exp`` (Unix seconds) as naive UTC, clamped to [epoch, now + MAX_TOKEN_LIFETIME_SECONDS]."""
    epoch = datetime.datetime(1970, 1, 1)
    latest = (now - epoch).total_seconds() + MAX_TOKEN_LIFETIME_SECONDS
    return epoch + datetime.timedelta(seconds=int(min(max(exp, 0), latest)))


def token_settings(token: dict[str, Any], *, previous: dict[str, Any] | None, provider: OAuth2Provider,
                   credential: Credential | None, now: datetime.datetime, new_grant: bool = False,
                   requested_scope: str | None = None) -> tuple[dict[str, Any], datetime.datetime]:
    """Seed 002 settings ``{"oauth": {"credentials": {...}, ...}}`` and the access token's expiry.

    - a refresh token in ``token`` (rotation) replaces the old one; a
      *refresh* response without one keeps ``previous``'s. A ``new_grant``
      (a code exchange or a client_credentials fetch) never inherits the
      previous grant's refresh token or scope: the user may have signed in
      as another account;
    - ``expires_in`` missing or unusable → the access token's JWT ``exp``
      (read without verification) → ``provider.default_token_lifetime`` →
      the ``default_token_lifetime_seconds`` setting: never "never expires".
      ``expires_in`` and ``exp`` are clamped to
      :data:`MAX_TOKEN_LIFETIME_SECONDS`, so no provider answer can overflow;
    - ``scope`` missing → ``requested_scope`` when given (RFC 6749 §5.1:
      omitted means "as requested"), else the previous scope (§6, refresh);
      ``created_at`` and ``metadata`` carry over from ``previous``.

    ``now`` should be the database clock (:func:`connect_service.db.db_now`):
    refresh decisions compare the expiry with it. Returns ``(settings,
    expires_at)`` with ``expires_at`` naive UTC (the ``Connection.expires_at``
    column).
    """
    now = naive_utc(now)
    prev_oauth = (previous or {}).get("oauth") if isinstance(previous, dict) else None
    prev_oauth = prev_oauth if isinstance(prev_oauth, dict) else {}
    prev_creds = prev_oauth.get("credentials") if isinstance(prev_oauth.get("credentials"), dict) else {}
    inherited = {} if new_grant else prev_creds

    expires_in = _lifetime_seconds(token.get("expires_in"))
    if expires_in is not None:
        expires_at = now + datetime.timedelta(seconds=expires_in)
    else:
        exp = _jwt_exp(token.get("access_token"))
        if exp is not None:
            expires_at = _expiry_from_exp(exp, now)
        else:
            lifetime = _lifetime_seconds(provider.default_token_lifetime) \
                or _lifetime_seconds(app_settings()["default_token_lifetime_seconds"]) or 3600
            expires_at = now + datetime.timedelta(seconds=lifetime)
        expires_in = max(0, int((expires_at - now).total_seconds()))

    scope = token.get("scope")
    if isinstance(scope, (list, tuple)):
        scope = " ".join(str(s) for s in scope)
    if not scope:
        scope = requested_scope if requested_scope is not None else inherited.get("scope")
    credentials = {
        "access_token": token["access_token"],
        "refresh_token": token.get("refresh_token") or inherited.get("refresh_token"),
        "scope": scope,
        "expires_in": expires_in,
        "expires_at": iso(expires_at),
        "token_type": token.get("token_type") or prev_creds.get("token_type") or "Bearer",
        "client_id": credential.oauth_client_id if credential is not None else prev_creds.get("client_id"),
        "raw": strict_json.sanitise(dict(token)),  # a provider's answer: made strict JSON before it is stored
    }
    settings = {"oauth": {
        "credentials": credentials,
        "created_at": prev_oauth.get("created_at") or iso(now),
        "updated_at": iso(now),
        "last_fetched_at": iso(now),
        "metadata": prev_oauth.get("metadata") or {},
    }}
    return settings, expires_at


def _imported_settings(credential: Credential, provider: OAuth2Provider, oauth: Mapping[str, Any],
                       now: datetime.datetime) -> tuple[dict[str, Any], datetime.datetime]:
    """Seed 002 import: the caller's ``expires_at`` is kept exactly (even when past: refresh at next read)."""
    creds = oauth["credentials"]
    token = {key: value for key, value in creds.items()
             if value is not None and key not in ("expires_at", "raw", "client_id")}
    given_expiry = naive_utc(creds["expires_at"]) if creds.get("expires_at") is not None else None
    if given_expiry is not None:
        token["expires_in"] = max(0, int((given_expiry - now).total_seconds()))
    stored, expires_at = token_settings(token, previous=None, provider=provider, credential=credential, now=now)
    if given_expiry is not None:
        expires_at = given_expiry
        stored["oauth"]["credentials"]["expires_at"] = iso(given_expiry)
        stored["oauth"]["credentials"]["expires_in"] = token["expires_in"]
    if creds.get("raw"):
        stored["oauth"]["credentials"]["raw"] = creds["raw"]
    if oauth.get("metadata"):
        stored["oauth"]["metadata"] = oauth["metadata"]
    return stored, expires_at


def store_tokens(conn: Connection, credential: Credential, token: Mapping[str, Any], *,
                 refreshing: int | None = None, create: bool = False, keep_previous: bool = True,
                 requested_scope: str | None = None) -> Connection:
    """Write ``token`` into ``conn`` in one transaction and return the row as stored.

    The four callers differ only in what they tell this function:

    - a **new grant** (callback, client_credentials fetch; the default) makes
      the connection ``active`` with ``credential``, and fires
      ``connection_activated``. The previous grant's refresh token and scope
      are never carried over (the user may have signed in as someone else);
      ``keep_previous`` keeps its ``created_at`` and ``metadata``;
    - a **refresh** (``refreshing`` = the ``refresh_generation`` the lease was
      claimed at) keeps the previous refresh token unless rotated, and writes
      only when no other write happened since: a re-authorization that landed
      meanwhile wins. It changes neither status nor hooks;
    - an **import** (``create=True``) inserts ``conn`` (its columns already
      set by the caller) active; ``token`` is then seed 002's ``oauth`` object
      (``credentials`` with ``expires_at``/``expires_in``/``raw``, ``metadata``).

    ``requested_scope`` is stored when the response names no scope. Times come
    from the database clock, which refresh decisions compare them with. Every
    write bumps ``refresh_generation`` and releases any refresh lease.
    """
    provider = provider_for(credential)
    with write_transaction():
        now = db_now()
        if create:
            stored, conn.expires_at = _imported_settings(credential, provider, token, now)
            conn.status = "active"
            conn.created_at = conn.updated_at = utcnow()
            conn.settings_encrypted = seal_settings(conn, stored)
            conn.save(force_insert=True)
            written = 1
            outbox.emit_connection(conn, "connection.created")
            audit.record("connection.created", org_id=conn.org_id, target_type="connection", target_id=conn.id,
                         app_id=conn.app_id)
        else:
            current = Connection.get_or_none(Connection.id == conn.id)
            if current is None:  # deleted while the provider answered
                raise errors.NotFound()
            refresh = refreshing is not None
            previous = read_settings(current) if refresh or (
                keep_previous and current.credential_id == credential.id) else None
            stored, expires_at = token_settings(
                dict(token), previous=previous, provider=provider, credential=credential, now=now,
                new_grant=not refresh or credential.oauth_grant_type == "client_credentials",
                requested_scope=requested_scope)
            changes: dict[str, Any] = {}
            where = [Connection.id == current.id]
            if refresh:
                stored = {**previous, **stored}  # keys beside "oauth" survive a refresh
                where.append(Connection.refresh_generation == refreshing)
            else:
                changes = {"status": "active", "status_reason": None, "credential": credential.id}
            written = Connection.update(
                settings_encrypted=seal_settings(current, stored), expires_at=expires_at, updated_at=now,
                last_refreshed_at=now, refresh_generation=Connection.refresh_generation + 1,
                refresh_lease_until=None, refresh_lease_owner=None, **changes,
            ).where(*where).execute()
            if written == 1:
                # a refresh, a first authorization (no token was ever stored), or a re-authorization
                event = "connection.refreshed" if refresh else (
                    "connection.created" if current.last_refreshed_at is None else "connection.updated")
                outbox.emit_connection(Connection.get_by_id(current.id), event)
                if not refresh:
                    audit.record(event, org_id=current.org_id, target_type="connection", target_id=current.id,
                                 app_id=current.app_id)
    fresh = Connection.get_or_none(Connection.id == conn.id)
    if fresh is None:
        raise errors.NotFound()
    if refreshing is not None:
        if written != 1:
            log.warning("refresh result discarded: the connection changed meanwhile",
                        extra={"fields": {"connection_id": conn.id}})
        return fresh
    notify_activated(fresh)
    return fresh
