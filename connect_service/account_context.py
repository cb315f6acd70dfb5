"""The facade an ``ActionAccountType`` works through: one end user of one app, for one requirement.

Plugins never see tables: they get an :class:`AccountContext` and report what
the platform said as :class:`Account` values. The core keeps the rows (one
``Connection`` per linked account, keyed by the account id in its encrypted
settings), serialises writers, fires the lifecycle hooks, selects and
decrypts the serving credential and caches the platform token on it,
encrypted. ``docs/plugins.md`` ("Action-account types and their facade") is the reference
for plugin authors; everything here not listed there is internal.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import peewee
from marshmallow import ValidationError

from . import oauth

from . import errors, outbox
from .action_account_type import ActionAccountType
from .connections import notify_activated, notify_failed, read_settings, seal_settings
from .crypto import DecryptionError
from .db import database, db_now, is_postgres, write_transaction
from .extensions import keyring, registry
from .outbound import outbound_client
from .models import AccountLookup, Connection, Credential, utcnow
from .requirements import requirement_status, version_requirements
from .timestamps import iso

log = logging.getLogger(__name__)

#: associated data of the token cache: the column it lives in, bound to the credential id
CACHE_TABLE, CACHE_COLUMN = "credential", "secret_state"


class PlatformError(Exception):
    """The platform could not be reached or answered an error; ``reason`` is short and secret-free."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Account:
    """One account as the platform reports it, for :meth:`AccountContext.record_accounts`.

    ``settings`` (JSON) is stored encrypted on the connection, with ``account_id``
    added; it is what the app's backend reads, so it holds no platform secret.
    ``status`` is ``active`` or ``error`` (then ``reason`` says why).
    """

    id: str
    name: str | None = None
    status: str = "active"
    reason: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("Account.id must be a non-empty string")
        if self.status not in ("active", "error"):
            raise ValueError("Account.status must be 'active' or 'error'")


@dataclass(frozen=True)
class LinkedAccount:
    """An account the core has recorded: its connection id, status and stored settings."""

    connection_id: str
    account_id: str
    status: str
    status_reason: str | None
    settings: dict[str, Any]


def user_ref(app_id: str, user_id: str) -> str:
    """``"cs-" + sha256(app id, user id)``: stable per user of an app, reveals neither id."""
    return "cs-" + hashlib.sha256(f"{app_id}\n{user_id}".encode()).hexdigest()


def _hashed(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class TokenCache:
    """One encrypted platform token per credential, shared by every worker until shortly before it expires.

    An entry is bound to the credential's client id and settings: changing
    either makes it a miss.
    """

    def __init__(self, credential: PlatformCredential):
        self._cred = credential

    def _fingerprint(self) -> str:
        return _hashed(self._cred.client_id or "", json.dumps(self._cred.settings, sort_keys=True, default=str))

    def get(self, min_remaining_seconds: int = 60) -> str | None:
        """The cached token, unless missing, stale or expiring within ``min_remaining_seconds``."""
        sealed = Credential.select(Credential.secret_state_encrypted).where(
            Credential.id == self._cred.id).scalar()
        if not sealed:
            return None
        try:
            state = keyring().decrypt_json(sealed, CACHE_TABLE, CACHE_COLUMN, self._cred.id)
            expires = datetime.datetime.fromisoformat(state["expires_at"].replace("Z", "+00:00"))
        except (DecryptionError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=datetime.timezone.utc)
        remaining = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        if (not isinstance(state.get("access_token"), str) or state.get("fingerprint") != self._fingerprint()
                or remaining <= min_remaining_seconds):
            return None
        return state["access_token"]

    def put(self, token: str, expires_in: int) -> None:
        """Store ``token``, valid for ``expires_in`` seconds, for every worker."""
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=expires_in)
        state = {"access_token": token, "expires_at": iso(expires), "fingerprint": self._fingerprint()}
        sealed = keyring().encrypt_json(state, CACHE_TABLE, CACHE_COLUMN, self._cred.id)
        Credential.update(secret_state_encrypted=sealed).where(Credential.id == self._cred.id).execute()


class PlatformCredential:
    """The credential serving the type for this app: id, client id, loaded ``settings``, secret, token cache."""

    def __init__(self, row: Credential, settings_: dict[str, Any]):
        self._row = row
        self.id: str = row.id
        self.client_id: str | None = row.oauth_client_id
        self.settings: dict[str, Any] = settings_
        self.token_cache = TokenCache(self)

    @classmethod
    def load(cls, row: Credential, type_: type[ActionAccountType]) -> PlatformCredential:
        """Load ``settings`` through the type's ``settings_schema``; 400 naming ``credential.settings.*``."""
        raw = row.settings or {}
        if type_.settings_schema is None:
            return cls(row, dict(raw))
        try:
            return cls(row, type_.settings_schema().load(raw))
        except ValidationError as exc:
            raise errors.BadRequest(errors.flatten_messages(exc.messages, "credential.settings")) from None

    def client_secret(self) -> str | None:
        """The decrypted client secret (None when the credential has none). Never log it."""
        return oauth.client_secret(self._row)


class AccountContext:
    """What an ``ActionAccountType`` method receives (see ``docs/plugins.md``).

    ``app_id``, ``user_id`` (the app's own id for its end user: never send it to a
    platform), ``user_ref`` (an opaque, stable stand-in that may be sent),
    ``requirement_id`` and ``spec`` (the requirement's loaded ``spec.data``; None
    and ``{}`` in ``revoke_account``), ``key`` (the type's ``account_key``),
    ``credential`` (selected on first use; 400 when none serves the app) and
    ``http`` (a ``GuardedClient``, closed by the core afterwards).
    """

    def __init__(self, type_: type[ActionAccountType], *, app: Any, user_id: str, key: str,
                 requirement: Any = None, spec: dict[str, Any] | None = None,
                 credential: Credential | None = None):
        self.type = type_
        self._app = app
        self.app_id: str = app.id
        self.user_id = user_id
        self.user_ref = user_ref(app.id, user_id)
        self.requirement_id: str | None = requirement.public_id if requirement is not None else None
        self._requirement = requirement
        self.spec: dict[str, Any] = spec or {}
        self.key = key
        self._credential = PlatformCredential.load(credential, type_) if credential is not None else None
        self.http = outbound_client()

    def close(self) -> None:
        self.http.close()

    @property
    def credential(self) -> PlatformCredential:
        """The serving credential: the app's own, else one shared with it; ``spec.data.credential_id`` picks."""
        if self._credential is None:
            wanted = self.spec.get("credential_id") if self._requirement is not None else None
            try:
                row = oauth.select_credential(self._app, self.type.connector_name, credential_id=wanted,
                                              grant_types=None)
            except errors.BadRequest as exc:  # end users read this: the org's setup goes to the log
                log.warning("app %s: no usable %s credential: %s", self.app_id, self.type.connector_name,
                            exc.details or exc.message)
                raise errors.BadRequest({"requirement": "cannot be linked right now: the app's setup is "
                                                        "incomplete (its administrators can see why in the "
                                                        "service's log)"}) from None
            self._credential = PlatformCredential.load(row, self.type)
        return self._credential

    def _rows(self) -> list[Connection]:
        return list(Connection.select().where(
            Connection.app == self.app_id, Connection.customer_id == self.user_id,
            Connection.connector_name == self.type.connector_name, Connection.account_key == self.key)
            .order_by(Connection.created_at))

    def _known(self, rows: list[Connection]) -> dict[str, tuple[Connection, dict[str, Any]]]:
        known: dict[str, tuple[Connection, dict[str, Any]]] = {}
        for row in rows:
            try:
                stored = read_settings(row)
            except DecryptionError:
                log.warning("%s connection %s: settings do not decrypt", self.type.connector_name, row.id)
                continue
            if isinstance(stored.get("account_id"), str):
                known.setdefault(stored["account_id"], (row, stored))
        return known

    def linked_accounts(self) -> list[LinkedAccount]:
        """The accounts recorded for this user and key, oldest first (any status)."""
        return [LinkedAccount(row.id, account_id, row.status, row.status_reason, stored)
                for account_id, (row, stored) in self._known(self._rows()).items()]

    def record_accounts(self, accounts: list[Account], *, complete: bool = True,
                        gone_reason: str = "the account no longer exists on the platform") -> None:
        """Make the recorded accounts for this user and key match ``accounts``.

        New accounts become connections, known ones are updated in place (their
        ``display_name``, ``metadata`` and ``disabled`` stay the app's). With
        ``complete`` (``accounts`` is everything the platform has), recorded
        accounts missing from it go to ``error`` with ``gone_reason``. Hooks
        (``connection_activated`` / ``connection_failed``) fire after the commit
        for every status change.
        """
        credential = self.credential
        changed: list[Connection] = []
        now = utcnow()
        with write_transaction():
            self._lock()
            known = self._known(self._rows())
            for account in accounts:
                stored_settings = {**account.settings, "account_id": account.id}
                row, stored = known.get(account.id, (None, None))
                if row is None:
                    row = Connection(org=self._app.org_id, app=self.app_id, customer_id=self.user_id,
                                     requirement_id=None, type=self.type.name,
                                     connector_name=self.type.connector_name, integration_id=self.type.name,
                                     account_key=self.key, credential=credential.id, created_at=now,
                                     display_name=(account.name or "")[:200] or None)
                    row.settings_encrypted = seal_settings(row, stored_settings)
                    row.status, row.status_reason, row.updated_at = account.status, account.reason, now
                    row.save(force_insert=True)
                    known[account.id] = (row, stored_settings)
                    changed.append(row)
                    continue
                if (row.status, row.status_reason, stored) == (account.status, account.reason, stored_settings):
                    continue
                status_changed = row.status != account.status
                row.settings_encrypted = seal_settings(row, stored_settings)
                row.status, row.status_reason, row.updated_at = account.status, account.reason, now
                Connection.update(settings_encrypted=row.settings_encrypted, status=row.status,
                                  status_reason=row.status_reason, updated_at=now,
                                  credential=credential.id).where(Connection.id == row.id).execute()
                if status_changed:
                    changed.append(row)
            listed = {a.id for a in accounts}
            for account_id, (row, _stored) in known.items():
                if not complete or account_id in listed or row.status == "error":
                    continue
                row.status, row.status_reason, row.updated_at = "error", gone_reason, now
                Connection.update(status=row.status, status_reason=row.status_reason, updated_at=now).where(
                    Connection.id == row.id).execute()
                changed.append(row)
            for row in changed:  # webhook events, in this transaction
                outbox.emit_connection(row, "connection.error" if row.status == "error" else (
                    "connection.created" if row.created_at == now else "connection.updated"))
            self._complete_requirements([row for row in changed if row.status == "active"])
        for row in changed:
            if row.status == "active":
                notify_activated(row)
            else:
                notify_failed(row, row.status_reason or "")

    def _complete_requirements(self, active: list[Connection]) -> None:
        """``requirement.completed`` (once) for each deployed requirement a newly active account fulfils."""
        if not active or self._app.deployed_version is None:
            return
        reg = registry()
        for req in version_requirements(self.app_id, self._app.deployed_version):
            for row in active:
                if requirement_status(req, [row], reg) == "completed":
                    outbox.emit_requirement_completed(row, req.public_id)

    def _lock(self) -> None:
        """Serialise writers of this user's rows for this key (inside the write transaction).

        SQLite's IMMEDIATE transaction already holds the database write lock; on
        PostgreSQL a row lock on an ``AccountLookup`` row is the mutex, so a
        webhook and a lookup running at once cannot both insert one account.
        """
        if not is_postgres():
            return
        key = f"{self.type.connector_name}-lock:" + _hashed(self.app_id, self.user_id, self.key)
        AccountLookup.insert(key=key, checked_at=utcnow()).on_conflict_ignore().execute()
        list(AccountLookup.select(AccountLookup.key).where(AccountLookup.key == key).for_update())


def claim_lookup(type_: type[ActionAccountType], app: Any, user_id: str, requirement: Any, interval: int) -> bool:
    """True when this worker may ask the platform now (once per ``interval`` s per user and requirement).

    The last lookup is an ``AccountLookup`` row compared with the database clock,
    so every worker and host shares the throttle; nothing resets it early.
    """
    key = f"{type_.connector_name}:" + _hashed(app.id, user_id, requirement.public_id)
    now = db_now()
    since = now - datetime.timedelta(seconds=interval)
    last = AccountLookup.select(AccountLookup.checked_at).where(AccountLookup.key == key).scalar()
    if last is not None and last > since:
        return False  # the common case answers without taking a write lock
    with write_transaction():
        if AccountLookup.update(checked_at=now).where(AccountLookup.key == key,
                                                       AccountLookup.checked_at <= since).execute():
            return True
        try:
            with database.atomic():
                AccountLookup.create(key=key, checked_at=now)
        except peewee.IntegrityError:
            return False  # looked up recently, by us or another worker
    return True
