"""``POST /v1/connections/{id}/check-host``: may this connection's credential be sent to a URL?

A credential (seed 003) may restrict the hosts its tokens are sent to with
``allowed_hosts`` (exact hosts or ``*.example.com``). The app's backend calls
this before sending a connection's secrets to a URL it did not hard-code: the
answer uses the same normalisation and matching as the service's own
outbound client (lower case, IDNA, no trailing dot, one-label wildcards, no
user-info tricks). A connection without a credential, or whose credential has
no ``allowed_hosts``, is unrestricted.
"""
from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView

from .. import credentials
from ..auth import require_access_key
from ..fields import HTTP_URL
from . import Blueprint
from .common import load_key_and_connection, org_connection, resolve_path
from .openapi import ACCESS_KEY

blp = Blueprint("check_host", __name__, url_prefix="/v1/connections",
                description="Check a URL against a connection's allowed hosts")



class CheckHostSchema(ma.Schema):
    url = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=2048), metadata={
        "example": "https://api.example.com/v1/items", "format": "uri", "pattern": HTTP_URL})


class CheckHostResultSchema(ma.Schema):
    allowed = ma.fields.Boolean(required=True)
    host = ma.fields.String(required=True, metadata={"description": "the URL's host, normalised (lower case, IDNA)"})
    allowed_hosts = ma.fields.List(ma.fields.String(), required=True,
                                   metadata={"description": "the credential's patterns; empty = unrestricted"})


@blp.route("/<string:conn_id>/check-host")
class CheckHost(MethodView):
    decorators = [resolve_path(conn_id=org_connection), require_access_key(load=load_key_and_connection)]

    @blp.operation("checkHost", 400, 401, 404, 413, 415, security=ACCESS_KEY)
    @blp.arguments(CheckHostSchema)
    @blp.response(200, CheckHostResultSchema)
    def post(self, data, conn):
        """Whether the connection's credential may be sent to ``url`` (its ``allowed_hosts``)"""
        return credentials.check_host(conn.credential_id, data["url"])
