"""Storing many refreshes at once: refresh-due's writer, with :mod:`.token_store`'s rules.

:func:`store_refreshes` writes the answers a refresh-due runner collected in one
transaction. Each is computed by :func:`.token_store.token_settings` (expiry
from the database clock, never "never expires", the rotated refresh token kept)
and written only at the ``refresh_generation`` its lease was claimed at, exactly
as :func:`.token_store.store_tokens` writes a single refresh.
"""
from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import peewee

from .. import outbox
from ..connections import read_settings, seal_settings
from ..db import (as_loaded, compiled_sql, database, db_now, fetch_models, is_postgres, loaded_instance,
                  write_transaction)
from ..models import Connection, Credential
from ..oauth2_provider import OAuth2Provider
from .token_store import token_settings

log = logging.getLogger(__name__)


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
    return [loaded_instance(Connection, fields, values)
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
                conn = as_loaded(Connection, {"id": result.connection_id})
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
