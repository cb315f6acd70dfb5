"""``/v1/connections/{id}/proxy/{path}``: the HTTP face of ``proxy.py`` (any method, Access Key).

The body and query string are the provider's business, so this view takes
them raw (no ``@blp.arguments`` schema) and answers the provider's response
as a stream.
"""
from __future__ import annotations

from flask import Response, g, request
from flask.views import MethodView

from .. import proxy
from ..auth import require_access_key
from ..connections import get_org_connection
from ..models import Connection
from . import Blueprint
from .common import resolve_path

blp = Blueprint("proxy", __name__, url_prefix="/v1/connections",
                description="Call a provider's API with a connection's credential injected")
SECURITY = [{"accessKey": []}]
DOC = {"security": SECURITY, "responses": {"default": {"description": "the provider's answer, streamed"}}}


def _org_connection(conn_id: str) -> Connection:
    return get_org_connection(g.org.id, conn_id)


def _forward(conn: Connection, path: str) -> Response:
    result = proxy.forward(conn, request.method, path, list(request.args.items(multi=True)), request.headers,
                           request.get_data(cache=False))
    return Response(result.body, status=result.status, headers=result.headers, direct_passthrough=True)


@blp.route("/<string:conn_id>/proxy/<path:path>")
class Proxy(MethodView):
    decorators = [resolve_path(conn_id=_org_connection), require_access_key]

    @blp.doc(**DOC)
    def get(self, conn, path):
        """Proxy a GET to the connection's API"""
        return _forward(conn, path)

    @blp.doc(**DOC)
    def post(self, conn, path):
        """Proxy a POST to the connection's API (the body is forwarded as sent)"""
        return _forward(conn, path)

    @blp.doc(**DOC)
    def put(self, conn, path):
        """Proxy a PUT to the connection's API"""
        return _forward(conn, path)

    @blp.doc(**DOC)
    def patch(self, conn, path):
        """Proxy a PATCH to the connection's API"""
        return _forward(conn, path)

    @blp.doc(**DOC)
    def delete(self, conn, path):
        """Proxy a DELETE to the connection's API"""
        return _forward(conn, path)
