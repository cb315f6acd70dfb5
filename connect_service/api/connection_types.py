"""``GET /v1/connection-types``: every registered connection type and its form (Access Key or connect token)."""
from __future__ import annotations

import base64
import binascii
import functools

import marshmallow as ma
from flask.views import MethodView

from .. import errors
from ..auth import authenticate_access_key, bearer, connect_identity
from ..extensions import registry
from . import Blueprint, schemas
from .common import PageArgs

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


def require_key_or_token(view):
    """Either an org's Access Key or an end user's connect token, else 401 (checked before any argument)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        token = bearer()
        if authenticate_access_key(token) is None and connect_identity(token) is None:
            raise errors.Unauthorized()
        return view(*args, **kwargs)

    return wrapper


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
    decorators = [require_key_or_token]

    @blp.doc(security=[{"accessKey": []}, {"connectToken": []}])
    @blp.arguments(PageArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(ConnectionTypeSchema))
    def get(self, cursor=None, limit=50):
        """List connection types (Access Key or connect token), sorted by name"""
        items = registry().describe()
        if cursor:
            after = _decode_cursor(cursor)
            items = [item for item in items if item["name"] > after]
        page = items[:limit]
        next_cursor = _encode_cursor(page[-1]["name"]) if len(items) > limit else None
        return {"data": page, "next_cursor": next_cursor}
