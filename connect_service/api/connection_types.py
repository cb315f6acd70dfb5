"""``GET /v1/connection-types``: every registered connection type and its form."""
from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from .. import errors
from . import schemas
from .common import authenticate_access_key, bearer, connect_identity, registry

blp = Blueprint("connection_types", __name__, url_prefix="/v1/connection-types",
                description="Registered connection types")


class FormFieldSchema(ma.Schema):
    name = ma.fields.String(required=True)
    label = ma.fields.String(required=True)
    type = ma.fields.String(required=True)
    secret = ma.fields.Boolean(required=True)
    required = ma.fields.Boolean(required=True)
    help = ma.fields.String()
    placeholder = ma.fields.String()
    choices = ma.fields.List(ma.fields.Raw())
    default = ma.fields.Raw()


class FormSchema(ma.Schema):
    fields = ma.fields.List(ma.fields.Nested(FormFieldSchema), required=True)


class ConnectionTypeSchema(ma.Schema):
    name = ma.fields.String(required=True)
    title = ma.fields.String(required=True)
    auth = ma.fields.String(required=True)
    connector_name = ma.fields.String(allow_none=True)
    description = ma.fields.String()
    form = ma.fields.Nested(FormSchema, required=True)


@blp.route("")
class ConnectionTypes(MethodView):
    @blp.doc(security=[{"accessKey": []}, {"connectToken": []}])
    @blp.response(200, schemas.list_of(ConnectionTypeSchema, paged=False))
    def get(self):
        """List connection types (Access Key or connect token)"""
        token = bearer()
        if authenticate_access_key(token) is None and connect_identity(token) is None:
            raise errors.Unauthorized()
        types = sorted(registry().types.values(), key=lambda cls: cls.name)
        return {"data": [cls.describe() for cls in types]}
