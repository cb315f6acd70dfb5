"""Starting a flow: which credential serves it, which connection it completes, and the three ways in.

The three ways in are an end user's requirement (connect token or hosted
page), a credential's signed start link (org-level), and the embed
``initialise`` call (seed 004). Each ends in :func:`.authorize.begin_authorization`.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import peewee

from .. import errors, ratelimit, replay
from ..connection_types import ConnectionType
from ..db import is_postgres, write_transaction
from ..extensions import registry, settings
from ..models import App, Connection, Credential, Requirement, utcnow
from ..requirements import CONNECTION, connection_type_name, find_requirement
from ..signing import ExpiredSignature, InvalidSignature, sign, unsign
from .authorize import AuthorizationStart, begin_authorization, build_authorization_url, callback_url, hash_secret
from .provider import provider_for

log = logging.getLogger(__name__)

START_SALT = "connect-service.oauth2-start"
#: the ``replay`` purpose under which a used start link is remembered
START_PURPOSE = "start-link"


def credential_available_to(credential: Credential, app: App) -> bool:
    """Whether an app may use the credential (``read_access`` APP / ORGANIZATION / SPECIFIC_APPS)."""
    if credential.org_id != app.org_id:
        return False
    if credential.read_access == "APP":
        return credential.app_id == app.id
    if credential.read_access == "SPECIFIC_APPS":
        return app.slug in (credential.shared_app_slugs or []) or credential.app_id == app.id
    return True


def select_credential(app: App, connector_name: str, credential_id: str | None = None,
                      field: str = "credential",
                      grant_types: tuple[str, ...] | None = ("authorization_code",)) -> Credential:
    """The credential that serves ``connector_name`` for ``app`` (SPEC 4.1).

    The app's own (``read_access`` APP with this app) wins; else an
    ORGANIZATION or SPECIFIC_APPS one that includes the app. Two candidates
    at the same level are a 400 unless ``credential_id`` (a requirement's
    ``spec.data.credential_id``) picks one; none is a 400 with details.
    ``grant_types`` limits the candidates (``None``: any grant type, as an
    action-connector platform's client-credentials registration needs).
    """
    query = Credential.select().where(Credential.org == app.org_id, Credential.connector_name == connector_name)
    if grant_types is not None:
        query = query.where(Credential.oauth_grant_type.in_(list(grant_types)))
    rows = list(query.order_by(Credential.created_at, Credential.id))
    kind = "" if grant_types is None else "OAuth2 "
    usable = [c for c in rows if credential_available_to(c, app)]
    if credential_id:
        for cred in usable:
            if cred.id == credential_id:
                return cred
        raise errors.BadRequest({"spec.data.credential_id": f"{credential_id!r} is not a usable {kind}"
                                                            f"credential for {connector_name!r} available to this app"})
    own = [c for c in usable if c.read_access == "APP"]
    shared = [c for c in usable if c.read_access != "APP"]
    for level, label in ((own, "the app's own"), (shared, "organization-wide")):
        if len(level) == 1:
            return level[0]
        if len(level) > 1:
            ids = ", ".join(c.id for c in level)
            raise errors.BadRequest({field: f"{len(level)} {label} credentials serve {connector_name!r} ({ids}): "
                                            f"set spec.data.credential_id on the requirement to pick one"})
    raise errors.BadRequest({field: f"no {kind}credential for connector {connector_name!r} is available to this "
                                    f"app: create one with POST /v1/credentials (connector_name "
                                    f"{connector_name!r})"})


def _pending_connection(where: list, values: dict[str, Any], lock: peewee.Query | None = None) -> Connection:
    """Find the connection matching ``where`` or create it pending; an active one is left active.

    Re-authorizing an active connection keeps its old tokens working until
    the callback succeeds; a pending or failed one is reset to pending.

    Find-then-create is serialized so concurrent starts share one row: on
    SQLite by the write transaction itself (``BEGIN IMMEDIATE``), on
    PostgreSQL by locking ``lock`` (the app or credential row the
    connection belongs to) with ``SELECT … FOR NO KEY UPDATE`` first, which
    does not block inserts that merely reference that row. The unique
    index on (app, customer, requirement) still backs up requirement flows.
    """
    for _ in range(3):
        try:
            with write_transaction():
                if lock is not None and is_postgres():
                    list(lock.for_update("FOR NO KEY UPDATE"))
                conn = Connection.select().where(*where).order_by(Connection.created_at).first()
                now = utcnow()
                if conn is None:
                    with Connection._meta.database.atomic():
                        return Connection.create(status="pending", created_at=now, updated_at=now, **values)
                if conn.status != "active":
                    Connection.update(status="pending", status_reason=None, updated_at=now, **values).where(
                        Connection.id == conn.id).execute()
                    return Connection.get_by_id(conn.id)
                return conn
        except peewee.IntegrityError:  # a concurrent first start won: use its row
            continue
    raise errors.Conflict()

def start_authorization(app: App, user_id: str, requirement: Requirement, *, return_to: str | None = None,
                        browser_nonce: str | None = None) -> AuthorizationStart:
    """Start the OAuth2 flow for one end user's requirement; return its :class:`AuthorizationStart`.

    Picks the credential (:func:`select_credential`), creates or reuses the
    user's connection for the requirement (pending; an active one stays
    active with its old tokens until the callback succeeds), stores the
    session and builds the URL. 400 with details when the requirement is not
    an OAuth2 connection or no credential serves it. ``return_to`` is
    trusted: callers validate it (the API demands an exact ``return_urls``
    match; the hosted page passes its own URL). ``browser_nonce`` binds the
    flow to the browser carrying it in the cookie named
    ``AuthorizationStart.nonce_cookie``.
    """
    if requirement.type != CONNECTION:
        raise errors.BadRequest({"requirement": "is fulfilled by linking an account: "
                                                f"POST /v1/connect/requirements/{requirement.public_id}/accounts"})
    type_name = connection_type_name(requirement)
    cls = registry().get(type_name)
    if cls is None:
        raise errors.BadRequest({"requirement": f"{type_name!r} is no longer a registered connection type"})
    if cls.auth != "oauth2":
        raise errors.BadRequest({"requirement": f"{type_name} is not OAuth2-based: submit its credentials with "
                                                f"POST /v1/connect/requirements/{requirement.public_id}/credentials"})
    data = requirement.spec.get("data") or {}
    try:
        credential = select_credential(app, cls.connector_name, data.get("credential_id"))
    except errors.BadRequest as exc:
        raise _for_end_user(app, requirement, exc) from None
    limit_starts(app, user_id)
    conn = _pending_connection(
        [Connection.app == app.id, Connection.customer_id == user_id,
         Connection.requirement_id == requirement.public_id],
        {"org": app.org_id, "app": app.id, "customer_id": user_id, "requirement_id": requirement.public_id,
         "type": cls.name, "connector_name": cls.connector_name, "integration_id": cls.name,
         "credential": credential.id},
        lock=App.select(App.id).where(App.id == app.id),
    )
    try:
        return begin_authorization(credential, conn, return_to=return_to, browser_nonce=browser_nonce)
    except errors.BadRequest as exc:
        raise _for_end_user(app, requirement, exc) from None


def _for_end_user(app: App, requirement: Requirement, exc: errors.BadRequest) -> errors.BadRequest:
    """An end user's 400 without the org's setup (credential ids, provider URLs); the log keeps it."""
    log.warning("app %s requirement %s cannot start OAuth2: %s", app.id, requirement.public_id,
                exc.details or exc.message)
    return errors.BadRequest({"requirement": "cannot be connected right now: the app's OAuth2 setup is "
                                             "incomplete (its administrators can see why in the service's log)"})


def limit_starts(app: App, user_id: str) -> None:
    """Count one OAuth2 start of ``user_id`` in ``app``: 429 past the per-(app, user) or per-address limit.

    ``rate_limit_oauth_starts_per_minute`` per (app, end user) and
    ``rate_limit_oauth_starts_per_address_per_minute`` per client address;
    both API starts and the hosted page's Connect buttons count.
    """
    cfg = settings()
    user = hash_secret(f"{app.id}\n{user_id}")[:32]  # any user id fits the bucket name
    ratelimit.hit(f"oauth-start:{app.id}:{user}", int(cfg["rate_limit_oauth_starts_per_minute"]))
    ratelimit.hit(f"oauth-start-addr:{ratelimit.client_address()}",
                  int(cfg["rate_limit_oauth_starts_per_address_per_minute"]))


def pending_connection_for(credential: Credential, cls: type[ConnectionType], *, app: App | None,
                           customer_id: str | None) -> Connection:
    """The connection an embed (seed 004) or credential-level flow completes (created pending if new).

    ``app`` None is the org-level connection of the credential; else the
    app's connection for ``customer_id`` (None: app-level) and this connector.
    """
    where = [Connection.org == credential.org_id, Connection.requirement_id.is_null()]
    where.append(Connection.customer_id.is_null() if customer_id is None else Connection.customer_id == customer_id)
    if app is None:
        where += [Connection.app.is_null(), Connection.credential == credential.id]
        lock = Credential.select(Credential.id).where(Credential.id == credential.id)
    else:
        where += [Connection.app == app.id, Connection.connector_name == cls.connector_name]
        lock = App.select(App.id).where(App.id == app.id)
    values = {"org": credential.org_id, "app": app.id if app else None, "customer_id": customer_id,
              "requirement_id": None, "type": cls.name, "connector_name": cls.connector_name,
              "integration_id": cls.name, "credential": credential.id}
    return _pending_connection(where, values, lock=lock)


def is_exact_return_url(app: App, value: str) -> bool:
    """Whether ``value`` is byte-for-byte one of the app's ``return_urls`` (and an absolute http(s) URL).

    Lives with the flows because only they redirect to an app: an exact match,
    never a prefix, is what keeps the callback from being an open redirect.
    """
    if not isinstance(value, str) or value not in (app.return_urls or []):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and "\\" not in value


def start_for_requirement(app: App, user_id: str, requirement_id: str, *,
                          return_to: str | None = None) -> AuthorizationStart:
    """``POST …/requirements/<id>/oauth2/authorize``: ``return_to`` must be one of the app's return URLs."""
    requirement = find_requirement(app, requirement_id)
    if return_to is not None and not is_exact_return_url(app, return_to):
        raise errors.BadRequest({"return_to": "must exactly match one of the app's return_urls"})
    return start_authorization(app, user_id, requirement, return_to=return_to)


# --------------------------------------------------------------------------- signed start link


class StartRefused(Exception):
    """A start link that cannot start: the browser gets a page with ``message`` and ``status``."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message = message
        self.status = status


def credential_start_url(credential: Credential) -> str:
    """A signed, single-use URL of this service that starts the credential's org-level authorization.

    Valid for ``start_link_max_age_seconds`` (15 minutes by default) and for
    one start; every read of the credential hands out a fresh one. The
    access logs show its route as ``/v1/connect/oauth2/start/<signed>``.
    """
    value = sign(START_SALT, {"credential": credential.id, "org": credential.org_id, "n": secrets.token_urlsafe(16)})
    return f"{settings()['public_url']}/v1/connect/oauth2/start/{value}"


EXPIRED_LINK = "This link expired or was already used. Read the credential again for a fresh redirect_url."


def start_from_link(signed: str) -> tuple[AuthorizationStart, str]:
    """Begin the org-level flow of a :func:`credential_start_url`; return the start and its browser nonce.

    The link is the only credential the browser shows, so everything that can
    be wrong with it is a :class:`StartRefused` page, never an API error body.
    The link is used up here, before the flow starts: a second visit (or a
    link past ``start_link_max_age_seconds``) gets the "expired" page.
    """
    max_age = int(settings()["start_link_max_age_seconds"])
    try:
        value = unsign(START_SALT, signed, max_age)
    except ExpiredSignature:
        raise StartRefused(EXPIRED_LINK, 400) from None
    except InvalidSignature:
        raise StartRefused("This link is not valid.", 400) from None
    if not isinstance(value, dict) or not isinstance(value.get("n"), str):
        raise StartRefused(EXPIRED_LINK, 400)  # minted before links were single-use
    if not replay.claim(replay.key_for(START_PURPOSE, value["n"]), max_age + 60):
        raise StartRefused(EXPIRED_LINK, 400)
    credential = Credential.get_or_none(Credential.id == value.get("credential"),
                                        Credential.org == value.get("org"))
    if credential is None or credential.oauth_grant_type != "authorization_code":
        raise StartRefused("This credential no longer exists or does not use authorization_code.", 404)
    cls = registry().by_connector(credential.connector_name)
    if cls is None:
        raise StartRefused(f"The connector {credential.connector_name} is not installed.", 400)
    try:
        conn = pending_connection_for(credential, cls, app=None, customer_id=None)
        nonce = secrets.token_urlsafe(32)
        started = begin_authorization(credential, conn, browser_nonce=nonce)
    except errors.APIError as exc:
        detail = "; ".join(f"{k} {v}" for k, v in (exc.details or {}).items()) or exc.message
        raise StartRefused(f"The credential cannot start a sign-in: {detail}", 400) from None
    return started, nonce


# --------------------------------------------------------------------------- embed initialise (seed 004)


class EmbedTarget(NamedTuple):
    """The app (hub) and connection type an embed ``initialise`` URL names."""

    app: App
    cls: type[ConnectionType]


def embed_target(org_id: str, hub_id: str, connector_id: str) -> EmbedTarget:
    """The org's app ``hub_id`` and the OAuth-capable type serving ``connector_id``, else 404.

    Resolved before the body is read: an unknown path is a 404 whatever the body says.
    """
    app = App.get_or_none(App.id == hub_id, App.org == org_id)
    cls = registry().by_connector(connector_id)
    if app is None or cls is None or cls.auth == "credentials":
        raise errors.NotFound()
    return EmbedTarget(app, cls)


def initialise(target: EmbedTarget, data: dict[str, Any]) -> AuthorizationStart:
    """Seed 004's initialise: check the caller's view of the credential, then start its flow.

    ``data`` is the validated body. The caller must name the credential's own
    authorize URL and client id, so a stale embed fails loudly instead of
    sending users to the wrong client. The URL options are judged before
    anything is stored: a 400 leaves no pending connection.
    """
    app, cls = target
    org_id, connector_id = app.org_id, cls.connector_name
    ref = data["credential"]
    if ref["organisationId"] != org_id:
        raise errors.BadRequest({"credential.organisationId": "must be the id of your organization"})
    credential = Credential.get_or_none(Credential.id == ref["id"], Credential.org == org_id)
    if credential is None:
        raise errors.BadRequest({"credential.id": "is not a credential of this organization"})
    if credential.connector_name != connector_id:
        raise errors.BadRequest({"credential.id": f"serves connector {credential.connector_name!r}, "
                                                  f"not {connector_id!r}"})
    if credential.oauth_grant_type != "authorization_code":
        raise errors.BadRequest({"credential.id": "uses the client_credentials grant; "
                                                  "initialise needs authorization_code"})
    if not credential_available_to(credential, app):
        raise errors.BadRequest({"credential.id": "is not available to this app (see its read_access)"})
    details = {}
    if data["authorizeUrl"] != provider_for(credential).authorize_url:
        details["authorizeUrl"] = "must equal the credential's authorization URL"
    if data["clientId"] != credential.oauth_client_id:
        details["clientId"] = "must equal the credential's client id"
    if details:
        raise errors.BadRequest(details)
    options = {
        "scopes": [s for s in data["scopes"] if s.strip()] if data.get("scopes") is not None else None,
        "prompt": data.get("prompt"),
        "additional_params": data.get("additionalParams"),
        "disable_offline_access": bool(data.get("disableOfflineAccess")),
    }
    build_authorization_url(credential, state="x", redirect_uri=callback_url(credential),
                            code_challenge=None, code_challenge_method=None, **options)
    conn = pending_connection_for(credential, cls, app=app, customer_id=data.get("customerId"))
    return begin_authorization(credential, conn, return_to=(app.return_urls or [None])[0], **options)
