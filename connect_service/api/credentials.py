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
from marshmallow import fields

from .. import credentials, oauth
from ..auth import require_access_key
from ..credentials import CredentialPatchSchema, CredentialSchema, org_level_connection
from ..models import Credential
from ..timestamps import iso
from . import Blueprint, schemas
from .common import PageArgs, paginate, resolve_path
from .openapi import ACCESS_KEY

blp = Blueprint("credentials", __name__, url_prefix="/v1/credentials", description="OAuth2 credentials (seed 003)")


class CredentialOutSchema(ma.Schema):
    id = fields.String()
    name = fields.String()
    slug = fields.String()
    mode = fields.String()
    connector_name = fields.String()
    redirect_url = fields.String()
    app_id = fields.String(allow_none=True)
    folder_id = fields.String(allow_none=True)
    read_access = fields.String()
    shared_app_slugs = fields.List(fields.String())
    description = fields.String()
    allowed_hosts = fields.List(fields.String())
    metadata = fields.Dict()
    restriction_type = fields.String()
    test_credential_enabled = fields.Boolean()
    oauth_url = fields.String(allow_none=True)
    oauth_token_url = fields.String(allow_none=True)
    oauth_client_id = fields.String(allow_none=True)
    oauth_client_secret_set = fields.Boolean()
    oauth_scope = fields.String()
    oauth_grant_type = fields.String()
    oauthPkceCodeChallengeMethod = fields.String(allow_none=True)
    oauth_token_endpoint_auth_method = fields.String()
    oauth_issuer = fields.String(allow_none=True)
    settings = fields.Dict()
    connection_id = fields.String(allow_none=True)
    created_at = fields.String()
    updated_at = fields.String()


def credential_view(cred: Credential) -> dict[str, Any]:
    provider = oauth.provider_for(cred)
    conn = org_level_connection(cred)
    return {
        "id": cred.id, "name": cred.name, "slug": cred.slug, "mode": cred.mode,
        "connector_name": cred.connector_name,
        "redirect_url": oauth.credential_start_url(cred) if cred.oauth_grant_type == "authorization_code" else "",
        "app_id": cred.app_id, "folder_id": None, "read_access": cred.read_access,
        "shared_app_slugs": list(cred.shared_app_slugs or []), "description": cred.description or "",
        "allowed_hosts": list(cred.allowed_hosts or []), "metadata": cred.metadata or {},
        "restriction_type": "RESTRICTED" if cred.allowed_hosts else "UNRESTRICTED",
        "test_credential_enabled": False,
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
        return credential_view(credentials.create(g.org, data))

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
