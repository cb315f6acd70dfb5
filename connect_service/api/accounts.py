"""Action-connector accounts: the end user's link URL, and the connector's signed webhook.

Generic over connectors: the requirement's type (an ``action_account`` ConnectionType
from the registry) builds the link and judges webhook deliveries; this module only
authenticates the caller and signs the webhook URL.

The webhook URL is ``{public_url}/v1/connect/webhooks/{connector}/<signed value>``. The
value is an itsdangerous ``URLSafeTimedSerializer`` token (Flask ``SECRET_KEY``, keys in
``SECRET_KEY_FALLBACKS`` still verify; salt ``connect-webhook``) naming connector, app,
end user and requirement, valid for :data:`WEBHOOK_MAX_AGE_SECONDS`. It is handed only to
the platform, never to the browser, and the access log replaces it with ``<signed>``.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import marshmallow as ma
from flask import current_app, g, request
from flask.views import MethodView
from . import Blueprint
from itsdangerous import BadData, URLSafeTimedSerializer

from .. import errors, ratelimit
from ..models import App, Requirement, WorkflowVersion
from ..requirements import CONNECTION, connection_type_name, find_requirement
from . import schemas
from .common import raw_json_body, registry, require_connect_token, settings

blp = Blueprint("accounts", __name__, url_prefix="/v1/connect", description="Action-connector accounts")

TOKEN_SECURITY = [{"connectToken": []}]
WEBHOOK_SALT = "connect-webhook"
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
    """The signed, expiring last path segment of a webhook URL."""
    return _serializer().dumps({"c": connector, "a": app_id, "u": user_id, "r": requirement_id})


def verify_webhook_value(connector: str, value: str) -> dict[str, str] | None:
    """The claims of a webhook value for ``connector``; None when missing, forged, expired or another connector's."""
    try:
        claims = _serializer().loads(value, max_age=WEBHOOK_MAX_AGE_SECONDS)
    except BadData:
        return None
    if not isinstance(claims, dict) or claims.get("c") != connector:
        return None
    if not all(isinstance(claims.get(k), str) for k in ("a", "u", "r")):
        return None
    return claims


def webhook_url(connector: str, app_id: str, user_id: str, requirement_id: str) -> str:
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


def start_link(app: App, user_id: str, req: Requirement, return_to: str | None = None) -> dict[str, Any]:
    """Ask the requirement's connector for a link URL for ``user_id`` (shared with the hosted page).

    Success and error send the browser to ``return_to`` (an exact entry of the app's
    ``return_urls``) or to the hosted connect page, with ``?status=success|error`` and no token.
    """
    cls = action_type(req)
    if return_to is not None and return_to not in (app.return_urls or []):
        raise errors.BadRequest({"return_to": "must exactly match one of the app's return_urls"})
    back = return_to or f"{settings()['public_url']}/connect"
    return cls().link_account(
        app, user_id, req,
        webhook_uri=webhook_url(cls.connector_name, app.id, user_id, req.public_id),
        success_redirect_uri=_with_status(back, "success"),
        error_redirect_uri=_with_status(back, "error"),
    )


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
