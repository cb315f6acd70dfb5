"""End-user connect API: tokens (app hosts), requirements, statuses, credentials (seeds 000, 001)."""
from __future__ import annotations

import marshmallow as ma
from flask import g, request
from flask.views import MethodView
from . import Blueprint

from .. import accounts, errors, ratelimit
from ..fields import NonBlank
from ..requirements import (deployed_requirements, find_requirement, requirement_status, requirement_view,
                            submit_credentials, user_connections)
from ..tokens import mint_connect_token
from . import schemas
from .common import (authenticate_access_key, bearer, iso, raw_json_body, registry, require_connect_token,
                     settings)

blp = Blueprint("connect", __name__, url_prefix="/v1/connect", description="End-user connect flow")
TOKEN_SECURITY = [{"connectToken": []}]


class TokenCreateSchema(ma.Schema):
    user_id = NonBlank(required=True, validate=ma.validate.Length(min=1, max=200),
                               metadata={"description": "your end user's id"})


class TokenSchema(ma.Schema):
    token = ma.fields.String(required=True)
    expires_at = ma.fields.String(required=True)
    connect_url = ma.fields.String(required=True)


class CredentialsSubmitSchema(ma.Schema):
    type = ma.fields.String(required=True, metadata={"example": "dynamiq.connections.HttpApiKey"})
    config = ma.fields.Dict(required=True, metadata={"example": {
        "url": "https://helpdesk.example.com/api", "api_key": "hd_live_9f3a7c1e2b54"}})


def client_address() -> str:
    return request.remote_addr or "unknown"


def mint_for(app, user_id: str) -> dict:
    """Mint a connect token for ``user_id`` of ``app`` (rate-limited per app and client address)."""
    cfg = settings()
    ratelimit.hit(f"tokens:{app.id}:{client_address()}", cfg["rate_limit_tokens_per_minute"])
    token, expires = mint_connect_token(cfg["secret_key"], cfg["public_url"], app.id, user_id)
    return {"token": token, "expires_at": iso(expires), "connect_url": f"{cfg['public_url']}/connect?token={token}"}


@blp.route("/tokens")
class Tokens(MethodView):
    @blp.doc(security=[{}, {"accessKey": []}], **{"requestBody": {"required": True, "content": {
        "application/json": {"schema": TokenCreateSchema}}}})
    @blp.response(201, TokenSchema, headers={"Cache-Control": {"schema": {"type": "string"}}})
    def post(self):
        """Create a connect token (on the app's hostname; private apps need an Access Key)"""
        app = getattr(g, "host_app", None)
        if app is None:  # not an app host (see app.py's host routing)
            raise errors.NotFound()
        if app.visibility != "public":
            key = authenticate_access_key(bearer())
            if key is None or key.org_id != app.org_id:
                raise errors.Unauthorized()
        data = raw_json_body()
        try:
            data = TokenCreateSchema().load(data)
        except ma.ValidationError as exc:
            raise errors.BadRequest(errors.flatten_messages(exc.messages)) from None
        return mint_for(app, data["user_id"]), 201, {"Cache-Control": "no-store"}


@blp.route("/requirements")
class Requirements(MethodView):
    decorators = [require_connect_token]

    @blp.doc(security=TOKEN_SECURITY)
    @blp.response(200, schemas.list_of(schemas.RequirementSchema, paged=False))
    def get(self):
        """List the requirements of the app's deployed version"""
        return {"data": [requirement_view(r) for r in deployed_requirements(g.app)]}


def statuses_for(app, user_id: str) -> list[dict]:
    """Requirements with ``status`` for one user (shared with the hosted page)."""
    reqs = deployed_requirements(app)
    reg = registry()
    for req in reqs:  # action-account types may look the user's accounts up at their platform
        accounts.sync_status(app, user_id, req)
    conns = user_connections(app, user_id)
    return [dict(requirement_view(r), status=requirement_status(r, conns, reg)) for r in reqs]


@blp.route("/requirements/statuses")
class Statuses(MethodView):
    decorators = [require_connect_token]

    @blp.doc(security=TOKEN_SECURITY)
    @blp.response(200, schemas.list_of(schemas.RequirementStatusSchema, paged=False))
    def get(self):
        """Requirements with ``completed``/``pending`` for the token's user"""
        return {"data": statuses_for(g.app, g.connect.user_id)}


@blp.route("/requirements/<string:requirement_id>/credentials")
class Credentials(MethodView):
    decorators = [require_connect_token]

    @blp.doc(security=TOKEN_SECURITY, requestBody={"required": True, "content": {
        "application/json": {"schema": CredentialsSubmitSchema}}})
    @blp.response(201, schemas.MessageSchema)
    def post(self, requirement_id):
        """Submit credentials for a connection requirement"""
        req = find_requirement(g.app, requirement_id)
        body = raw_json_body()
        ratelimit.hit(f"credentials:{g.app.id}:{client_address()}",
                      settings()["rate_limit_credentials_per_minute"])
        submit_credentials(g.app, g.connect.user_id, req, body, registry())
        return {"message": "created"}
