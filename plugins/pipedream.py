"""Built-in plugin: the ``pipedream_account`` action connector (Pipedream Connect).

An app requirement ``{"type": "pipedream_account", "spec": {"data": {"app_slug": "gmail"}}}``
is completed once the end user has linked a Gmail account in the app's Pipedream
Connect project. The plugin speaks the platform's REST API over HTTP, through the
service's guarded client, at the credential's ``settings.api_base_url``.

Configuration: one Credential with ``connector_name`` ``pipedream`` holds the
workspace OAuth client (``oauth_client_id``, ``oauth_client_secret``, encrypted) and
``settings`` ``{"project_id": "proj_…", "environment": "development"|"production",
"api_base_url": "https://api.pipedream.com"}`` (validated by :class:`PipedreamSettings`).
Which credential serves an app follows the OAuth rule: the app's own (``read_access``
``APP``), else one shared with it (``ORGANIZATION`` or ``SPECIFIC_APPS``); two at the same
level need ``spec.data.credential_id``.

Platform API used (request and response shapes as documented by Pipedream):

- API token, client-credentials grant with a JSON body
  ``{"grant_type": "client_credentials", "client_id", "client_secret"}`` →
  ``{"access_token", "token_type", "expires_in"}``:
  https://pipedream.com/docs/connect/api-reference/create-oauth-token and
  https://pipedream.com/docs/connect/api-reference/authentication (tokens last one hour).
  The token is cached on the credential (``secret_state_encrypted``, encrypted JSON
  ``{"access_token", "expires_at", "client_id", "api_base_url"}``) and reused by every
  worker until a minute before it expires; a 401 from the API drops it and retries once.
- ``POST /v1/connect/{project_id}/tokens`` with ``Authorization: Bearer``, the
  ``x-pd-environment`` header and ``{"external_user_id", "success_redirect_uri",
  "error_redirect_uri", "webhook_uri"}`` → ``{"token", "expires_at", "connect_link_url"}``:
  https://pipedream.com/docs/connect/api-reference/create-connect-token; the link gets
  ``app=<app_slug>`` added as https://pipedream.com/docs/connect/managed-auth/connect-link says.
  The hosted page lets its link form go to ``https://pipedream.com`` (the link page) and to
  the origin of the credential's ``api_base_url`` (a test or self-hosted platform) only:
  :attr:`PipedreamAccount.link_origins`.
- ``GET /v1/connect/{project_id}/accounts?external_user_id=…&app_id=…&limit=…&after=…`` →
  ``{"data": [{"id", "name", "external_id", "healthy", "dead", "app": {"name_slug", …},
  "created_at", "updated_at"}], "page_info": {"count", "total_count", "start_cursor",
  "end_cursor"}}``: https://pipedream.com/docs/connect/api-reference/list-accounts, whose
  query parameter ``app_id`` takes "the app slug or ID to filter accounts by" (older
  guides called it ``app``). The plugin filters the answer by ``app.name_slug`` again
  itself, so an account of another app is never recorded whatever the platform does.
- ``GET /v1/connect/{project_id}/accounts/{account_id}``:
  https://pipedream.com/docs/connect/api-reference/retrieve-account.
- ``DELETE /v1/connect/{project_id}/accounts/{account_id}`` when the connection is deleted:
  https://pipedream.com/docs/connect/managed-auth/users.
- Webhooks ``CONNECTION_SUCCESS`` (``connect_token``, ``environment``, ``account``) and
  ``CONNECTION_ERROR`` (``error``): https://pipedream.com/docs/connect/webhooks. A success
  counts only after the account is fetched from the platform and found among the user's
  accounts for the requirement's app.
- External users (ids up to 250 characters, the ``x-pd-environment`` header):
  https://pipedream.com/docs/connect/api.

``external_user_id`` is ``"cs-" + sha256(app id + "\\n" + user id)`` in hex: stable for a
user of an app, different between apps, and it reveals neither id to the platform. The
``webhook_uri`` handed to the platform does not either: its last segment is an encrypted,
signed reference (``connect_service.api.accounts``).

Statuses reads look the user's accounts up at most once per ``account_lookup_seconds``
(default 60) per user and requirement, whatever else happens (starting a link does not
lift the throttle): a link shows up through the ``CONNECTION_SUCCESS`` webhook at once,
or through the next lookup after that.

A linked account is a Connection row (type and integration ``pipedream_account``,
connector ``pipedream``, ``app_slug`` column set, no requirement id) whose encrypted
settings are ``{"account_id", "app_slug", "healthy", "dead", "external_user_id",
"project_id", "environment"}``: everything a backend needs to act with the account
through Pipedream, and no platform secret. It is ``active`` while the account is healthy
and ``error`` when it is dead, unhealthy or gone, which makes the requirement pending again.
"""
from __future__ import annotations

import datetime
import hashlib
import logging
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import peewee
from flask import current_app
from marshmallow import Schema, ValidationError, post_load, validate

from connect_service import ConnectionType, errors, fields, hookimpl, oauth
from connect_service.connections import notify_activated, notify_failed, read_settings, seal_settings
from connect_service.crypto import DecryptionError
from connect_service.db import database, db_now, is_postgres, write_transaction
from connect_service.http import GuardedClient, OutboundError
from connect_service.models import AccountLookup, App, Connection, Credential, Requirement, utcnow

log = logging.getLogger(__name__)

CONNECTOR = "pipedream"
TYPE_NAME = "pipedream_account"
DEFAULT_API_BASE_URL = "https://api.pipedream.com"
#: a cached API token is replaced this long before it expires
TOKEN_MARGIN_SECONDS = 60
#: the platform's tokens last an hour (authentication docs) when ``expires_in`` is missing
DEFAULT_TOKEN_SECONDS = 3600
#: connect tokens last four hours (connect-token docs) when ``expires_at`` is missing
CONNECT_TOKEN_SECONDS = 4 * 3600
#: pages of accounts read per lookup (a user rarely has more than a few accounts per app)
MAX_PAGES = 20
#: associated data (table, column, credential id) of the client secret, as the credentials API stores
#: it (JSON-encoded string), and of the cached API token
STATE_TABLE, STATE_COLUMN = "credential", "secret_state"


def _validate_api_base_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValidationError("must be a plain http(s) base URL without credentials, query or fragment")


class PipedreamSettings(Schema):
    """A pipedream credential's ``settings`` (non-secret)."""

    project_id = fields.String(required=True, validate=validate.Regexp(
        r"^proj_[A-Za-z0-9]+$", error="must be a Pipedream project id such as proj_abc123"),
        metadata={"label": "Project ID", "placeholder": "proj_abc123"})
    environment = fields.String(load_default="production", validate=validate.OneOf(
        ["development", "production"], error="must be development or production"),
        metadata={"label": "Environment"})
    api_base_url = fields.Url(load_default=DEFAULT_API_BASE_URL, validate=_validate_api_base_url,
                              metadata={"label": "API base URL",
                                        "help": "the platform's origin, without /v1 (tests point it at a local server)"})

    @post_load
    def _strip(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["api_base_url"] = data["api_base_url"].rstrip("/")
        return data


class PlatformError(Exception):
    """The platform could not be reached or answered an error; ``reason`` is short and secret-free."""

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


def external_user_id(app_id: str, user_id: str) -> str:
    """The platform's ``external_user_id`` for one end user of one app (stable, opaque)."""
    return "cs-" + hashlib.sha256(f"{app_id}\n{user_id}".encode()).hexdigest()


def _keyring():
    return current_app.extensions["connect_keyring"]


def _settings() -> dict[str, Any]:
    return current_app.config["CONNECT"]


def _iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.timezone.utc).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# --- which credential serves an app -----------------------------------------------------------

def find_credential(app: App, requirement: Requirement) -> tuple[Credential, dict[str, Any]]:
    """The pipedream credential serving ``app`` (the OAuth rule, any grant type) and its loaded settings."""
    wanted = (requirement.spec.get("data") or {}).get("credential_id")
    cred = oauth.select_credential(app, CONNECTOR, credential_id=wanted, grant_types=None)
    try:
        cfg = PipedreamSettings().load(cred.settings or {})
    except ValidationError as exc:
        raise errors.BadRequest(errors.flatten_messages(exc.messages, "credential.settings")) from None
    if not cred.oauth_client_id or not cred.oauth_client_secret_encrypted:
        raise errors.BadRequest({"credential": "the pipedream credential has no OAuth client id and secret"})
    return cred, cfg


# --- the platform API -----------------------------------------------------------------------

class PipedreamClient:
    """The Connect REST API of one project, authenticated with the credential's cached API token."""

    def __init__(self, credential: Credential, cfg: dict[str, Any]):
        self.credential = credential
        self.base = cfg["api_base_url"]
        self.project_id = cfg["project_id"]
        self.environment = cfg["environment"]
        settings = _settings()
        self.http = GuardedClient(allowed_private_hosts=settings["allowed_private_hosts"],
                                  timeout=settings["http_timeout_seconds"])

    def close(self) -> None:
        self.http.close()

    # -- API token, cached on the credential row so every worker shares it

    def _cached_token(self) -> str | None:
        row = Credential.select(Credential.secret_state_encrypted).where(
            Credential.id == self.credential.id).first()
        if row is None or not row.secret_state_encrypted:
            return None
        try:
            state = _keyring().decrypt_json(row.secret_state_encrypted, STATE_TABLE, STATE_COLUMN,
                                            self.credential.id)
        except (DecryptionError, ValueError):
            return None
        expires = _parse_time(state.get("expires_at"))
        if (not state.get("access_token") or expires is None
                or state.get("client_id") != self.credential.oauth_client_id
                or state.get("api_base_url") != self.base
                or (expires - _now()).total_seconds() <= TOKEN_MARGIN_SECONDS):
            return None
        return state["access_token"]

    def _fetch_token(self) -> str:
        secret = oauth.client_secret(self.credential)
        try:
            resp = self.http.post(f"{self.base}/v1/oauth/token", json={
                "grant_type": "client_credentials", "client_id": self.credential.oauth_client_id,
                "client_secret": secret}, headers={"Accept": "application/json"})
        except OutboundError as exc:
            raise PlatformError(f"could not reach Pipedream: {exc.reason}") from None
        if resp.status_code in (400, 401, 403):
            raise PlatformError(f"Pipedream refused the credential's OAuth client (HTTP {resp.status_code})",
                                resp.status_code)
        data = self._json(resp)
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise PlatformError("Pipedream's token response has no access_token")
        try:
            lifetime = int(data.get("expires_in") or DEFAULT_TOKEN_SECONDS)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_SECONDS
        state = {"access_token": token, "expires_at": _iso(_now() + datetime.timedelta(seconds=lifetime)),
                 "client_id": self.credential.oauth_client_id, "api_base_url": self.base}
        sealed = _keyring().encrypt_json(state, STATE_TABLE, STATE_COLUMN, self.credential.id)
        Credential.update(secret_state_encrypted=sealed).where(Credential.id == self.credential.id).execute()
        return token

    @staticmethod
    def _json(resp) -> dict[str, Any]:
        if resp.status_code >= 400:
            raise PlatformError(f"Pipedream answered HTTP {resp.status_code}", resp.status_code)
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise PlatformError("Pipedream sent a response that is not a JSON object", resp.status_code)
        return data

    def _call(self, method: str, path: str, **kwargs: Any):
        """One API call with the cached token; a 401 fetches a new token and retries once."""
        token = self._cached_token()
        for attempt in range(2):
            if token is None:
                token = self._fetch_token()
            headers = {"Authorization": f"Bearer {token}", "x-pd-environment": self.environment,
                       "Accept": "application/json"}
            try:
                resp = self.http.request(method, f"{self.base}{path}", headers=headers, **kwargs)
            except OutboundError as exc:
                raise PlatformError(f"could not reach Pipedream: {exc.reason}") from None
            if resp.status_code == 401 and attempt == 0:
                token = None
                continue
            return resp
        raise PlatformError("Pipedream refused a fresh API token (HTTP 401)", 401)

    def _project_path(self, suffix: str) -> str:
        return f"/v1/connect/{quote(self.project_id, safe='')}{suffix}"

    def create_connect_token(self, user: str, success_uri: str, error_uri: str, webhook_uri: str) -> dict:
        resp = self._call("POST", self._project_path("/tokens"), json={
            "external_user_id": user, "success_redirect_uri": success_uri,
            "error_redirect_uri": error_uri, "webhook_uri": webhook_uri})
        return self._json(resp)

    def list_accounts(self, user: str, app_slug: str) -> list[dict[str, Any]]:
        """Every account of ``user`` the platform lists for ``app_slug`` (follows ``page_info`` cursors).

        Asks with the documented ``app_id`` filter; callers still check each account's app.
        """
        found: list[dict[str, Any]] = []
        params = {"external_user_id": user, "app_id": app_slug, "limit": 100}
        for _ in range(MAX_PAGES):
            data = self._json(self._call("GET", self._project_path("/accounts"), params=params))
            page = data.get("data")
            if not isinstance(page, list):
                raise PlatformError("Pipedream's account list has no data array")
            found.extend(a for a in page if isinstance(a, dict) and isinstance(a.get("id"), str))
            info = data.get("page_info") or {}
            total, cursor = info.get("total_count"), info.get("end_cursor")
            if not page or not cursor or not isinstance(total, int) or len(found) >= total:
                return found
            params = dict(params, after=cursor)
        return found

    def get_account(self, account_id: str) -> dict[str, Any] | None:
        resp = self._call("GET", self._project_path(f"/accounts/{quote(account_id, safe='')}"))
        if resp.status_code == 404:
            return None
        return self._json(resp)

    def delete_account(self, account_id: str) -> None:
        resp = self._call("DELETE", self._project_path(f"/accounts/{quote(account_id, safe='')}"))
        if resp.status_code not in (200, 202, 204, 404):
            raise PlatformError(f"Pipedream answered HTTP {resp.status_code}", resp.status_code)


@contextmanager
def platform(credential: Credential, cfg: dict[str, Any]) -> Iterator[PipedreamClient]:
    """A :class:`PipedreamClient` whose pooled connections are closed afterwards."""
    client = PipedreamClient(credential, cfg)
    try:
        yield client
    finally:
        client.close()


# --- recording linked accounts ----------------------------------------------------------------

def _hashed_key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _lookup_key(app: App, user_id: str, requirement: Requirement) -> str:
    return "pipedream:" + _hashed_key(app.id, user_id, requirement.public_id)


def claim_lookup(app: App, user_id: str, requirement: Requirement, interval: int) -> bool:
    """True when this worker may ask the platform now (at most once per ``interval`` s per user+requirement).

    The time of the last lookup is an ``AccountLookup`` row, compared with the database clock,
    so every worker and host shares the throttle. Nothing resets it early.
    """
    key = _lookup_key(app, user_id, requirement)
    now = db_now()
    last = AccountLookup.select(AccountLookup.checked_at).where(AccountLookup.key == key).scalar()
    if last is not None and last > now - datetime.timedelta(seconds=interval):
        return False  # the common case answers without taking a write lock
    with write_transaction():
        claimed = (AccountLookup.update(checked_at=now)
                   .where(AccountLookup.key == key,
                          AccountLookup.checked_at <= now - datetime.timedelta(seconds=interval)).execute())
        if claimed:
            return True
        try:
            with database.atomic():
                AccountLookup.create(key=key, checked_at=now)
        except peewee.IntegrityError:  # looked up recently (by us or another worker)
            return False
    return True


def _lock_user_app(app: App, user_id: str, app_slug: str) -> None:
    """Serialise writers of one user's rows for one platform app (inside a write transaction).

    SQLite's IMMEDIATE transaction already holds the database write lock; on PostgreSQL a
    row lock on an ``AccountLookup`` row plays the mutex, so a webhook and a lookup that
    run at once cannot both insert the same account.
    """
    if not is_postgres():
        return
    key = "pipedream-lock:" + _hashed_key(app.id, user_id, app_slug)
    AccountLookup.insert(key=key, checked_at=utcnow()).on_conflict_ignore().execute()
    list(AccountLookup.select(AccountLookup.key).where(AccountLookup.key == key).for_update())


def app_slug_of(account: dict[str, Any]) -> str | None:
    """The platform app of an account (``app.name_slug``); None when the answer has no ``app``.

    A malformed ``app`` (not an object with a string ``name_slug``) gives ``""``, which
    matches no requirement.
    """
    app = account.get("app")
    if app is None:
        return None
    slug = app.get("name_slug") if isinstance(app, dict) else None
    return slug if isinstance(slug, str) else ""


def _status_of(account: dict[str, Any]) -> tuple[str, str | None]:
    if account.get("dead"):
        return "error", "the account is dead on Pipedream: the user must connect it again"
    if account.get("healthy") is False:
        return "error", "the account is unhealthy on Pipedream: the user may need to connect it again"
    return "active", None


def record_accounts(app: App, user_id: str, app_slug: str, credential: Credential, cfg: dict[str, Any],
                    accounts: list[dict[str, Any]]) -> None:
    """Make the user's connection rows for ``app_slug`` match the platform's complete list ``accounts``.

    New accounts become rows, known ones are updated in place, rows whose account is no
    longer listed go to ``error``. Lifecycle hooks run after the transaction commits.
    """
    user = external_user_id(app.id, user_id)
    accounts = [a for a in accounts if app_slug_of(a) in (app_slug, None)]
    changed: list[Connection] = []  # rows whose status changed (hooks to notify)
    now = utcnow()
    with write_transaction():
        _lock_user_app(app, user_id, app_slug)
        rows = list(Connection.select().where(
            Connection.app == app.id, Connection.customer_id == user_id,
            Connection.connector_name == CONNECTOR, Connection.app_slug == app_slug).order_by(Connection.created_at))
        known: dict[str, tuple[Connection, dict[str, Any]]] = {}
        for row in rows:
            try:
                stored = read_settings(row)
            except DecryptionError:
                log.warning("pipedream connection %s: settings do not decrypt", row.id)
                continue
            if isinstance(stored.get("account_id"), str):
                known.setdefault(stored["account_id"], (row, stored))
        for account in accounts:
            status, reason = _status_of(account)
            settings = {"account_id": account["id"], "app_slug": app_slug,
                        "healthy": account.get("healthy"), "dead": account.get("dead"),
                        "external_user_id": user, "project_id": cfg["project_id"],
                        "environment": cfg["environment"]}
            row, stored = known.get(account["id"], (None, None))
            if row is None:
                row = Connection(org=app.org_id, app=app.id, customer_id=user_id, requirement_id=None,
                                 type=TYPE_NAME, connector_name=CONNECTOR, integration_id=TYPE_NAME,
                                 app_slug=app_slug, credential=credential.id, created_at=now,
                                 display_name=str(account.get("name") or "")[:200] or None)
                row.settings_encrypted = seal_settings(row, settings)
                row.status, row.status_reason, row.updated_at = status, reason, now
                row.save(force_insert=True)
                changed.append(row)
                continue
            if (row.status, row.status_reason, stored) == (status, reason, settings):
                continue
            status_changed = row.status != status
            row.settings_encrypted = seal_settings(row, settings)
            row.status, row.status_reason, row.updated_at = status, reason, now
            # only the fields this sync owns: metadata, display_name, disabled stay the admin's
            Connection.update(settings_encrypted=row.settings_encrypted, status=status, status_reason=reason,
                              updated_at=now, credential=credential.id).where(Connection.id == row.id).execute()
            if status_changed:
                changed.append(row)
        listed = {a["id"] for a in accounts}
        for account_id, (row, _stored) in known.items():
            if account_id in listed or row.status == "error":
                continue
            row.status, row.status_reason, row.updated_at = "error", "the account no longer exists on Pipedream", now
            Connection.update(status=row.status, status_reason=row.status_reason, updated_at=now).where(
                Connection.id == row.id).execute()
            changed.append(row)
    for row in changed:
        if row.status == "active":
            notify_activated(row)
        else:
            notify_failed(row, row.status_reason or "")


# --- the connection type ------------------------------------------------------------------------

class PipedreamAccount(ConnectionType):
    """An account the end user links in a Pipedream Connect project (see the module docstring)."""

    name = TYPE_NAME
    title = "Pipedream Connect account"
    auth = "action_account"
    connector_name = CONNECTOR
    description = "An account (Gmail, Slack, …) the end user links through Pipedream Connect."
    settings_schema = PipedreamSettings
    #: Pipedream's hosted link page, and the configured platform (a local server in tests)
    link_origins = ("https://pipedream.com", "{api_base_url}")

    @staticmethod
    def _app_slug(requirement: Requirement) -> str:
        return (requirement.spec.get("data") or {}).get("app_slug") or ""

    def link_account(self, app: App, user_id: str, requirement: Requirement, *, webhook_uri: str,
                     success_redirect_uri: str, error_redirect_uri: str) -> dict[str, Any]:
        """Create a platform connect token for the user; ``{"connect_link_url", "expires_at"}``.

        Raises ``BadRequest`` without a usable credential and ``BadGateway`` when the platform fails.
        """
        slug = self._app_slug(requirement)
        credential, cfg = find_credential(app, requirement)
        try:
            with platform(credential, cfg) as client:
                data = client.create_connect_token(external_user_id(app.id, user_id), success_redirect_uri,
                                                   error_redirect_uri, webhook_uri)
        except PlatformError as exc:
            log.warning("pipedream connect token failed: %s", exc.reason)
            raise errors.BadGateway({"platform": exc.reason}) from None
        link = data.get("connect_link_url")
        parts = urlsplit(link) if isinstance(link, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise errors.BadGateway({"platform": "Pipedream's connect token response has no connect_link_url"})
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "app"]
        query.append(("app", slug))
        expires = _parse_time(data.get("expires_at"))
        if data.get("expires_at") is not None and expires is None:
            raise errors.BadGateway({"platform": "Pipedream's connect token response has an invalid expires_at"})
        expires = expires or _now() + datetime.timedelta(seconds=CONNECT_TOKEN_SECONDS)
        return {"connect_link_url": urlunsplit(parts._replace(query=urlencode(query))), "expires_at": _iso(expires)}

    def sync_status(self, app: App, user_id: str, requirement: Requirement) -> None:
        """Look the user's accounts for the requirement's app up, at most once per ``account_lookup_seconds``.

        Never raises for a platform outage or a missing credential: statuses then answer
        from the recorded rows.
        """
        slug = self._app_slug(requirement)
        if not slug or not claim_lookup(app, user_id, requirement, _settings()["account_lookup_seconds"]):
            return
        try:
            credential, cfg = find_credential(app, requirement)
            with platform(credential, cfg) as client:
                accounts = client.list_accounts(external_user_id(app.id, user_id), slug)
        except PlatformError as exc:
            log.warning("pipedream account lookup failed: %s", exc.reason)
            return
        except errors.APIError as exc:
            log.warning("pipedream account lookup skipped: %s", exc.details)
            return
        record_accounts(app, user_id, slug, credential, cfg, accounts)

    def handle_webhook(self, app: App, user_id: str, requirement: Requirement, body: dict[str, Any]) -> dict:
        """Record a ``CONNECTION_SUCCESS`` after confirming the account with the platform.

        ``CONNECTION_ERROR`` is logged (the user may retry) and changes nothing. Raises
        ``BadRequest`` for a payload that does not name one of this user's accounts for the
        requirement's app, ``BadGateway`` when the platform cannot confirm it (the platform
        then delivers again).
        """
        event = body.get("event")
        if event == "CONNECTION_ERROR":
            log.info("pipedream connect flow failed for app %s requirement %s", app.id, requirement.public_id)
            return {"message": "recorded"}
        if event != "CONNECTION_SUCCESS":
            raise errors.BadRequest({"event": "must be CONNECTION_SUCCESS or CONNECTION_ERROR"})
        account = body.get("account")
        account_id = account.get("id") if isinstance(account, dict) else None
        if not isinstance(account_id, str) or not account_id.strip():
            raise errors.BadRequest({"account.id": "is required"})
        slug = self._app_slug(requirement)
        credential, cfg = find_credential(app, requirement)
        try:
            with platform(credential, cfg) as client:
                confirmed = client.get_account(account_id)
                owned = client.list_accounts(external_user_id(app.id, user_id), slug) if confirmed else []
        except PlatformError as exc:
            log.warning("pipedream webhook confirmation failed: %s", exc.reason)
            raise errors.BadGateway({"platform": exc.reason}) from None
        if confirmed is None:
            raise errors.BadRequest({"account.id": "is not an account on Pipedream"})
        if app_slug_of(confirmed) != slug:
            raise errors.BadRequest({"account.app": f"is not {slug!r}, the app this requirement asks for"})
        if account_id not in {a["id"] for a in owned}:
            raise errors.BadRequest({"account.id": "is not an account of this user"})
        owned = [dict(confirmed, id=account_id) if a["id"] == account_id else a for a in owned]
        record_accounts(app, user_id, slug, credential, cfg, owned)
        return {"message": "recorded"}

    def revoke_connection(self, connection: Connection) -> bool:
        """Delete the linked account on the platform before the connection row is removed.

        Best effort, like OAuth revocation: True when the platform confirmed (or the
        account was already gone); a platform failure is logged and gives False.
        """
        try:
            account_id = read_settings(connection).get("account_id")
        except DecryptionError:
            return False
        credential = Credential.get_or_none(Credential.id == connection.credential_id)
        if not isinstance(account_id, str) or credential is None:
            return False
        try:
            cfg = PipedreamSettings().load(credential.settings or {})
            with platform(credential, cfg) as client:
                client.delete_account(account_id)
        except ValidationError:
            log.warning("pipedream credential %s has invalid settings; account not deleted", credential.id)
            return False
        except PlatformError as exc:
            log.warning("pipedream account deletion failed: %s", exc.reason)
            return False
        return True


@hookimpl
def register_connection_types():
    return [PipedreamAccount]
