"""Action-connector accounts: the end user's link URL, and the connector's signed webhook.

Generic over connectors: the requirement's type (an ``action_account`` ConnectionType
from the registry) builds the link and judges webhook deliveries; this module only
authenticates the caller and signs the webhook URL.

The webhook URL is ``{public_url}/v1/connect/webhooks/{connector}/<signed value>``. The
value is an itsdangerous ``URLSafeTimedSerializer`` token (Flask ``SECRET_KEY``, keys in
``SECRET_KEY_FALLBACKS`` still verify; salt ``connect-webhook``), valid for
:data:`WEBHOOK_MAX_AGE_SECONDS`, whose payload is an opaque reference: the claims
(app, end user, requirement) encrypted with the service's keyring (AES-256-GCM,
associated data ``webhook.ref.<connector>``). The platform that receives the URL
learns neither the app id nor the end user's id (often an email address), and a
reference minted for one connector does not decrypt as another's. The URL
is handed only to the platform, never to the browser, and the access log replaces
the value with ``<signed>``.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import marshmallow as ma
from flask import current_app, g, request
from flask.views import MethodView
from . import Blueprint
from itsdangerous import BadData, URLSafeTimedSerializer

from .. import errors, ratelimit
from ..crypto import DecryptionError
from ..models import App, Requirement, WorkflowVersion
from ..requirements import CONNECTION, connection_type_name, find_requirement
from . import schemas
from .common import keyring, raw_json_body, registry, require_connect_token, settings

blp = Blueprint("accounts", __name__, url_prefix="/v1/connect", description="Action-connector accounts")

TOKEN_SECURITY = [{"connectToken": []}]
WEBHOOK_SALT = "connect-webhook"
#: associated data of the encrypted webhook reference: ("webhook", "ref", connector name)
WEBHOOK_TABLE, WEBHOOK_COLUMN = "webhook", "ref"
#: platform link tokens live 4 hours; an hour more covers the platform's delivery retries
WEBHOOK_MAX_AGE_SECONDS = 5 * 3600


class AccountLinkSchema(ma.Schema):
    connect_link_url = ma.fields.String(required=True, metadata={
        "description": "open it in the end user's browser to link the account"})
    expires_at = ma.fields.String(required=True, metadata={"example": "2026-11-23T12:30:00Z"})


class LinkArgs(ma.Schema):
    return_to = ma.fields.String(metadata={
        "description": "where the browser goes afterwards (with ?status=success|error); must exactly match "
                       "one of the app's return_urls. Default: the hosted connect page."})


# --- the signed webhook value -------------------------------------------------------------------

def _serializer() -> URLSafeTimedSerializer:
    cfg = current_app.config
    # itsdangerous signs with the last key and verifies with any of them
    keys = [*(cfg.get("SECRET_KEY_FALLBACKS") or []), cfg["SECRET_KEY"]]
    return URLSafeTimedSerializer(keys, salt=WEBHOOK_SALT)


def sign_webhook_value(connector: str, app_id: str, user_id: str, requirement_id: str) -> str:
    """The signed, expiring, opaque last path segment of a webhook URL (see the module docstring)."""
    ref = keyring().encrypt_json({"a": app_id, "u": user_id, "r": requirement_id}, WEBHOOK_TABLE, WEBHOOK_COLUMN,
                                 connector)
    return _serializer().dumps(ref)


def verify_webhook_value(connector: str, value: str) -> dict[str, str] | None:
    """The claims (``a`` app, ``u`` user, ``r`` requirement) of a webhook value for ``connector``.

    None when the value is missing, forged, expired, not an encrypted reference, or
    minted for another connector.
    """
    try:
        ref = _serializer().loads(value, max_age=WEBHOOK_MAX_AGE_SECONDS)
    except BadData:
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


# --- starting a link ----------------------------------------------------------------------------

def _with_status(url: str, status: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "status"]
    query.append(("status", status))
    return urlunsplit(parts._replace(query=urlencode(query)))


def action_type(req: Requirement):
    """The registered action-account type a requirement asks for, else 400."""
    if req.type == CONNECTION:
        raise errors.BadRequest({"input": "this requirement is a connection: submit it with "
                                          f"POST /v1/connect/requirements/{req.public_id}/credentials "
                                          "or start POST …/oauth2/authorize"})
    cls = registry().get(connection_type_name(req))
    if cls is None or cls.auth != "action_account":
        raise errors.BadRequest({"input": f"{req.type!r} is not a registered action-account type"})
    return cls


def start_link(app: App, user_id: str, req: Requirement, return_to: str | None = None, *,
               internal_return_to: str | None = None) -> dict[str, Any]:
    """Ask the requirement's connector for a link URL for ``user_id`` (shared with the hosted page).

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
    return cls().link_account(
        app, user_id, req,
        webhook_uri=webhook_url(cls.connector_name, app.id, user_id, req.public_id),
        success_redirect_uri=_with_status(back, "success"),
        error_redirect_uri=_with_status(back, "error"),
    )


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


_HOST_RE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.?|[0-9a-f:.]+)$")


def link_origins(app: App, req: Requirement) -> list[str]:
    """The origins the requirement's type may send the browser to (``ConnectionType.link_origins``).

    Entries with ``{setting}`` placeholders are filled from the settings of the
    credential serving the app (loaded through the type's ``settings_schema``, so
    defaults apply); an entry that cannot be filled (no usable credential, unknown
    setting) is left out. The hosted page lists the result in its CSP ``form-action``.
    """
    cls = registry().get(connection_type_name(req))
    if cls is None or cls.auth != "action_account":
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


def _credential_settings(cls, app: App, req: Requirement) -> dict[str, Any]:
    from ..oauth import select_credential

    try:
        cred = select_credential(app, cls.connector_name, (req.spec.get("data") or {}).get("credential_id"),
                                 grant_types=None)
    except errors.APIError:  # no usable credential: linking fails with its own message
        return {}
    raw = cred.settings or {}
    if cls.settings_schema is None:
        return raw
    try:
        return cls.settings_schema().load(raw)
    except ma.ValidationError:
        return raw


@blp.route("/requirements/<string:requirement_id>/accounts")
class Accounts(MethodView):
    decorators = [require_connect_token]

    @blp.doc(security=TOKEN_SECURITY)
    @blp.arguments(LinkArgs, location="query", as_kwargs=True)
    @blp.response(201, AccountLinkSchema, headers={"Cache-Control": {"schema": {"type": "string"}}})
    def post(self, requirement_id, return_to=None):
        """Get the link where the end user connects an account for an action-account requirement"""
        req = find_requirement(g.app, requirement_id)
        action_type(req)
        ratelimit.hit(f"accounts:{g.app.id}:{request.remote_addr or 'unknown'}",
                      settings()["rate_limit_credentials_per_minute"])
        return start_link(g.app, g.connect.user_id, req, return_to), 201, {"Cache-Control": "no-store"}


# --- the connector's webhook --------------------------------------------------------------------

def _requirement_of(app: App, public_id: str) -> Requirement | None:
    """The requirement a webhook names, from the newest version that has it (deployed or not)."""
    return (Requirement.select().join(WorkflowVersion)
            .where(WorkflowVersion.app == app.id, Requirement.public_id == public_id)
            .order_by(WorkflowVersion.number.desc()).first())


@blp.route("/webhooks/<string:connector>/<string:signed>")
class Webhook(MethodView):

    @blp.doc(security=[], summary="Receive an action-connector platform's webhook",
             description="Called by the platform at the signed URL this service gave it. A missing, forged "
                         "or expired signed value is a 401 and changes nothing.",
             requestBody={"required": True, "content": {"application/json": {"schema": {"type": "object"}}}})
    @blp.response(200, schemas.MessageSchema)
    def post(self, connector, signed):
        """Receive an action-connector platform's webhook"""
        cls = registry().by_connector(connector)
        if cls is None or cls.auth != "action_account":
            raise errors.NotFound()
        claims = verify_webhook_value(connector, signed)
        if claims is None:
            raise errors.Unauthorized()
        app = App.get_or_none(App.id == claims["a"])
        req = _requirement_of(app, claims["r"]) if app is not None else None
        if req is None or registry().get(connection_type_name(req)) is not cls:
            raise errors.NotFound()
        body = raw_json_body()
        return cls().handle_webhook(app, claims["u"], req, body)


@blp.route("/webhooks/<string:connector>", strict_slashes=False)
class UnsignedWebhook(MethodView):

    @blp.doc(security=[])
    def post(self, connector):
        """A webhook without its signed value: always refused"""
        cls = registry().by_connector(connector)
        if cls is None or cls.auth != "action_account":
            raise errors.NotFound()
        raise errors.Unauthorized()
