"""OAuth token refresh: exactly one provider call per connection, across processes and hosts.

How a refresh runs (``refresh_connection`` on a read; cron's ``refresh-due`` runs the same
protocol for many connections at once, see :mod:`connect_service.refresh_due`):

1. **Claim** a lease in one short transaction: a conditional ``UPDATE`` that
   succeeds only when nobody holds a live lease and the row's
   ``refresh_generation`` is still the one the caller saw. Lease times come from
   the database clock (:func:`connect_service.db.db_now`), so hosts with skewed
   clocks agree.
2. The winner calls the token endpoint with **no transaction open and no row
   lock held**, then saves the new access token, the (possibly rotated) refresh
   token and the expiry in **one** ``UPDATE`` that also bumps
   ``refresh_generation`` and clears the lease.
3. Everyone else **waits**: polls the row with short sleeps (bounded by the
   lease) until the generation moves, then answers with the winner's token.
   Concurrent ``refresh=force`` reads merge the same way: a forced read only
   refreshes when the generation it saw is still current when it claims.

A provider that is down (transport error or 5xx) leaves the connection
``active`` and raises :class:`~connect_service.oauth.errors.ProviderUnavailable`; ``invalid_grant`` re-reads
the row first (another worker or a re-authorization may have replaced the
refresh token) and only then marks the connection ``error`` — with an
``UPDATE … WHERE refresh_generation = <seen>``, so a re-authorization that
lands between the re-read and the write is never overwritten.
The token HTTP client gives up after half the lease (``max_total_time``), so
a provider that trickles its answer cannot outlive the lease.
"""
from __future__ import annotations

import datetime
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from . import connections
from .oauth2_provider import ProviderError
from .db import db_now, write_transaction
from .errors import NotFound
from .extensions import settings
from .http import OutboundError, redact_url
from .models import Connection, Credential
from .oauth import credential_scopes, grants, provider_for, store_tokens
from .oauth.errors import TRANSIENT_CODES, NotRefreshable, ProviderUnavailable, RefreshRejected

log = logging.getLogger(__name__)

#: seconds between polls of a loser waiting for the winner
POLL_START, POLL_MAX = 0.05, 0.25


@dataclass
class Observed:
    """What a refresher saw before claiming: the row's generation and its refresh token."""

    generation: int
    refresh_token: str | None


def lease_owner(prefix: str = "worker") -> str:
    """A unique lease owner name: ``prefix:host:pid:random`` (debugging aid, never trusted)."""
    return f"{prefix}:{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def _oauth_credentials(conn: Connection) -> dict[str, Any] | None:
    settings = connections.read_settings(conn)
    oauth = settings.get("oauth") if isinstance(settings, dict) else None
    if not isinstance(oauth, dict) or not isinstance(oauth.get("credentials"), dict):
        return None
    return oauth["credentials"]


def is_due(conn: Connection, now: datetime.datetime, margin_seconds: int) -> bool:
    """True when the access token expires within ``margin_seconds`` of ``now`` (database clock)."""
    return conn.expires_at is not None and conn.expires_at <= now + datetime.timedelta(seconds=margin_seconds)


def _reload(conn_id: str) -> Connection:
    conn = Connection.get_or_none(Connection.id == conn_id)
    if conn is None:  # deleted meanwhile
        raise NotFound()
    return conn


def _observe(conn: Connection) -> Observed:
    creds = _oauth_credentials(conn) or {}
    return Observed(conn.refresh_generation, creds.get("refresh_token"))


def _refreshable_reason(conn: Connection) -> str | None:
    if conn.disabled:
        return "the connection is disabled"
    if conn.status != "active":
        return f"the connection is {conn.status}"
    creds = _oauth_credentials(conn)
    if creds is None:
        return "the connection has no OAuth tokens"
    credential = conn.credential_id and Credential.get_or_none(Credential.id == conn.credential_id)
    if not credential:
        return "the connection's OAuth client credential no longer exists"
    if credential.oauth_grant_type != "client_credentials" and not creds.get("refresh_token"):
        return "the provider issued no refresh token"
    return None


def try_claim(conn_id: str, generation: int, owner: str) -> bool:
    """Claim the refresh lease if it is free and the row is still at ``generation``.

    One short write transaction (``BEGIN IMMEDIATE`` on SQLite); the conditional
    ``UPDATE`` is atomic on PostgreSQL too, so exactly one caller wins.
    """
    lease = datetime.timedelta(seconds=settings()["refresh_lease_seconds"])
    with write_transaction():
        now = db_now()
        claimed = (Connection.update(refresh_lease_until=now + lease, refresh_lease_owner=owner)
                   .where(Connection.id == conn_id,
                          Connection.refresh_generation == generation,
                          Connection.status == "active",
                          Connection.disabled == False,  # noqa: E712 - peewee expression
                          Connection.refresh_lease_until.is_null() | (Connection.refresh_lease_until < now))
                   .execute())
    return claimed == 1


def release(conn_id: str, owner: str) -> None:
    """Give the lease back without a new token (the refresh failed or was not needed)."""
    (Connection.update(refresh_lease_until=None, refresh_lease_owner=None)
     .where(Connection.id == conn_id, Connection.refresh_lease_owner == owner).execute())


def refresh_connection(conn_id: str, *, force: bool = False, margin: int | None = None,
                       not_before: datetime.datetime | None = None, loaded: Connection | None = None) -> Connection:
    """Return the connection with a token that is good for at least ``margin`` seconds.

    Refreshes only when the access token expires within the margin (default
    ``refresh_margin_seconds``), or always with ``force=True``; concurrent
    callers share one provider call. With ``force``, ``not_before`` (database
    clock, e.g. when the request arrived) accepts a refresh that completed
    after that moment instead of starting another one, so forced reads that
    overlap merge even when one of them looks at the row only after the
    other's refresh finished. Must run in an app context with the database
    connected and **outside** any transaction.

    Raises :class:`ProviderUnavailable` (connection stays active),
    :class:`RefreshRejected` (connection marked ``error``) and, for
    ``force=True`` only, :class:`NotRefreshable`. Without ``force`` a
    connection that cannot be refreshed (disabled, not OAuth, no refresh
    token) is returned as it is. ``loaded``: the row as the caller read it in
    this request, to start from instead of reading it again (the claim checks
    its generation, so a row that moved meanwhile is still caught).
    """
    margin = settings()["refresh_margin_seconds"] if margin is None else margin
    conn = loaded if loaded is not None and loaded.id == conn_id else _reload(conn_id)
    reason = _refreshable_reason(conn)
    if reason is not None:
        if force:
            raise NotRefreshable(conn.id, reason)
        return conn
    if not force and not is_due(conn, db_now(), margin):
        return conn
    if force and not_before is not None and conn.last_refreshed_at is not None \
            and conn.last_refreshed_at >= not_before:
        return conn  # refreshed while this request was under way: that is the forced refresh
    seen = _observe(conn)
    owner = lease_owner("read")
    while True:
        if try_claim(conn.id, seen.generation, owner):
            return _run_claimed(conn.id, owner, seen)
        conn, done = _wait_for_winner(conn.id, seen)
        if done:
            return conn
        # the lease expired without a result (a worker died): try to take over


def _wait_for_winner(conn_id: str, seen: Observed) -> tuple[Connection, bool]:
    """Poll until the lease holder finishes. Returns (row, True) when there is an outcome to report."""
    delay = POLL_START
    while True:
        conn = _reload(conn_id)
        if conn.refresh_generation != seen.generation:
            return conn, True  # somebody refreshed since we looked: that token is ours too
        if conn.disabled:
            return conn, True
        if conn.status != "active":
            raise RefreshRejected(conn.id, conn.status_reason or f"the connection is {conn.status}")
        if conn.refresh_lease_until is None:
            # Released without a new generation: the winner's provider call failed just now.
            # Do not hammer a failing provider once per waiting reader.
            raise ProviderUnavailable("a concurrent refresh of this connection failed; try again",
                                      connection_id=conn.id)
        if conn.refresh_lease_until < db_now():
            return conn, False  # the holder died: its lease is up, claim again
        time.sleep(delay)
        delay = min(delay * 1.5, POLL_MAX)


def _run_claimed(conn_id: str, owner: str, seen: Observed) -> Connection:
    """We hold the lease: call the provider (no transaction open) and store the result in one write."""
    saved = False
    try:
        conn = _reload(conn_id)
        if conn.refresh_generation != seen.generation:  # the claim checked it; a changed row wins anyway
            return conn
        creds = connections.read_settings(conn)["oauth"]["credentials"]
        credential = Credential.get_by_id(conn.credential_id)
        token_url = provider_for(credential).token_url or credential.oauth_token_url
        client_credentials = credential.oauth_grant_type == "client_credentials"
        try:
            if client_credentials:
                # a new token for what the credential asks for now, not for the scope the last one got
                token = grants.request_client_credentials(credential)
            else:
                token = grants.request_refresh(credential, creds["refresh_token"])
        except OutboundError as exc:
            raise ProviderUnavailable(f"the token endpoint could not be reached: {exc.reason}",
                                      connection_id=conn.id, token_url=exc.url) from None
        except ProviderError as exc:
            if isinstance(exc, ProviderUnavailable) or exc.code in TRANSIENT_CODES:
                raise ProviderUnavailable(f"the token endpoint failed: {exc.code}", connection_id=conn.id,
                                          token_url=redact_url(token_url or "")) from None
            return settle_rejected(conn, owner, seen, exc)
        scope = " ".join(credential_scopes(credential)) if client_credentials else None
        # One write: new access token, rotated refresh token, expiry, generation, lease released.
        fresh = store_tokens(conn, credential, token, refreshing=seen.generation, requested_scope=scope)
        saved = True
        return fresh
    finally:
        if not saved:
            release(conn_id, owner)


def settle_rejected(conn: Connection, owner: str, seen: Observed, exc: ProviderError) -> Connection:
    """The provider refused our grant. Maybe someone else already replaced it: look before failing.

    Returns the row when another writer replaced the token (lease released); raises
    :class:`RefreshRejected` after marking the connection ``error`` (``invalid_grant``, only if
    no write happened since ``seen``), or :class:`ProviderUnavailable` for other refusals
    (e.g. ``invalid_client``: the lease is then the caller's to release).
    """
    fresh = _reload(conn.id)
    fresh_seen = _observe(fresh)
    if fresh.refresh_generation != seen.generation or fresh_seen.refresh_token != seen.refresh_token:
        release(conn.id, owner)
        log.info("refresh token was replaced by another worker; using the stored one",
                 extra={"fields": {"connection_id": conn.id}})
        return fresh
    if exc.code != "invalid_grant":
        # e.g. invalid_client: an admin must fix the credential; the end user's grant may be fine
        raise ProviderUnavailable(f"the provider refused the refresh: {exc.code}", connection_id=conn.id)
    reason = f"token refresh failed: {exc.code}" + (f" ({exc.description})" if exc.description else "")
    # Before the lease goes (no retry), and only if no re-authorization stored a token since we looked.
    marked = connections.mark_error(fresh, reason + "; the user must reconnect", generation=seen.generation,
                                    event="connection.refresh_failed")
    release(conn.id, owner)
    if not marked:
        log.info("refresh token was rejected but the connection was re-authorized meanwhile",
                 extra={"fields": {"connection_id": conn.id}})
        return _reload(conn.id)
    raise RefreshRejected(conn.id, fresh.status_reason, exc.code)
