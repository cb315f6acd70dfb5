"""Action-account flows: the user's link, the platform's signed webhook, lookups on statuses, revocation.

Generic over platforms: the requirement's ``ActionAccountType`` speaks the
platform's API through an ``AccountContext`` (``account_context.py``); this
module picks the type, throttles lookups, signs the webhook URL and turns
``PlatformError`` / ``ValidationError`` into the API's 502 / 400.

The webhook URL handed to the platform is signed, expiring and opaque
(``account_webhook_urls.py``); the origins the hosted page lets a link go to
are ``account_link_origins.py``'s. This module re-exports their names.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from marshmallow import ValidationError

from . import errors, ratelimit, replay
from .account_context import AccountContext, LinkedAccount, PlatformError, claim_lookup
from .account_link_origins import link_origins, origin_of
from .account_webhook_urls import (WEBHOOK_COLUMN, WEBHOOK_MAX_AGE_SECONDS, WEBHOOK_SALT, WEBHOOK_TABLE,
                                   sign_webhook_value, verify_webhook_value, webhook_url)
from .action_account_type import ActionAccountType
from .connections import read_settings
from .crypto import DecryptionError
from .extensions import registry, settings
from .models import App, Connection, Credential, Requirement, WorkflowVersion
from .requirements import CONNECTION, connection_type_name

log = logging.getLogger(__name__)

# re-exported: the signed webhook value's and the link origins' names, importable from here as before
__all__ = ["WEBHOOK_COLUMN", "WEBHOOK_MAX_AGE_SECONDS", "WEBHOOK_SALT", "WEBHOOK_TABLE", "WebhookTarget",
           "action_type", "connector_type", "link_origins", "origin_of", "receive_webhook", "revoke_linked_account",
           "sign_webhook_value", "start_link", "sync_status", "verify_webhook_value", "webhook_target", "webhook_url"]


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
