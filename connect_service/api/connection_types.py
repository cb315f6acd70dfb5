"""``GET /v1/connection-types``: every registered connection type and its form (Access Key only).

A connect token grants no API access beyond ``/v1/connect/*`` (seed 001), so it is refused here with 401;
the hosted page reads the registry itself.
"""
from __future__ import annotations

import base64
import binascii

import marshmallow as ma
from flask.views import MethodView

from .. import errors
from ..auth import require_access_key
from ..extensions import registry
from . import Blueprint, schemas
from .common import PageArgs
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


def _encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        name = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, binascii.Error):
        name = ""
    if not name:
        raise errors.BadRequest({"cursor": "is not a valid cursor"})
    return name


@blp.route("")
class ConnectionTypes(MethodView):
    decorators = [require_access_key]

    @blp.operation("listConnectionTypes", 400, 401, security=ACCESS_KEY)
    @blp.arguments(PageArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(ConnectionTypeSchema))
    def get(self, cursor=None, limit=50):
        """List connection types, sorted by name (an Access Key; a connect token is refused)"""
        items = registry().describe()
        if cursor:
            after = _decode_cursor(cursor)
            items = [item for item in items if item["name"] > after]
        page = items[:limit]
        next_cursor = _encode_cursor(page[-1]["name"]) if len(items) > limit else None
        return {"data": page, "next_cursor": next_cursor}
