"""Encryption-key rotation and the start-up check that the keys decrypt existing data.

``CONNECT_ENCRYPTION_KEYS`` is an ordered keyring: the first key encrypts,
every key decrypts. To rotate:

1. put a new key first and keep the old one after it (restart: new secrets
   use the new key, old ones still decrypt);
2. run ``connect-service rotate-keys``: every ciphertext not written by the
   first key is decrypted and re-encrypted with it, in batches, with a
   conditional update so a value the service rewrites meanwhile is left alone
   (it is already under the new key). Run it again at any time: it only
   touches what still needs it;
3. remove the old key and restart.

At start-up :func:`check_keys_decrypt` looks at every key id present in the
encrypted columns; a value written by a key that is not in the keyring (or
that the key with its id cannot decrypt) stops the service with one line
naming ``CONNECT_ENCRYPTION_KEYS``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import peewee

from . import audit, extensions
from .config import ConfigError
from .crypto import PREFIX, DecryptionError, Keyring
from .db import database, write_transaction
from .models import ALL_MODELS, AuditEvent

log = logging.getLogger(__name__)

SUFFIX = "_encrypted"
#: ``v1:`` + 8 hex digits of key id + ``:``
KID_PREFIX_LENGTH = len(PREFIX) + 1 + 8 + 1


@dataclass(frozen=True)
class EncryptedColumn:
    """One ``*_encrypted`` column and the associated data (table, column) its values are bound to."""

    model: type[peewee.Model]
    field_name: str
    table: str
    column: str

    @property
    def field(self) -> peewee.Field:
        return getattr(self.model, self.field_name)

    @property
    def label(self) -> str:
        return f"{self.table}.{self.column}"


def encrypted_columns() -> list[EncryptedColumn]:
    """Every encrypted column of every model (fields named ``*_encrypted``).

    The associated data of ``Credential.oauth_client_secret_encrypted`` is
    ``("credential", "oauth_client_secret", row id)``: the table name and the
    field name without ``_encrypted``, the convention every writer uses.
    """
    out = []
    for model in ALL_MODELS:
        table = model._meta.table_name
        for name in model._meta.sorted_field_names:
            if name.endswith(SUFFIX):
                column = name[: -len(SUFFIX)]
                out.append(EncryptedColumn(model, name, table, column))
    return out


def _keyring(keyring: Keyring | None) -> Keyring:
    if keyring is not None:
        return keyring
    return extensions.keyring()


def _present_columns() -> list[EncryptedColumn]:
    """The encrypted columns the database has: a fresh database has no tables yet, and one behind its
    code (before ``connect-service migrate``) lacks the columns later steps add."""
    tables = set(database.get_tables())
    columns = {t: {c.name for c in database.get_columns(t)} for t in {c.table for c in encrypted_columns()} & tables}
    return [c for c in encrypted_columns() if c.field.column_name in columns.get(c.table, ())]


# --- rotation ------------------------------------------------------------------------------------

def pending_count(keyring: Keyring | None = None) -> int:
    """How many stored values the first key did not write (what :func:`rotate_all` will visit)."""
    prefix = _current_prefix(_keyring(keyring))
    total = 0
    with database.connection_context():
        for col in _present_columns():
            total += col.model.select().where(_stale(col.field, prefix)).count()
    return total


def _stale(field: peewee.Field, prefix: str):
    return field.is_null(False) & (peewee.fn.SUBSTR(field, 1, len(prefix)) != prefix)


def rotate_all(batch_size: int = 200, echo: Callable[[str], Any] = print,
               keyring: Keyring | None = None, progress: Callable[[int], Any] = lambda done: None) -> dict[str, Any]:
    """Re-encrypt every ciphertext that the first key did not write; return a summary.

    Idempotent and safe while the service runs: rows are read in primary-key
    batches, each batch is re-encrypted in one short transaction, and each row
    is updated only if it still holds the ciphertext that was read. ``echo``
    gets one progress line per batch and per column (never a secret) and
    ``progress(n)`` the number of values each batch visited. A value that
    cannot be decrypted is counted in ``failed`` and left as it is.

    Summary: ``{"status": "ok"|"incomplete", "primary_key_id", "rotated",
    "already_current", "failed", "changed_concurrently", "columns": {...}}``.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    ring = _keyring(keyring)
    summary: dict[str, Any] = {"status": "ok", "primary_key_id": ring.primary_kid, "rotated": 0,
                               "already_current": 0, "failed": 0, "changed_concurrently": 0, "columns": {}}
    with database.connection_context():
        for col in _present_columns():
            stats = _rotate_column(col, ring, batch_size, echo, progress)
            summary["columns"][col.label] = stats
            for key in ("rotated", "already_current", "failed", "changed_concurrently"):
                summary[key] += stats[key]
            echo(f"{col.label}: {stats['rotated']} re-encrypted, {stats['already_current']} already current, "
                 f"{stats['failed']} failed, {stats['changed_concurrently']} changed concurrently")
    with database.connection_context(), write_transaction():  # one system-wide event per run
        if AuditEvent._meta.table_name in database.get_tables():
            audit.record("keys.rotated", org_id=None, target_type="encryption_key", target_id=ring.primary_kid,
                         details={key: summary[key] for key in ("rotated", "already_current", "failed")})
    if summary["failed"]:
        summary["status"] = "incomplete"
        echo(f"{summary['failed']} value(s) could not be decrypted with any key of CONNECT_ENCRYPTION_KEYS; "
             "keep the key that wrote them until they are fixed or deleted")
    return summary


def _current_prefix(ring: Keyring) -> str:
    return f"{PREFIX}:{ring.primary_kid}:"


def _rotate_column(col: EncryptedColumn, ring: Keyring, batch_size: int,
                   echo: Callable[[str], Any], progress: Callable[[int], Any]) -> dict[str, int]:
    model, field = col.model, col.field
    pk = model._meta.primary_key
    prefix = _current_prefix(ring)
    stale_filter = _stale(field, prefix)
    stats = {"rotated": 0, "failed": 0, "changed_concurrently": 0}
    stats["already_current"] = model.select().where(field.is_null(False), ~stale_filter).count()
    last = None
    while True:
        query = model.select(pk, field).where(stale_filter).order_by(pk).limit(batch_size)
        if last is not None:
            query = query.where(pk > last)
        rows = list(query.tuples())
        if not rows:
            break
        last = rows[-1][0]
        done = failed = concurrent = 0
        with write_transaction():
            for row_id, ciphertext in rows:
                if not ring.needs_rotation(ciphertext):  # pragma: no cover - the SQL filter already excludes these
                    continue
                try:
                    plaintext = ring.decrypt(ciphertext, col.table, col.column, str(row_id))
                except DecryptionError as exc:
                    failed += 1
                    echo(f"{col.label} row {row_id}: {exc}")
                    continue
                fresh = ring.encrypt(plaintext, col.table, col.column, str(row_id))
                updated = model.update({field: fresh}).where(pk == row_id, field == ciphertext).execute()
                if updated:
                    done += 1
                else:
                    concurrent += 1  # rewritten (with the current key) or deleted meanwhile
        stats["rotated"] += done
        stats["failed"] += failed
        stats["changed_concurrently"] += concurrent
        echo(f"{col.label}: batch of {len(rows)}: {done} re-encrypted, {failed} failed")
        progress(len(rows))
    return stats


# --- start-up check ------------------------------------------------------------------------------

def check_keys_decrypt(keyring: Keyring | None = None, samples_per_key: int = 3) -> dict[str, Any]:
    """Raise :class:`ConfigError` (one line naming ``CONNECT_ENCRYPTION_KEYS``) unless the keys decrypt existing data.

    For each encrypted column, every key id found in stored values must be in
    the keyring, and for each key id at least one of up to ``samples_per_key``
    sample values must decrypt. Missing tables (a fresh database before
    ``init-db``) are skipped; an unreachable database is logged and skipped
    (``/readyz`` reports it). A single value that fails while others under the
    same key decrypt is tampered or corrupt data, not a key problem: it is
    logged (without any secret) and does not stop the service.

    Returns ``{"checked": {label: {kid: count}}, "failed_samples": n}``.
    """
    ring = _keyring(keyring)
    result: dict[str, Any] = {"checked": {}, "failed_samples": 0}
    try:
        database.connect(reuse_if_open=True)
    except peewee.OperationalError as exc:
        log.warning("encryption key check skipped: database unreachable (%s)", type(exc).__name__)
        return result
    with database.connection_context():  # closes the connection opened above
        for col in _present_columns():
            result["checked"][col.label] = _check_column(col, ring, samples_per_key, result)
    return result


def _check_column(col: EncryptedColumn, ring: Keyring, samples_per_key: int, result: dict) -> dict[str, int]:
    model, field = col.model, col.field
    pk = model._meta.primary_key
    head = peewee.fn.SUBSTR(field, 1, KID_PREFIX_LENGTH)
    groups = list(model.select(head.alias("head"), peewee.fn.COUNT(pk).alias("n"))
                  .where(field.is_null(False)).group_by(head).tuples())
    counts: dict[str, int] = {}
    for head_value, count in groups:
        version, _, rest = (head_value or "").partition(":")
        kid = rest[:-1] if rest.endswith(":") else None
        if version != PREFIX or not kid:
            log.warning("%s: %d stored value(s) are not ciphertexts of this service", col.label, count)
            result["failed_samples"] += count
            continue
        counts[kid] = count
        if not ring.has_key(kid):
            raise ConfigError(
                f"CONNECT_ENCRYPTION_KEYS: cannot decrypt existing data: {count} value(s) of {col.label} were "
                f"encrypted with key id {kid}, which is not in the keyring (add that key back after the first "
                f"one, then run `connect-service rotate-keys`)")
        rows = list(model.select(pk, field).where(head == head_value).order_by(pk).limit(samples_per_key).tuples())
        ok = 0
        for row_id, ciphertext in rows:
            try:
                ring.decrypt(ciphertext, col.table, col.column, str(row_id))
                ok += 1
            except DecryptionError:
                result["failed_samples"] += 1
                log.warning("%s row %s does not decrypt (tampered or moved)", col.label, row_id)
        if rows and not ok:
            raise ConfigError(
                f"CONNECT_ENCRYPTION_KEYS: cannot decrypt existing data: key id {kid} does not decrypt "
                f"{col.label} (wrong key or tampered data)")
    return counts
