"""``/v1/credentials``: the HTTP face of ``credentials.py`` (OAuth2 client registrations, seed 003).

``authorization_code`` credentials answer a signed ``redirect_url`` that
starts an org-level connection; ``client_credentials`` ones fetch a token at
once into an org-level connection (unless the connector is an action-account
platform, whose plugin owns that token).
"""
from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import g
from flask.views import MethodView
from marshmallow import fields, validate

from .. import credentials, oauth
from ..auth import require_access_key
from ..credentials import CredentialPatchSchema, CredentialSchema, org_level_connection
from ..models import AccessKey, Credential
from ..timestamps import iso
from . import Blueprint, schemas
from .common import PageArgs, paginate, resolve_path
from .openapi import ACCESS_KEY

blp = Blueprint("credentials", __name__, url_prefix="/v1/credentials", description="OAuth2 credentials (seed 003)")


class OwnerSchema(ma.Schema):
    access_key_id = fields.String(required=True)
    name = fields.String(required=True)


class TestCredentialSchema(ma.Schema):
    id = fields.String(required=True)
    created_at = schemas.timestamp()
    updated_at = schemas.timestamp()


class CredentialOutSchema(ma.Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    slug = fields.String(required=True)
    mode = fields.String(required=True)
    connector_name = fields.String(required=True)
    redirect_url = fields.String(required=True, metadata={
        "description": "authorization_code: a signed link that starts the org-level authorization (one start, "
        "start_link_max_age_seconds); else empty"})
    redirect_uri = fields.String(required=True, metadata={"description": "this credential's OAuth2 callback: register "
                                                                         "this exact URL at the provider"})
    app_id = fields.String(required=True, allow_none=True)
    folder_id = fields.String(required=True, allow_none=True)
    live_credential_id = fields.String(required=True, allow_none=True, metadata={
        "description": "the live credential this one is the test credential of"})
    read_access = fields.String(required=True, validate=validate.OneOf(["APP", "ORGANIZATION", "SPECIFIC_APPS"]))
    shared_app_slugs = fields.List(fields.String(), required=True)
    description = fields.String(required=True)
    allowed_hosts = fields.List(fields.String(), required=True)
    metadata = fields.Dict(required=True)
    restriction_type = fields.String(required=True, validate=validate.OneOf(["RESTRICTED", "UNRESTRICTED"]))
    test_credential_enabled = fields.Boolean(required=True, metadata={
        "description": "whether a test credential names this one as its live_credential_id"})
    test_credential = fields.Nested(TestCredentialSchema, required=True, allow_none=True)
    owner = fields.Nested(OwnerSchema, required=True, allow_none=True, metadata={
        "description": "the Access Key that created the credential (null: created otherwise, or the key is gone)"})
    oauth_url = fields.String(required=True, allow_none=True)
    oauth_token_url = fields.String(required=True, allow_none=True)
    oauth_client_id = fields.String(required=True, allow_none=True)
    oauth_client_secret_set = fields.Boolean(required=True)
    oauth_scope = fields.String(required=True)
    oauth_grant_type = fields.String(required=True, validate=validate.OneOf(["authorization_code",
                                                                             "client_credentials"]))
    oauthPkceCodeChallengeMethod = fields.String(required=True, allow_none=True)
    oauth_token_endpoint_auth_method = fields.String(required=True)
    oauth_issuer = fields.String(required=True, allow_none=True)
    settings = fields.Dict(required=True)
    connection_id = fields.String(required=True, allow_none=True)
    created_at = schemas.timestamp()
    updated_at = schemas.timestamp()


def credential_view(cred: Credential) -> dict[str, Any]:
    provider = oauth.provider_for(cred)
    conn = org_level_connection(cred)
    test = credentials.test_credential_of(cred)
    owner = AccessKey.get_or_none(AccessKey.id == cred.owner_key_id) if cred.owner_key_id else None
    return {
        "id": cred.id, "name": cred.name, "slug": cred.slug, "mode": cred.mode,
        "connector_name": cred.connector_name,
        "redirect_url": oauth.credential_start_url(cred) if cred.oauth_grant_type == "authorization_code" else "",
        "redirect_uri": oauth.callback_url(cred),
        "app_id": cred.app_id, "folder_id": cred.folder_id, "live_credential_id": cred.live_credential_id,
        "read_access": cred.read_access,
        "shared_app_slugs": list(cred.shared_app_slugs or []), "description": cred.description or "",
        "allowed_hosts": list(cred.allowed_hosts or []), "metadata": cred.metadata or {},
        "restriction_type": "RESTRICTED" if cred.allowed_hosts else "UNRESTRICTED",
        "test_credential_enabled": test is not None,
        "test_credential": None if test is None else {
            "id": test.id, "created_at": iso(test.created_at), "updated_at": iso(test.updated_at)},
        "owner": None if owner is None else {"access_key_id": owner.id, "name": owner.name},
        "oauth_url": provider.authorize_url, "oauth_token_url": provider.token_url,
        "oauth_client_id": cred.oauth_client_id,
        "oauth_client_secret_set": bool(cred.oauth_client_secret_encrypted),
        "oauth_scope": cred.oauth_scope or "", "oauth_grant_type": cred.oauth_grant_type,
        "oauthPkceCodeChallengeMethod": oauth.effective_pkce_method(cred),
        "oauth_token_endpoint_auth_method": oauth.effective_auth_method(cred),
        "oauth_issuer": provider.issuer,
        "settings": cred.settings or {},
        "connection_id": conn.id if conn is not None else None,
        "created_at": iso(cred.created_at), "updated_at": iso(cred.updated_at),
    }


def _org_credential(credential_id: str) -> Credential:
    return credentials.get_for_org(g.org.id, credential_id)


@blp.route("")
class Credentials(MethodView):
    decorators = [require_access_key]

    @blp.operation("createCredential", 400, 401, 413, 415, 502, security=ACCESS_KEY)
    @blp.arguments(CredentialSchema)
    @blp.response(201, CredentialOutSchema)
    def post(self, data):
        """Create an OAuth2 credential (seed 003)"""
        return credential_view(credentials.create(g.org, data, owner=g.access_key))

    @blp.operation("listCredentials", 400, 401, security=ACCESS_KEY)
    @blp.arguments(PageArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(CredentialOutSchema))
    def get(self, **args):
        """List credentials"""
        rows, cursor = paginate(Credential.select().where(Credential.org == g.org.id), Credential, args)
        return {"data": [credential_view(c) for c in rows], "next_cursor": cursor}


@blp.route("/<string:credential_id>")
class CredentialItem(MethodView):
    decorators = [resolve_path(credential_id=_org_credential), require_access_key]

    @blp.operation("getCredential", 401, 404, security=ACCESS_KEY)
    @blp.response(200, CredentialOutSchema)
    def get(self, credential):
        """Get a credential (a fresh signed redirect_url with every read)"""
        return credential_view(credential)

    @blp.operation("updateCredential", 400, 401, 404, 413, 415, 502, security=ACCESS_KEY)
    @blp.arguments(CredentialPatchSchema)
    @blp.response(200, CredentialOutSchema)
    def patch(self, data, credential):
        """Update a credential; a client_credentials token is fetched again when its inputs change"""
        return credential_view(credentials.update(credential, data))

    @blp.operation("deleteCredential", 401, 404, security=ACCESS_KEY)
    @blp.response(204)
    def delete(self, credential):
        """Delete a credential; its own org-level connection is revoked and removed"""
        credentials.delete(credential)
