"""``/v1/audit-events``: the HTTP face of ``audit.py`` (newest first, scoped to the org)."""
from __future__ import annotations

import marshmallow as ma
from flask import g
from flask.views import MethodView
from marshmallow import fields, validate

from .. import audit
from ..auth import require_access_key
from ..fields import NonBlank
from . import Blueprint, schemas
from .common import CURSOR_PATTERN, cursor_field
from .openapi import ACCESS_KEY

blp = Blueprint("audit", __name__, url_prefix="/v1/audit-events", description="Audit log")


class AuditListArgs(ma.Schema):
    action = fields.String(validate=validate.OneOf(audit.ACTIONS))
    target_id = NonBlank()
    actor_id = NonBlank()
    since = fields.DateTime(metadata={"description": "ISO 8601, inclusive"})
    until = fields.DateTime(metadata={"description": "ISO 8601, exclusive"})
    cursor = cursor_field(CURSOR_PATTERN)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class AuditActorSchema(ma.Schema):
    type = fields.String(required=True, validate=validate.OneOf(["access_key", "connect_token", "system"]))
    id = fields.String(required=True, allow_none=True)


class AuditTargetSchema(ma.Schema):
    type = fields.String(required=True, allow_none=True)
    id = fields.String(required=True, allow_none=True)


class AuditEventSchema(ma.Schema):
    id = fields.String(required=True)
    at = schemas.timestamp()
    actor = fields.Nested(AuditActorSchema, required=True)
    action = fields.String(required=True, validate=validate.OneOf(audit.ACTIONS))
    target = fields.Nested(AuditTargetSchema, required=True)
    app_id = fields.String(required=True, allow_none=True)
    ip = fields.String(required=True, allow_none=True)
    request_id = fields.String(required=True, allow_none=True)
    details = fields.Dict(required=True, metadata={
        "description": "e.g. method, host and status of a proxied call; never a secret"})


@blp.route("")
class AuditEvents(MethodView):
    decorators = [require_access_key]

    @blp.operation("listAuditEvents", 400, 401, security=ACCESS_KEY)
    @blp.arguments(AuditListArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(AuditEventSchema))
    def get(self, **args):
        """List audit events, newest first (filters: action, target_id, actor_id, since, until)"""
        rows, cursor = audit.list_events(g.org.id, args)
        return {"data": [audit.event_view(e) for e in rows], "next_cursor": cursor}
