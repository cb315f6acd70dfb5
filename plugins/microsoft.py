"""Built-in plugin: Microsoft accounts via the identity platform v2.0 (connector ``microsoft``).

Endpoints from "Microsoft identity platform and OAuth 2.0 authorization code
flow": ``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize``
and ``…/oauth2/v2.0/token``; ``tenant`` comes from the credential's
``settings`` (``common``, ``organizations``, ``consumers`` or a tenant id /
domain; default ``common``). Offline access is the ``offline_access`` scope;
PKCE S256 is supported; confidential clients send the secret in the body.
The platform has no RFC 7009 revocation endpoint, so there is no revoke URL
(deleting a connection only forgets its tokens).
"""
from __future__ import annotations

from marshmallow import Schema

from connect_service import ConnectionType, OAuth2Provider, fields, hookimpl


class MicrosoftSettings(Schema):
    tenant = fields.String(load_default="common", validate=fields.FullMatch(
        r"^[A-Za-z0-9.-]{1,100}$", error="must be common, organizations, consumers, a tenant id or a domain"),
        metadata={"label": "Tenant"})


class MicrosoftProvider(OAuth2Provider):
    authorize_url = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize"
    token_url = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
    revoke_url = None
    default_scopes = ("openid", "profile", "email", "User.Read")
    scope_separator = " "
    offline_access = "scope"
    offline_scope = "offline_access"
    token_endpoint_auth_method = "client_secret_post"
    supports_pkce = True
    default_prompt = "login"  # seed 004's default, stated where a reader of the provider looks


class Microsoft(ConnectionType):
    """A Microsoft work, school or personal account (Microsoft Graph)."""

    name = "dynamiq.connections.Microsoft"
    title = "Microsoft"
    description = "A Microsoft account connected with OAuth 2.0 (Microsoft Graph)."
    auth = "oauth2"
    connector_name = "microsoft"
    provider = MicrosoftProvider()
    api_base_url = "https://graph.microsoft.com"  # for /v1/connections/{id}/proxy/…
    settings_schema = MicrosoftSettings


@hookimpl
def register_connection_types():
    return [Microsoft]
