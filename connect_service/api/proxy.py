"""``/v1/connections/{id}/proxy/{path}``: the HTTP face of ``proxy.py`` (any method, Access Key).

The body and query string are the provider's business, so this view takes
them raw (no ``@blp.arguments`` schema) and answers the provider's response
as a stream.
"""
from __future__ import annotations

from flask import Response, request
from flask.views import MethodView

from .. import proxy
from ..auth import require_access_key
from ..models import Connection
from . import Blueprint
from .common import load_key_and_connection, org_connection, resolve_path
from .openapi import ACCESS_KEY

blp = Blueprint("proxy", __name__, url_prefix="/v1/connections",
                description="Call a provider's API with a connection's credential injected")


def _passed_through(description: str) -> dict:
    """OpenAPI: an answer the provider wrote (any status, any media type), or the service's own refusal."""
    return {"description": description, "content": {"*/*": {"schema": {}}}}


#: the provider's answers pass through unchanged, so every status is free-form; the service's own refusals
#: (the ``Error`` schema) share those statuses, and the ranges say which they are
ANSWERS = {
    "2XX": _passed_through("the provider's answer, streamed"),
    "3XX": _passed_through("the provider's answer (such as 304; redirects are followed, each "
                           "through the guarded client)"),
    "4XX": _passed_through("the provider's answer, or the service's own refusal (`Error`): 400 a `.` or `..` "
                           "path segment; 401 no valid Access Key; 404 no such connection; 409 the connection "
                           "is not active, holds no secret or its type cannot be proxied"),
    "400": _passed_through("a `.` or `..` path segment or a NUL in a query argument (`Error`), or the provider's 400"),
    "404": _passed_through("no such connection (`Error`), or the provider's 404"),
    "5XX": _passed_through("the provider's answer, or the service's own (`Error`): 502 the provider could not "
                           "be reached or answered too much; 503 the database is unavailable"),
    "503": _passed_through("the database is unavailable (`Error`), or the provider's 503"),
}
#: the body is forwarded as sent
#: the ``path`` parameter: what the proxy accepts (a ``.`` or ``..`` segment is a 400)
PATH = {"parameters": [{"in": "path", "name": "path", "required": True, "schema": {
    "type": "string", "pattern": proxy.PATH_PATTERN}, "description": "the path below the connection type's API base URL"}]}
BODY = {"requestBody": {"required": False, "description": "forwarded to the provider unchanged",
                        "content": {"*/*": {"schema": {}}}}}


def _forward(conn: Connection, path: str) -> Response:
    result = proxy.forward(conn, request.method, path, list(request.args.items(multi=True)), request.headers,
                           request.get_data(cache=False))
    return Response(result.body, status=result.status, headers=result.headers, direct_passthrough=True)


@blp.route("/<string:conn_id>/proxy/<path:path>")
class Proxy(MethodView):
    decorators = [resolve_path(conn_id=org_connection), require_access_key(load=load_key_and_connection)]

    @blp.operation("proxyGet", security=ACCESS_KEY, responses=ANSWERS, **PATH)
    def get(self, conn, path):
        """Proxy a GET to the connection's API"""
        return _forward(conn, path)

    @blp.operation("proxyPost", security=ACCESS_KEY, responses=ANSWERS, **PATH, **BODY)
    def post(self, conn, path):
        """Proxy a POST to the connection's API (the body is forwarded as sent)"""
        return _forward(conn, path)

    @blp.operation("proxyPut", security=ACCESS_KEY, responses=ANSWERS, **PATH, **BODY)
    def put(self, conn, path):
        """Proxy a PUT to the connection's API"""
        return _forward(conn, path)

    @blp.operation("proxyPatch", security=ACCESS_KEY, responses=ANSWERS, **PATH, **BODY)
    def patch(self, conn, path):
        """Proxy a PATCH to the connection's API"""
        return _forward(conn, path)

    @blp.operation("proxyDelete", security=ACCESS_KEY, responses=ANSWERS, **PATH)
    def delete(self, conn, path):
        """Proxy a DELETE to the connection's API"""
        return _forward(conn, path)
