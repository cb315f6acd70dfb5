"""``GET /v1/connection-types``: every registered connection type and its form (Access Key only).

A connect token grants no API access beyond ``/v1/connect/*`` (seed 001), so it is refused here with 401;
the hosted page reads the registry itself.
"""
from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView

from ..auth import require_access_key
from ..connection_types import TYPE_NAME_RE
from ..extensions import registry
from . import Blueprint, schemas
from .common import PageArgs, cursor_field
from .openapi import ACCESS_KEY

blp = Blueprint("connection_types", __name__, url_prefix="/v1/connection-types",
                description="Registered connection types (from plugins) and the forms that fulfil them")


class FormFieldSchema(ma.Schema):
    name = ma.fields.String(required=True, metadata={"description": "key in `config`"})
    label = ma.fields.String(required=True)
    type = ma.fields.String(required=True, metadata={
        "description": "string | url | email | integer | number | boolean | object | list"})
    input = ma.fields.String(required=True, metadata={
        "description": "text | password | url | email | number | checkbox | select | json"})
    secret = ma.fields.Boolean(required=True, metadata={"description": "never shown back once stored"})
    required = ma.fields.Boolean(required=True)
    help = ma.fields.String()
    placeholder = ma.fields.String()
    choices = ma.fields.List(ma.fields.Raw())
    default = ma.fields.Raw()
    min = ma.fields.Float()
    max = ma.fields.Float()
    max_length = ma.fields.Integer()


class FormSchema(ma.Schema):
    fields = ma.fields.List(ma.fields.Nested(FormFieldSchema), required=True)


class ConnectionTypeSchema(ma.Schema):
    name = ma.fields.String(required=True, metadata={"description": "the `spec.data.type` requirements use"})
    title = ma.fields.String(required=True)
    auth = ma.fields.String(required=True, validate=ma.validate.OneOf(["credentials", "oauth2", "action_account"]))
    connector_name = ma.fields.String(allow_none=True)
    description = ma.fields.String()
    form = ma.fields.Nested(FormSchema, required=True)


class TypePageArgs(PageArgs):
    cursor = cursor_field(TYPE_NAME_RE.pattern, "the last type name seen (next_cursor)")


@blp.route("")
class ConnectionTypes(MethodView):
    decorators = [require_access_key]

    @blp.operation("listConnectionTypes", 400, 401, security=ACCESS_KEY)
    @blp.arguments(TypePageArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(ConnectionTypeSchema))
    def get(self, cursor=None, limit=50):
        """List connection types, sorted by name (an Access Key; a connect token is refused)"""
        items = registry().describe()
        if cursor:
            items = [item for item in items if item["name"] > cursor]
        page = items[:limit]
        next_cursor = page[-1]["name"] if len(items) > limit else None
        return {"data": page, "next_cursor": next_cursor}
