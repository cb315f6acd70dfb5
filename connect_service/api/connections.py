"""``/v1/connections``: the app backend's view of end-user connections (seed 002).

Secrets (API keys, OAuth tokens) appear only with ``?include_secrets=true``;
such a read refreshes an OAuth token that is about to expire (``refresh=auto``),
always (``force``) or never (``never``) — see :mod:`connect_service.refresh`.
"""
from __future__ import annotations

import datetime
import time

import marshmallow as ma
from flask import g, request
from flask.views import MethodView
from marshmallow import fields, validate

from .. import errors, lifecycle
from ..auth import require_access_key
from ..connections import connection_view, org_connections, update_connection
from ..db import db_now
from ..fields import NonBlank
from ..models import Connection
from . import Blueprint, schemas
from .common import PageArgs, dumped, load_key_and_connection, org_connection, paginate, resolve_path
from .openapi import ACCESS_KEY

blp = Blueprint("connections", __name__, url_prefix="/v1/connections",
                description="End-user connections and their credentials")

NO_STORE = {"Cache-Control": "no-store"}


# --- schemas ----------------------------------------------------------------------------------

class ConnectionDataSchema(ma.Schema):
    connector_name = NonBlank(required=True, metadata={
        "description": "a provider connector (`google`, `oauth2`, …) or a credentials type name "
                       "(`dynamiq.connections.HttpApiKey`)", "example": "google"})
    settings = fields.Dict(required=True, metadata={
        "description": "OAuth connectors: `{\"oauth\": {\"credentials\": {access_token, refresh_token, "
                       "expires_at|expires_in, scope, token_type}}}`; credentials types: the type's config"})


class ConnectionCreateSchema(ma.Schema):
    connector_config_id = NonBlank(required=True, metadata={
        "description": "a credential id (`ccfg_…`) of your organization, available to `app_id` when given "
                       "(its read_access). OAuth connectors: the client registration whose tokens these are "
                       "(refreshes use it; its connector_name must equal data.connector_name). Credentials "
                       "types (API keys): only records which registration the connection is filed under; "
                       "nothing of the credential is used"})
    customer_id = fields.String(required=True, allow_none=True, validate=validate.Length(min=1, max=200),
                                metadata={"description": "your end user's id (null: app- or org-level)"})
    data = fields.Nested(ConnectionDataSchema, required=True)
    metadata = fields.Dict(load_default=dict, allow_none=True)
    app_id = fields.String(load_default=None, allow_none=True)
    display_name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class ConnectionPatchSchema(ma.Schema):
    metadata = fields.Dict(metadata={"description": "shallow-merged into the stored metadata"})
    display_name = fields.String(allow_none=True, validate=validate.Length(max=200))
    disabled = fields.Boolean()


class ListArgs(PageArgs):
    customer_id = fields.String()
    connector_name = fields.String()
    type = fields.String()
    app_id = fields.String()
    status = fields.String(validate=validate.OneOf(["pending", "active", "error"]))


class ReadArgs(ma.Schema):
    include_secrets = fields.Boolean(load_default=False)
    refresh = fields.String(load_default="auto", validate=validate.OneOf(["auto", "force", "never"]))


class ConnectionSchema(ma.Schema):
    """Seed 002's connection: every field it lists as required is always present (null where it says so)."""

    id = fields.String(required=True)
    customer_id = fields.String(required=True, allow_none=True)
    connector_config_id = fields.String(required=True, allow_none=True)
    integration_id = fields.String(required=True, allow_none=True)
    created_at = schemas.timestamp()
    updated_at = schemas.timestamp()
    display_name = fields.String(required=True, allow_none=True)
    disabled = fields.Boolean(required=True, allow_none=True)
    metadata = fields.Dict(allow_none=True)
    connector_name = fields.String(required=True)
    settings = fields.Dict(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["pending", "active", "error"]))
    status_reason = fields.String(required=True, allow_none=True)
    app_id = fields.String(required=True, allow_none=True)
    type = fields.String(required=True)
    requirement_id = fields.String(required=True, allow_none=True)
    last_fetched_at = schemas.timestamp(allow_none=True)


READ_PARAMS = [
    {"name": "include_secrets", "in": "query", "schema": {"type": "boolean", "default": False},
     "description": "include API keys / OAuth tokens (the response is then `Cache-Control: no-store`)"},
    {"name": "refresh", "in": "query", "schema": {"type": "string", "enum": ["auto", "force", "never"],
                                                  "default": "auto"},
     "description": "with include_secrets: refresh an OAuth token expiring within the margin (auto), "
                    "always (force) or never"},
]


# --- helpers ----------------------------------------------------------------------------------

READ_ARGS = ReadArgs()  # made once: instantiating a schema deep-copies its fields


def _query_args(schema: ma.Schema) -> dict:
    try:
        return schema.load(request.args.to_dict(flat=True), unknown=ma.EXCLUDE)
    except ma.ValidationError as exc:
        raise errors.BadRequest(errors.flatten_messages(exc.messages)) from None


def _request_started() -> datetime.datetime:
    """When this request arrived, on the database clock (forced reads that overlap share a refresh)."""
    return db_now() - datetime.timedelta(seconds=time.perf_counter() - g.get("started", time.perf_counter()))


# --- routes -----------------------------------------------------------------------------------

@blp.route("")
class Connections(MethodView):
    decorators = [require_access_key]

    @blp.operation("createConnection", 400, 401, 404, 413, 415, security=ACCESS_KEY)
    @blp.arguments(ConnectionCreateSchema, description="seed 002")
    @blp.response(200, ConnectionSchema)
    def post(self, data):
        """Create (import) a connection (answers 200, as seed 002 documents)"""
        return connection_view(lifecycle.import_connection(g.org.id, data))

    @blp.operation("listConnections", 400, 401, security=ACCESS_KEY)
    @blp.arguments(ListArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(ConnectionSchema))
    def get(self, **args):
        """List connections (filters: customer_id, connector_name, type, app_id, status)"""
        rows, cursor = paginate(org_connections(g.org.id, args), Connection, args)
        return {"data": [connection_view(c) for c in rows], "next_cursor": cursor}


@blp.route("/<string:conn_id>")
class ConnectionItem(MethodView):
    # one query for the key and the connection (api.common.load_key_and_connection)
    decorators = [resolve_path(conn_id=org_connection), require_access_key(load=load_key_and_connection)]

    @blp.operation("getConnection", 400, 401, 404, 409, 502, security=ACCESS_KEY, parameters=READ_PARAMS)
    @blp.response(200, ConnectionSchema, headers={"Cache-Control": {"schema": {"type": "string"}}})
    def get(self, conn):
        """Get a connection; with include_secrets=true, its (fresh) credentials"""
        args = _query_args(READ_ARGS)
        not_before = _request_started() if args["include_secrets"] and args["refresh"] == "force" else None
        out = lifecycle.read_connection(conn, include_secrets=args["include_secrets"], refresh_mode=args["refresh"],
                                        not_before=not_before)
        return (dumped(out), 200, NO_STORE) if args["include_secrets"] else dumped(out)

    @blp.operation("updateConnection", 400, 401, 404, 413, 415, security=ACCESS_KEY)
    @blp.arguments(ConnectionPatchSchema)
    @blp.response(200, ConnectionSchema)
    def patch(self, data, conn):
        """Update metadata (shallow merge), display_name, disabled"""
        return connection_view(update_connection(conn, data))

    @blp.operation("deleteConnection", 401, 404, security=ACCESS_KEY)
    @blp.response(204)
    def delete(self, conn):
        """Revoke the tokens at the provider where it can, then delete the connection"""
        lifecycle.delete_connection(conn)

