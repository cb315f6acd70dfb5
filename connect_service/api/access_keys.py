"""``/v1/access-keys``: the HTTP face of ``access_keys.py`` (create with the plaintext once, list, revoke)."""
from __future__ import annotations

import marshmallow as ma
from flask import g
from flask.views import MethodView

from .. import access_keys
from ..access_keys import create_access_key, key_view
from ..auth import require_access_key
from ..models import AccessKey
from . import Blueprint, OptionalBody, schemas
from .common import PageArgs, paginate
from .openapi import ACCESS_KEY

blp = Blueprint("access_keys", __name__, url_prefix="/v1/access-keys", description="Access Keys")


class AccessKeyCreateSchema(OptionalBody, ma.Schema):
    name = ma.fields.String(load_default="", validate=ma.validate.Length(max=200))


class AccessKeySchema(ma.Schema):
    id = ma.fields.String(required=True)
    name = ma.fields.String(required=True)
    prefix = ma.fields.String(required=True)
    key = ma.fields.String(metadata={"description": "plaintext, returned only when created"})
    created_at = schemas.timestamp()
    last_used_at = schemas.timestamp(allow_none=True)
    revoked_at = schemas.timestamp(allow_none=True)


@blp.route("")
class AccessKeys(MethodView):
    decorators = [require_access_key]

    @blp.operation("createAccessKey", 400, 401, 413, 415, security=ACCESS_KEY)
    @blp.arguments(AccessKeyCreateSchema, required=False)
    @blp.response(201, AccessKeySchema)
    def post(self, data):
        """Create an Access Key (the plaintext ``key`` is shown only in this response)"""
        key, plaintext = create_access_key(g.org, data.get("name", ""))
        return key_view(key, plaintext)

    @blp.operation("listAccessKeys", 400, 401, security=ACCESS_KEY)
    @blp.arguments(PageArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(AccessKeySchema))
    def get(self, **args):
        """List Access Keys (never their plaintext)"""
        rows, cursor = paginate(AccessKey.select().where(AccessKey.org == g.org.id), AccessKey, args)
        return {"data": [key_view(k) for k in rows], "next_cursor": cursor}


@blp.route("/<string:key_id>")
class AccessKeyItem(MethodView):
    decorators = [require_access_key]

    @blp.operation("revokeAccessKey", 401, 404, security=ACCESS_KEY)
    @blp.response(200, AccessKeySchema)
    def delete(self, key_id):
        """Revoke an Access Key"""
        return key_view(access_keys.revoke(g.org.id, key_id))
