"""Action-connector accounts over HTTP: the end user's link URL and the platform's signed webhook.

The rules (type lookup, return URLs, webhook signing, recording accounts) live in
``connect_service.accounts``; these views authenticate, rate-limit and answer.
"""
from __future__ import annotations

import functools

import marshmallow as ma
from flask import g
from flask.views import MethodView

from .. import accounts, errors, ratelimit
from ..auth import require_connect_token
from ..extensions import settings
from ..requirements import find_requirement
from . import Blueprint, schemas
from .openapi import CONNECT_TOKEN, PUBLIC

blp = Blueprint("accounts", __name__, url_prefix="/v1/connect", description="Action-connector accounts")



class AccountLinkSchema(ma.Schema):
    connect_link_url = ma.fields.String(required=True, metadata={
        "description": "open it in the end user's browser to link the account"})
    expires_at = schemas.timestamp()


class WebhookPayload(ma.Schema):
    """Whatever JSON object the platform sends: its type judges it (``ActionAccountType.handle_webhook``)."""

    class Meta:
        unknown = ma.INCLUDE


class LinkArgs(ma.Schema):
    return_to = ma.fields.String(metadata={
        "description": "where the browser goes afterwards (with ?status=success|error); must exactly match "
                       "one of the app's return_urls. Default: the hosted connect page."})


@blp.route("/requirements/<string:requirement_id>/accounts")
class Accounts(MethodView):
    decorators = [require_connect_token]

    @blp.operation("createAccountLink", 400, 401, 404, 409, 429, 502, security=CONNECT_TOKEN)
    @blp.arguments(LinkArgs, location="query", as_kwargs=True)
    @blp.response(201, AccountLinkSchema, headers={"Cache-Control": {"schema": {"type": "string"}}})
    def post(self, requirement_id, return_to=None):
        """Get the link where the end user connects an account for an action-account requirement"""
        req = find_requirement(g.app, requirement_id)
        accounts.action_type(req)
        ratelimit.hit(f"accounts:{g.app.id}:{ratelimit.client_address()}",
                      settings()["rate_limit_credentials_per_minute"])
        return accounts.start_link(g.app, g.connect.user_id, req, return_to), 201, {"Cache-Control": "no-store"}


def signed_webhook(view):
    """Resolve ``connector`` and ``signed`` into ``target`` (404/401) before the body is read."""
    @functools.wraps(view)
    def wrapper(*args, connector, signed, **kwargs):
        return view(*args, target=accounts.webhook_target(connector, signed), **kwargs)
    return wrapper


@blp.route("/webhooks/<string:connector>/<string:signed>")
class Webhook(MethodView):
    decorators = [signed_webhook]

    @blp.operation("receiveWebhook", 400, 401, 404, 413, 415, 429, 502, security=PUBLIC,
                   summary="Receive an action-connector platform's webhook",
                   description="Called by the platform at the signed URL this service gave it. A missing, forged "
                               "or expired signed value is a 401 and changes nothing.")
    @blp.arguments(WebhookPayload)
    @blp.response(200, schemas.MessageSchema)
    def post(self, payload, target):
        """Receive an action-connector platform's webhook"""
        return accounts.receive_webhook(target, payload)


@blp.route("/webhooks/<string:connector>", strict_slashes=False)
class UnsignedWebhook(MethodView):

    @blp.operation("refuseUnsignedWebhook", 401, 404, security=PUBLIC)
    def post(self, connector):
        """A webhook without its signed value: always refused"""
        accounts.connector_type(connector)
        raise errors.Unauthorized()
