"""``/v1/connections``: the app backend's view of end-user connections (seed 002).

Secrets (API keys, OAuth tokens) appear only with ``?include_secrets=true``;
such a read refreshes an OAuth token that is about to expire (``refresh=auto``),
always (``force``) or never (``never``) — see :mod:`connect_service.refresh`.
"""
from __future__ import annotations

import datetime
import logging
import time

import marshmallow as ma
from flask import g, request
from flask.views import MethodView
from . import Blueprint
from marshmallow import fields, validate

from .. import errors, oauth, refresh
from ..connections import delete_connection, notify_activated, seal_settings, to_public
from ..db import db_now, write_transaction
from ..fields import NonBlank
from ..models import App, Connection, Credential, utcnow
from ..oauth import MAX_TOKEN_LIFETIME_SECONDS
from . import schemas
from .common import PageArgs, body_doc, iso, load_body, paginate, registry, require_access_key

log = logging.getLogger(__name__)

blp = Blueprint("connections", __name__, url_prefix="/v1/connections",
                description="End-user connections and their credentials")

SECURITY = [{"accessKey": []}]
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


class OAuthCredentialsSchema(ma.Schema):
    """Imported OAuth tokens (seed 002's ``settings.oauth.credentials``)."""

    class Meta:
        unknown = ma.EXCLUDE

    access_token = NonBlank(required=True)
    refresh_token = fields.String(allow_none=True)
    expires_in = fields.Integer(allow_none=True, validate=validate.Range(
        min=0, max=MAX_TOKEN_LIFETIME_SECONDS, error="must be between 0 and {max} seconds (10 years)"))
    expires_at = fields.DateTime(allow_none=True, metadata={
        "description": "ISO 8601; at most 10 years ahead (a past time means: refresh at the next read)"})
    scope = fields.String(allow_none=True)
    token_type = fields.String(allow_none=True)
    id_token = fields.String(allow_none=True)
    client_id = fields.String(allow_none=True)
    raw = fields.Dict(allow_none=True)


class OAuthImportSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    credentials = fields.Nested(OAuthCredentialsSchema, required=True)
    metadata = fields.Dict(allow_none=True)

    @ma.validates_schema(skip_on_field_errors=True)
    def _expiry_in_range(self, data, **kwargs):
        given = (data.get("credentials") or {}).get("expires_at")
        if given is None:
            return
        try:
            naive = given.astimezone(datetime.timezone.utc).replace(tzinfo=None) if given.tzinfo else given
        except (OverflowError, ValueError):
            naive = None
        latest = utcnow() + datetime.timedelta(seconds=MAX_TOKEN_LIFETIME_SECONDS)
        if naive is None or naive > latest:
            message = "must be a valid time at most 10 years from now"
            raise ma.ValidationError({"credentials": {"expires_at": [message]}})


class OAuthSettingsSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    oauth = fields.Nested(OAuthImportSchema, required=True)


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
    id = fields.String(required=True)
    customer_id = fields.String(allow_none=True)
    connector_config_id = fields.String(allow_none=True)
    integration_id = fields.String(allow_none=True)
    created_at = fields.String()
    updated_at = fields.String()
    display_name = fields.String(allow_none=True)
    disabled = fields.Boolean(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    connector_name = fields.String()
    settings = fields.Dict()
    status = fields.String(validate=validate.OneOf(["pending", "active", "error"]))
    status_reason = fields.String(allow_none=True)
    app_id = fields.String(allow_none=True)
    type = fields.String()
    requirement_id = fields.String(allow_none=True)
    last_fetched_at = fields.String(allow_none=True)


READ_PARAMS = [
    {"name": "include_secrets", "in": "query", "schema": {"type": "boolean", "default": False},
     "description": "include API keys / OAuth tokens (the response is then `Cache-Control: no-store`)"},
    {"name": "refresh", "in": "query", "schema": {"type": "string", "enum": ["auto", "force", "never"],
                                                  "default": "auto"},
     "description": "with include_secrets: refresh an OAuth token expiring within the margin (auto), "
                    "always (force) or never"},
]


# --- helpers ----------------------------------------------------------------------------------

def get_org_connection(conn_id: str) -> Connection:
    """A connection of the caller's org, else 404."""
    conn = Connection.get_or_none(Connection.id == conn_id, Connection.org == g.org.id)
    if conn is None:
        raise errors.NotFound()
    return conn


def view(conn: Connection, include_secrets: bool = False) -> dict:
    """Seed 002's shape; ``settings.oauth.last_fetched_at`` mirrors the column (no re-encryption per read)."""
    out = to_public(conn, include_secrets=include_secrets)
    oauth = out["settings"].get("oauth") if isinstance(out["settings"], dict) else None
    if isinstance(oauth, dict):
        oauth["last_fetched_at"] = iso(conn.last_fetched_at)
    return out


def _query_args(schema: type[ma.Schema]) -> dict:
    try:
        return schema().load(request.args.to_dict(flat=True), unknown=ma.EXCLUDE)
    except ma.ValidationError as exc:
        raise errors.BadRequest(errors.flatten_messages(exc.messages)) from None


def _resolve_connector(connector_name: str):
    """(connection type class, is_oauth) for a connector name, else 400."""
    reg = registry()
    cls = reg.get(connector_name)
    if cls is not None and cls.auth == "credentials":
        return cls, False
    cls = reg.by_connector(connector_name)
    if cls is not None and cls.auth == "oauth2":
        return cls, True
    if cls is not None:
        raise errors.BadRequest({"data.connector_name": "accounts of this connector are linked through the "
                                                        "connect flow, not imported"})
    raise errors.BadRequest({"data.connector_name": "is not a registered connector or credentials type"})


def _oauth_settings(credential: Credential, raw_settings: dict) -> tuple[dict, object]:
    """Imported tokens -> stored settings and expiry, through the same code the OAuth flow uses."""
    try:
        loaded = OAuthSettingsSchema().load(raw_settings)
    except ma.ValidationError as exc:
        raise errors.BadRequest(errors.flatten_messages(exc.messages, "data.settings")) from None
    creds = loaded["oauth"]["credentials"]
    now = db_now()  # the refresh logic compares expires_at with the database clock
    token = {key: value for key, value in creds.items()
             if value is not None and key not in ("expires_at", "raw", "client_id")}
    given_expiry = creds.get("expires_at")
    if given_expiry is not None:
        if given_expiry.tzinfo is not None:
            given_expiry = given_expiry.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        token["expires_in"] = max(0, int((given_expiry - now).total_seconds()))
    settings, expires_at = oauth.token_settings(token, previous=None, provider=oauth.provider_for(credential),
                                                credential=credential, now=now)
    if given_expiry is not None:  # keep the caller's exact expiry, even when already past
        expires_at = given_expiry
        settings["oauth"]["credentials"]["expires_at"] = iso(given_expiry)
        settings["oauth"]["credentials"]["expires_in"] = token["expires_in"]
    if creds.get("raw"):
        settings["oauth"]["credentials"]["raw"] = creds["raw"]
    if loaded["oauth"].get("metadata"):
        settings["oauth"]["metadata"] = loaded["oauth"]["metadata"]
    return settings, expires_at


def _refresh_for_read(conn: Connection, mode: str) -> Connection:
    """Apply ``refresh=auto|force`` to a secrets read; map refresh failures to API errors."""
    started = db_now() - datetime.timedelta(seconds=time.perf_counter() - g.get("started", time.perf_counter()))
    try:
        return refresh.refresh_connection(conn.id, force=(mode == "force"), not_before=started)
    except refresh.ProviderUnavailable as exc:
        details = {"refresh": exc.reason, "provider": conn.connector_name}
        if exc.token_url:
            details["token_url"] = exc.token_url
        raise errors.BadGateway(details) from None
    except refresh.RefreshRejected as exc:
        raise errors.BadGateway({"refresh": exc.reason, "provider": conn.connector_name,
                                 "status": "error"}) from None
    except refresh.NotRefreshable as exc:
        raise errors.Conflict({"refresh": f"cannot refresh: {exc.reason}"}) from None


# --- routes -----------------------------------------------------------------------------------

@blp.route("")
class Connections(MethodView):
    decorators = [require_access_key]

    @blp.doc(security=SECURITY, **body_doc(ConnectionCreateSchema, "seed 002"))
    @blp.response(200, ConnectionSchema)
    def post(self):
        """Create (import) a connection (answers 200, as seed 002 documents)"""
        data = load_body(ConnectionCreateSchema)
        credential = Credential.get_or_none(Credential.id == data["connector_config_id"],
                                            Credential.org == g.org.id)
        if credential is None:
            raise errors.BadRequest({"connector_config_id": "is not a credential of this organization"})
        app = None
        if data.get("app_id"):
            app = App.get_or_none(App.id == data["app_id"], App.org == g.org.id)
            if app is None:
                raise errors.BadRequest({"app_id": "is not an app of this organization"})
            if not oauth.credential_available_to(credential, app):
                raise errors.BadRequest({"connector_config_id": "is not available to this app (see the "
                                                                "credential's read_access)"})
        connector_name = data["data"]["connector_name"]
        cls, is_oauth = _resolve_connector(connector_name)
        conn = Connection(org=g.org.id, app=app, customer_id=data.get("customer_id"), credential=credential,
                          metadata=data.get("metadata") or {}, display_name=data.get("display_name"))
        if is_oauth:
            if credential.connector_name != connector_name:
                raise errors.BadRequest({"connector_config_id": f"serves {credential.connector_name!r}, "
                                                                f"not {connector_name!r}"})
            settings, expires_at = _oauth_settings(credential, data["data"]["settings"])
            conn.connector_name = connector_name
        else:
            try:
                settings = cls.load_config(data["data"]["settings"])
            except ma.ValidationError as exc:
                raise errors.BadRequest(errors.flatten_messages(exc.messages, "data.settings")) from None
            expires_at = None
            conn.connector_name = cls.connector_name
        now = utcnow()
        conn.type = cls.name
        conn.integration_id = cls.name
        conn.status = "active"
        conn.expires_at = expires_at
        conn.created_at = conn.updated_at = now
        conn.settings_encrypted = seal_settings(conn, settings)
        conn.save(force_insert=True)
        notify_activated(conn)
        return view(conn)

    @blp.doc(security=SECURITY)
    @blp.arguments(ListArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(ConnectionSchema))
    def get(self, **args):
        """List connections (filters: customer_id, connector_name, type, app_id, status)"""
        query = Connection.select().where(Connection.org == g.org.id)
        for name in ("customer_id", "connector_name", "type", "status"):
            if args.get(name) is not None:
                query = query.where(getattr(Connection, name) == args[name])
        if args.get("app_id") is not None:
            query = query.where(Connection.app == args["app_id"])
        rows, cursor = paginate(query, Connection, args)
        return {"data": [view(c) for c in rows], "next_cursor": cursor}


@blp.route("/<string:conn_id>")
class ConnectionItem(MethodView):
    decorators = [require_access_key]

    @blp.doc(security=SECURITY, parameters=READ_PARAMS)
    @blp.response(200, ConnectionSchema, headers={"Cache-Control": {"schema": {"type": "string"}}})
    def get(self, conn_id):
        """Get a connection; with include_secrets=true, its (fresh) credentials"""
        conn = get_org_connection(conn_id)
        args = _query_args(ReadArgs)
        if not args["include_secrets"]:
            return view(conn)
        if args["refresh"] != "never":
            conn = _refresh_for_read(conn, args["refresh"])
        now = utcnow()
        Connection.update(last_fetched_at=now).where(Connection.id == conn.id).execute()
        conn.last_fetched_at = now
        return view(conn, include_secrets=True), 200, NO_STORE

    @blp.doc(security=SECURITY, **body_doc(ConnectionPatchSchema))
    @blp.response(200, ConnectionSchema)
    def patch(self, conn_id):
        """Update metadata (shallow merge), display_name, disabled"""
        conn = get_org_connection(conn_id)
        data = load_body(ConnectionPatchSchema)
        with write_transaction():
            current = Connection.get_by_id(conn.id)
            changes = {Connection.updated_at: utcnow()}
            if "metadata" in data:
                changes[Connection.metadata] = {**(current.metadata or {}), **data["metadata"]}
            if "display_name" in data:
                changes[Connection.display_name] = data["display_name"]
            if "disabled" in data:
                changes[Connection.disabled] = data["disabled"]
            # only these columns: a concurrent refresh's token write is never overwritten
            Connection.update(changes).where(Connection.id == conn.id).execute()
        return view(Connection.get_by_id(conn.id))

    @blp.doc(security=SECURITY)
    @blp.response(204)
    def delete(self, conn_id):
        """Revoke the tokens at the provider where it can, then delete the connection"""
        delete_connection(get_org_connection(conn_id))

