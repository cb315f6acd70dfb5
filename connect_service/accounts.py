"""Action-account flows: the user's link, the platform's signed webhook, lookups on statuses, revocation.

Generic over platforms: the requirement's ``ActionAccountType`` speaks the
platform's API through an ``AccountContext`` (``account_context.py``); this
module picks the type, throttles lookups, signs the webhook URL and turns
``PlatformError`` / ``ValidationError`` into the API's 502 / 400.

The webhook URL is ``{public_url}/v1/connect/webhooks/{connector}/<signed value>``:
a ``signing`` value (salt ``connect-webhook``, keys ``secret_key`` and its
fallbacks) valid for :data:`WEBHOOK_MAX_AGE_SECONDS`, whose payload is an
opaque reference: the claims (app, end user, requirement) encrypted with the
keyring (associated data ``webhook.ref.<connector>``). The platform that
receives the URL learns neither the app id nor the end user's id (often an
email address), and a reference minted for one connector does not decrypt as
another's. The URL goes only to the platform, never to the browser, and the
access log replaces the value with ``<signed>``.
"""
from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from marshmallow import ValidationError

from . import errors, oauth, ratelimit, replay
from .account_context import AccountContext, LinkedAccount, PlatformError, claim_lookup
from .action_account_type import ActionAccountType
from .connections import read_settings
from .crypto import DecryptionError
from .extensions import keyring, registry, settings
from .models import App, Connection, Credential, Requirement, WorkflowVersion
from .requirements import CONNECTION, connection_type_name
from .signing import InvalidSignature, sign, unsign

log = logging.getLogger(__name__)

WEBHOOK_SALT = "connect-webhook"
#: associated data of the encrypted webhook reference: ("webhook", "ref", connector name)
WEBHOOK_TABLE, WEBHOOK_COLUMN = "webhook", "ref"
#: platform link tokens live 4 hours; an hour more covers the platform's delivery retries
WEBHOOK_MAX_AGE_SECONDS = 5 * 3600


# --- the signed webhook value -------------------------------------------------------------------

def sign_webhook_value(connector: str, app_id: str, user_id: str, requirement_id: str) -> str:
    """The signed, expiring, opaque last path segment of a webhook URL (see the module docstring)."""
    ref = keyring().encrypt_json({"a": app_id, "u": user_id, "r": requirement_id}, WEBHOOK_TABLE, WEBHOOK_COLUMN,
                                 connector)
    return sign(WEBHOOK_SALT, ref)


def verify_webhook_value(connector: str, value: str) -> dict[str, str] | None:
    """The claims (``a`` app, ``u`` user, ``r`` requirement) of a webhook value for ``connector``.

    None when the value is forged, expired, not an encrypted reference, or
    minted for another connector.
    """
    try:
        ref = unsign(WEBHOOK_SALT, value, WEBHOOK_MAX_AGE_SECONDS)
    except InvalidSignature:
        return None
    if not isinstance(ref, str):
        return None
    try:
        claims = keyring().decrypt_json(ref, WEBHOOK_TABLE, WEBHOOK_COLUMN, connector)
    except (DecryptionError, ValueError):
        return None
    if not isinstance(claims, dict) or not all(isinstance(claims.get(k), str) for k in ("a", "u", "r")):
        return None
    return claims


def webhook_url(connector: str, app_id: str, user_id: str, requirement_id: str) -> str:
    """This service's webhook URL for one (app, user, requirement), to hand to the connector's platform."""
    return (f"{settings()['public_url']}/v1/connect/webhooks/{connector}/"
            f"{sign_webhook_value(connector, app_id, user_id, requirement_id)}")


# --- calling the type ---------------------------------------------------------------------------

def _action_class(type_name: str) -> type[ActionAccountType] | None:
    cls = registry().get(type_name)
    return cls if cls is not None and issubclass(cls, ActionAccountType) else None


@contextmanager
def _context(cls: type[ActionAccountType], app: App, user_id: str, req: Requirement | None = None, *,
             key: str | None = None, credential: Credential | None = None) -> Iterator[AccountContext]:
    """An ``AccountContext`` for one call into the type; platform and input errors become 502 and 400."""
    spec: dict[str, Any] = {}
    if req is not None:
        try:
            spec = cls.load_spec(req.spec.get("data") or {})
        except ValidationError as exc:  # deployed before the plugin's schema changed
            raise errors.BadRequest(errors.flatten_messages(exc.messages, "spec.data")) from None
        key = cls().account_key(spec)
    ctx = AccountContext(cls, app=app, user_id=user_id, key=key or "", requirement=req, spec=spec,
                         credential=credential)
    try:
        yield ctx
    except PlatformError as exc:
        log.warning("%s: the platform failed: %s", cls.name, exc.reason)
        raise errors.BadGateway({"platform": exc.reason}) from None
    except ValidationError as exc:
        raise errors.BadRequest(errors.flatten_messages(exc.normalized_messages())) from None
    finally:
        ctx.close()


# --- starting a link ----------------------------------------------------------------------------

def _with_status(url: str, status: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "status"]
    query.append(("status", status))
    return urlunsplit(parts._replace(query=urlencode(query)))


def action_type(req: Requirement) -> type[ActionAccountType]:
    """The registered action-account type a requirement asks for, else 400."""
    if req.type == CONNECTION:
        raise errors.BadRequest({"input": "this requirement is a connection: submit it with "
                                          f"POST /v1/connect/requirements/{req.public_id}/credentials "
                                          "or start POST …/oauth2/authorize"})
    cls = _action_class(connection_type_name(req))
    if cls is None:
        raise errors.BadRequest({"input": f"{req.type!r} is not a registered action-account type"})
    return cls


def start_link(app: App, user_id: str, req: Requirement, return_to: str | None = None, *,
               internal_return_to: str | None = None) -> dict[str, Any]:
    """Ask the requirement's type for a link URL for ``user_id`` (``POST …/accounts`` and the hosted page).

    Success and error send the browser, with ``?status=success|error`` and no token, to
    ``return_to`` (an API caller's value: it must exactly match one of the app's
    ``return_urls``), else to ``internal_return_to`` (a URL of this service's own hosted
    page, built by the page itself, so not checked against the app's list), else to
    the bare hosted page ``{public_url}/connect``.
    """
    cls = action_type(req)
    if return_to is not None and return_to not in (app.return_urls or []):
        raise errors.BadRequest({"return_to": "must exactly match one of the app's return_urls"})
    page = f"{settings()['public_url']}/connect"
    if internal_return_to is not None and not internal_return_to.startswith(page + "/"):
        raise ValueError("internal_return_to must be a URL of the hosted page")
    back = return_to or internal_return_to or page
    with _context(cls, app, user_id, req) as ctx:
        return cls().link_account(
            ctx, webhook_uri=webhook_url(cls.connector_name, app.id, user_id, req.public_id),
            success_redirect_uri=_with_status(back, "success"), error_redirect_uri=_with_status(back, "error"))


_HOST_RE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.?|[0-9a-f:.]+)$")


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` (lowercased) of an absolute http(s) URL, else None.

    Only plain DNS names and IP literals pass, so the result is safe inside a CSP header.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or not _HOST_RE.match(parts.hostname):
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def link_origins(app: App, req: Requirement) -> list[str]:
    """The origins the requirement's type may send the browser to (``ActionAccountType.link_origins``).

    Entries with ``{setting}`` placeholders are filled from the settings of the
    credential serving the app (loaded through the type's ``settings_schema``, so
    defaults apply); an entry that cannot be filled (no usable credential, unknown
    setting) is left out. The hosted page lists the result in its CSP ``form-action``.
    """
    cls = _action_class(connection_type_name(req))
    if cls is None:
        return []
    out: list[str] = []
    cred_settings: dict[str, Any] | None = None
    for entry in cls.link_origins:
        if "{" in entry:
            if cred_settings is None:
                cred_settings = _credential_settings(cls, app, req)
            try:
                entry = entry.format_map({k: v for k, v in cred_settings.items() if isinstance(v, str)})
            except (KeyError, ValueError, IndexError):
                continue
        origin = origin_of(entry)
        if origin is not None and origin not in out:
            out.append(origin)
    return out


def _credential_settings(cls: type[ActionAccountType], app: App, req: Requirement) -> dict[str, Any]:
    try:
        cred = oauth.select_credential(app, cls.connector_name, (req.spec.get("data") or {}).get("credential_id"),
                                       grant_types=None)
    except errors.APIError:  # no usable credential: linking fails with its own message
        return {}
    raw = cred.settings or {}
    if cls.settings_schema is None:
        return raw
    try:
        return cls.settings_schema().load(raw)
    except ValidationError:
        return raw


# --- lookups before statuses are read -----------------------------------------------------------

def sync_status(app: App, user_id: str, req: Requirement) -> bool:
    """Let an action-account requirement's type look the user's accounts up (throttled); never raises for it.

    At most once per ``account_lookup_seconds`` per user and requirement, whatever
    else happens. A platform outage or a missing credential is logged: statuses then
    answer from the recorded rows. True when a lookup ran (it may have changed the rows).
    """
    cls = _action_class(connection_type_name(req))
    if cls is None or cls.requirement_key(req.spec.get("data")) is None:
        return False
    if not claim_lookup(cls, app, user_id, req, settings()["account_lookup_seconds"]):
        return False
    try:
        with _context(cls, app, user_id, req) as ctx:
            cls().sync_accounts(ctx)
    except errors.BadGateway:  # the platform failed: _context logged why
        pass
    except errors.APIError as exc:
        log.warning("%s account lookup skipped: %s", cls.name, exc.details or exc.message)
    return True


# --- the platform's webhook ---------------------------------------------------------------------

def _requirement_of(app: App, public_id: str) -> Requirement | None:
    """The requirement a webhook names, from the newest version that has it (deployed or not)."""
    return (Requirement.select().join(WorkflowVersion)
            .where(WorkflowVersion.app == app.id, Requirement.public_id == public_id)
            .order_by(WorkflowVersion.number.desc()).first())


def connector_type(connector: str) -> type[ActionAccountType]:
    """The action-account type that owns ``connector``, else 404 (the webhook routes)."""
    cls = registry().by_connector(connector)
    if cls is None or not issubclass(cls, ActionAccountType):
        raise errors.NotFound()
    return cls


@dataclass(frozen=True)
class WebhookTarget:
    """Whom a genuine webhook URL names: the type, the app, the end user and the requirement."""

    type: type[ActionAccountType]
    app: App
    user_id: str
    requirement: Requirement
    #: names the webhook URL in replay keys and rate-limit buckets (a hash: never the signed value)
    url_key: str = ""


def webhook_target(connector: str, signed: str) -> WebhookTarget:
    """Resolve a webhook URL: 404 for an unknown connector or requirement, 401 for a bad signed value.

    The HTTP layer calls this before it reads the body, so an unsigned caller
    learns nothing about the body rules.
    """
    cls = connector_type(connector)
    claims = verify_webhook_value(connector, signed)
    if claims is None:
        raise errors.Unauthorized()
    app = App.get_or_none(App.id == claims["a"])
    req = _requirement_of(app, claims["r"]) if app is not None else None
    if req is None or registry().get(connection_type_name(req)) is not cls:
        raise errors.NotFound()
    url_key = replay.key_for("webhook-url", f"{connector}/{signed}").split(":", 1)[1][:40]
    return WebhookTarget(cls, app, claims["u"], req, url_key)


def receive_webhook(target: WebhookTarget, body: dict[str, Any]) -> dict[str, Any]:
    """Let the target's type judge the platform's ``body`` (its JSON answer, a 400 or a 502), once per event.

    An event is the webhook URL plus the body (as canonical JSON). The first
    delivery that the type accepts is remembered with its answer for as long
    as the URL is valid; a replay gets that answer again without the type
    (nor the platform) being asked. A delivery the type refuses (400, 502) is
    forgotten, so the platform may retry it; one arriving while the first is
    still being handled is handled as well (the type's writes are serialised).
    Deliveries that reach the type are limited per webhook URL
    (``rate_limit_webhook_per_minute``), so a leaked URL cannot make the
    service hammer the platform.
    """
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    event = replay.key_for("webhook", f"{target.url_key}\n{canonical}")
    found, answer = replay.answer_of(event)
    if found and answer is not None:
        log.info("%s: a replayed webhook event answered from the first delivery", target.type.name)
        return answer
    ratelimit.hit(f"webhook:{target.url_key}", int(settings()["rate_limit_webhook_per_minute"]))
    first = not found and replay.claim(event, WEBHOOK_MAX_AGE_SECONDS)
    # (a delivery racing the first one is handled too: the type's writes are serialised per user)
    try:
        with _context(target.type, target.app, target.user_id, target.requirement) as ctx:
            answer = target.type().handle_webhook(ctx, body)
    except BaseException:
        if first:
            replay.release(event)
        raise
    if first:
        replay.record_answer(event, answer)
    return answer


# --- deleting a linked account ------------------------------------------------------------------

def revoke_linked_account(conn: Connection) -> bool:
    """Best effort: the type undoes the link at the platform before the row goes; True when it confirmed.

    A platform failure, a credential that is gone or has invalid settings, or
    settings that no longer decrypt give False (logged); the caller deletes anyway.
    """
    cls = _action_class(conn.type)
    credential = Credential.get_or_none(Credential.id == conn.credential_id) if conn.credential_id else None
    app = App.get_or_none(App.id == conn.app_id) if conn.app_id else None
    if cls is None or credential is None or app is None:
        return False
    try:
        stored = read_settings(conn)
    except DecryptionError:
        return False
    if not isinstance(stored.get("account_id"), str):
        return False
    account = LinkedAccount(conn.id, stored["account_id"], conn.status, conn.status_reason, stored)
    try:
        with _context(cls, app, conn.customer_id, key=conn.account_key, credential=credential) as ctx:
            return bool(cls().revoke_account(ctx, account))
    except errors.APIError as exc:
        log.warning("%s: the linked account was not deleted at the platform: %s", cls.name,
                    exc.details or exc.message)
        return False
