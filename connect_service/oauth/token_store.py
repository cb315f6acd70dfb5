"""Writing OAuth tokens to a connection: the seed 002 settings shape and the one function that stores it.

Every token the service holds arrives through :func:`store_tokens`: a code
exchange at the callback, a client_credentials fetch, a refresh, and a seed
002 import; refresh-due's batches go through :func:`store_refreshes`, which
applies the same rules (:func:`token_settings`, the generation check) to many
refreshes in one transaction. So the rules that protect a connection live in
one place: expiry from the database clock and never "never expires", a new
grant never inherits the old grant's refresh token, a refresh never
overwrites a newer write.
"""
from __future__ import annotations

import datetime
import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import jwt
import peewee

from .. import audit, errors, outbox, strict_json
from ..oauth2_provider import OAuth2Provider
from ..connections import notify_activated, read_settings, seal_settings
from ..db import compiled_sql, database, db_now, fetch_models, is_postgres, write_transaction
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


@dataclass
class Refreshed:
    """One refresh result for :func:`store_refreshes`: the token the provider answered for a
    connection whose lease was claimed at ``generation``.

    ``seen_ciphertext``/``seen_settings``: the row's ``settings_encrypted`` when it was claimed
    and its decryption. The write assumes them as the previous settings (no second read and
    decryption) and is conditional on the ciphertext being unchanged; a row whose settings
    changed without a new generation (``rotate-keys``) is read again and written from that.
    """

    connection_id: str
    generation: int
    credential: Credential
    provider: OAuth2Provider
    token: Mapping[str, Any]
    requested_scope: str | None = None
    seen_ciphertext: str | None = None
    seen_settings: dict[str, Any] | None = None


#: the columns a ``connection.refreshed`` event needs (``outbox.connection_data``), as the write returns them
_EVENT_FIELDS = ("id", "org", "app", "customer_id", "requirement_id", "connector_name", "status", "display_name",
                 "status_reason")


def _column(name: str) -> str:
    return f'"{Connection._meta.fields[name].column_name}"'


def _update_sql(count: int, check_ciphertext: bool) -> str:
    """PostgreSQL: one conditional ``UPDATE … FROM (VALUES …)`` for ``count`` rows, returning the written rows.

    Each row is written only at its claimed generation (and, with ``check_ciphertext``, only
    while its ``settings_encrypted`` is the one the caller decrypted).
    """
    c = _column
    values = ", ".join(["(%s, %s, %s, %s::timestamp, %s)"] * count)
    condition = f"c.{c('id')} = v.id AND c.{c('refresh_generation')} = v.gen"
    if check_ciphertext:
        condition += f" AND c.{c('settings_encrypted')} IS NOT DISTINCT FROM v.old"
    returning = ", ".join(f"c.{c(name)}" for name in _EVENT_FIELDS)
    return (f'UPDATE "{Connection._meta.table_name}" AS c SET {c("settings_encrypted")} = v.s, '
            f'{c("expires_at")} = v.e, {c("updated_at")} = %s, {c("last_refreshed_at")} = %s, '
            f'{c("refresh_generation")} = c.{c("refresh_generation")} + 1, '
            f'{c("refresh_lease_until")} = NULL, {c("refresh_lease_owner")} = NULL '
            f'FROM (VALUES {values}) AS v(id, gen, s, e, old) WHERE {condition} RETURNING {returning}')


def _sealed(conn: Connection, result: Refreshed, previous: dict[str, Any],
            now: datetime.datetime) -> tuple[str, datetime.datetime]:
    """The new ciphertext and expiry of a refresh, exactly as :func:`store_tokens` computes them."""
    stored, expires_at = token_settings(
        dict(result.token), previous=previous, provider=result.provider, credential=result.credential,
        now=now, new_grant=result.credential.oauth_grant_type == "client_credentials",
        requested_scope=result.requested_scope)
    return seal_settings(conn, {**previous, **stored}), expires_at  # keys beside "oauth" survive a refresh


def _loaded(data: dict[str, Any]) -> Connection:
    """A Connection holding ``data`` as if loaded from the database (no defaults computed, nothing dirty)."""
    conn = Connection.__new__(Connection)
    conn.__data__, conn._dirty, conn.__rel__ = data, set(), {}
    return conn


def _current_rows(ids: list[str]) -> list[Connection]:
    """The rows of ``ids`` as stored now (one query; on PostgreSQL its SQL is built once per process)."""
    if not is_postgres():
        return list(Connection.select().where(Connection.id.in_(ids)))
    sql = compiled_sql("token_store.current_rows", lambda: Connection.select().where(
        Connection.id == peewee.SQL("ANY(%s)")).sql()[0])
    return [row for (row,) in fetch_models(sql, (ids,), Connection)]


def _write_postgres(rows: list[tuple[Connection, int, str, datetime.datetime, str | None]], now: datetime.datetime,
                    check_ciphertext: bool) -> list[Connection]:
    if not rows:
        return []
    params: list[Any] = [now, now]  # SET's two parameters come first in the text, VALUES' after them
    for conn, generation, sealed, expires_at, old in rows:
        params += [conn.id, generation, sealed, expires_at, old]
    fields = tuple(Connection._meta.fields[name] for name in _EVENT_FIELDS)
    sql = _update_sql(len(rows), check_ciphertext)
    return [_loaded({f.name: f.python_value(v) for f, v in zip(fields, values)})
            for values in database.execute_sql(sql, params).fetchall()]


def store_refreshes(results: Sequence[Refreshed]) -> tuple[set[str], dict[str, Exception]]:
    """Store many refresh results in **one** transaction; return (ids written, {id: error}).

    Each result is written as :func:`store_tokens` writes a refresh: :func:`token_settings`
    with the stored settings as ``previous``, keys beside ``oauth`` kept, and the write
    conditional on the ``refresh_generation`` the lease was claimed at (it bumps the generation
    and releases the lease). A result whose row moved on meanwhile (a re-authorization, a
    reader's refresh) or was deleted is discarded, as there. One ``connection.refreshed``
    outbox event per written row goes into the same transaction. A result that cannot be turned
    into settings (e.g. a row that no key decrypts) is returned in the error map and not
    written; the others still are.

    On PostgreSQL the rows are written with one ``UPDATE … FROM (VALUES …)`` that takes the
    settings decrypted at claim time (:class:`Refreshed`) as the previous ones and also requires
    the ciphertext to be unchanged; rows whose settings changed anyway are read again and
    written in a second such statement. On SQLite each row is read again and written on its
    own (statements cost no round trip there).
    """
    if not results:
        return set(), {}
    problems: dict[str, Exception] = {}
    with write_transaction():
        now = db_now()
        if is_postgres():
            first = []
            for result in results:
                conn = _loaded({"id": result.connection_id})
                try:
                    sealed, expires_at = _sealed(conn, result, result.seen_settings or {}, now)
                except Exception as exc:  # one bad row must not lose the others' rotated tokens
                    problems[conn.id] = exc
                    continue
                first.append((conn, result.generation, sealed, expires_at, result.seen_ciphertext))
            written = _write_postgres(first, now, check_ciphertext=True)
            done = {conn.id for conn in written}
            missed = [r for r in results if r.connection_id not in done and r.connection_id not in problems]
        else:
            written, missed = [], list(results)
        if missed:  # settings changed since the claim (or SQLite): read them again
            current = {c.id: c for c in _current_rows([r.connection_id for r in missed])}
            again = []
            for result in missed:
                conn = current.get(result.connection_id)
                if conn is None or conn.refresh_generation != result.generation:
                    continue  # deleted or changed meanwhile: discarded below
                try:
                    sealed, expires_at = _sealed(conn, result, read_settings(conn), now)
                except Exception as exc:  # as above
                    problems[conn.id] = exc
                    continue
                again.append((conn, result.generation, sealed, expires_at, conn.settings_encrypted))
            if is_postgres():
                written += _write_postgres(again, now, check_ciphertext=False)
            else:
                for conn, generation, sealed, expires_at, _ in again:
                    if Connection.update(settings_encrypted=sealed, expires_at=expires_at, updated_at=now,
                                         last_refreshed_at=now, refresh_generation=Connection.refresh_generation + 1,
                                         refresh_lease_until=None, refresh_lease_owner=None).where(
                            Connection.id == conn.id, Connection.refresh_generation == generation).execute() == 1:
                        written.append(conn)
        outbox.emit_connections(written, "connection.refreshed")
    ids = {conn.id for conn in written}
    for result in results:
        if result.connection_id not in ids and result.connection_id not in problems:
            log.warning("refresh result discarded: the connection changed meanwhile",
                        extra={"fields": {"connection_id": result.connection_id}})
    return ids, problems
