"""End-user connect API: tokens (app hosts), requirements, statuses, config submission (seeds 000, 001)."""
from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import g
from flask.views import MethodView

from .. import errors, ratelimit
from ..auth import authenticate_access_key, bearer, require_connect_token
from ..extensions import settings
from ..models import App, Connection
from ..requirements import deployed_requirements, find_requirement, requirement_view, submit_config
from ..statuses import load_app_and_connections, statuses_for
from ..tokens import ConnectToken, TokenCreateSchema, issue_connect_token
from . import Blueprint, schemas
from .common import dumped, resolve_path
from .openapi import CONNECT_TOKEN, PUBLIC

blp = Blueprint("connect", __name__, url_prefix="/v1/connect", description="End-user connect flow")


class TokenSchema(ma.Schema):
    token = ma.fields.String(required=True)
    expires_at = schemas.timestamp()
    connect_url = ma.fields.String(required=True)


class ConfigSubmitSchema(ma.Schema):
    """Seed 000's body: ``requirements.submit_config`` judges ``type`` and ``config`` (the hosted page's form too),
    because its messages name the type the requirement declares; another field is refused here, as documented."""

    type = ma.fields.Raw(allow_none=True, metadata={
        "type": "string", "description": "required: the requirement's connection type",
        "example": "dynamiq.connections.HttpApiKey"})
    config = ma.fields.Raw(allow_none=True, metadata={
        "type": "object", "description": "required: the form's values, validated by the connection type",
        "example": {"url": "https://helpdesk.example.com/api", "api_key": "hd_live_9f3a7c1e2b54"}})


def _deployed_requirement(requirement_id: str):
    return find_requirement(g.app, requirement_id)


# --- the answers, also given by api/hot.py ------------------------------------------------------

def token_answer(app: App, data: dict, credential: str | None) -> dict[str, str]:
    """``POST /tokens`` on ``app``'s host: a private app needs an Access Key (``credential``) of its org."""
    if app.visibility != "public":
        key = authenticate_access_key(credential)
        if key is None or key.org_id != app.org_id:
            raise errors.Unauthorized()
    return issue_connect_token(app, data)


def requirements_answer(app: App) -> dict[str, Any]:
    """``GET /requirements``: the deployed version's requirements."""
    return {"data": [requirement_view(r) for r in deployed_requirements(app)]}


def statuses_answer(identity: ConnectToken, app: App, connections: list[Connection] | None) -> dict[str, Any]:
    """``GET /requirements/statuses`` for the token's user (``connections``: as the loader read them)."""
    return {"data": statuses_for(app, identity.user_id, connections)}


@blp.route("/tokens")
class Tokens(MethodView):
    @blp.operation("createConnectToken", 400, 401, 404, 413, 415, 429, security=PUBLIC, description=(
        "Creates a short-lived connect token (24 hours) for an end user of the app, and the URL of the hosted "
        "connect page pre-filled with it. Call it on the app's hostname, which identifies the app. Public apps "
        "can be called without credentials; private apps require an Access Key of the app's organization "
        "(`Authorization: Bearer ak_…`, else 401)."))
    @blp.arguments(TokenCreateSchema)
    @blp.response(201, TokenSchema, headers={"Cache-Control": {"schema": {"type": "string"}}})
    def post(self, data):
        """Create a connect token (on the app's hostname; private apps need an Access Key, apps with
        ``user_verification: "required"`` a ``user_id_signature``)"""
        app = getattr(g, "host_app", None)
        if app is None:  # not an app host (see app.py's host routing)
            raise errors.NotFound()
        return dumped(token_answer(app, data, bearer())), 201, {"Cache-Control": "no-store"}


@blp.route("/requirements")
class Requirements(MethodView):
    decorators = [require_connect_token]

    @blp.operation("listRequirements", 401, security=CONNECT_TOKEN)
    @blp.response(200, schemas.list_of(schemas.RequirementSchema, paged=False))
    def get(self):
        """List the requirements of the app's deployed version"""
        return dumped(requirements_answer(g.app))


@blp.route("/requirements/statuses")
class Statuses(MethodView):
    decorators = [require_connect_token(load=load_app_and_connections)]  # one query: app and connections

    @blp.operation("getRequirementStatuses", 401, security=CONNECT_TOKEN)
    @blp.response(200, schemas.list_of(schemas.RequirementStatusSchema, paged=False))
    def get(self):
        """Requirements with ``completed``/``pending`` for the token's user"""
        return dumped(statuses_answer(g.connect, g.app, g.preloaded))


@blp.route("/requirements/<string:requirement_id>/credentials")
class ConfigSubmit(MethodView):
    decorators = [resolve_path(requirement_id=_deployed_requirement), require_connect_token]

    @blp.operation("submitCredentials", 400, 401, 404, 409, 413, 415, 429, security=CONNECT_TOKEN)
    @blp.arguments(ConfigSubmitSchema)
    @blp.response(201, schemas.MessageSchema)
    def post(self, body, requirement):
        """Submit credentials (the form's config) for a connection requirement"""
        ratelimit.hit(f"credentials:{g.app.id}:{ratelimit.client_address()}",
                      settings()["rate_limit_credentials_per_minute"])
        submit_config(g.app, g.connect.user_id, requirement, body)
        return {"message": "created"}
