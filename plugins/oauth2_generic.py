"""Built-in plugin: the generic OAuth2 connection (connector ``oauth2``) for any RFC 6749 server.

The credential supplies every URL (``oauth_url``, ``oauth_token_url``) and,
optionally, ``settings.revoke_url`` (an RFC 7009 endpoint) and
``oauth_issuer`` (RFC 9207). Offline access is the standard
``offline_access`` scope; client authentication defaults to HTTP Basic.
"""
from __future__ import annotations

from marshmallow import Schema

from connect_service import ConnectionType, OAuth2Provider, fields, hookimpl


class GenericOAuth2Settings(Schema):
    revoke_url = fields.Url(allow_none=True, metadata={
        "label": "Revocation URL", "help": "RFC 7009 token revocation endpoint, used when a connection is deleted"})
    api_base_url = fields.Url(allow_none=True, metadata={
        "label": "API base URL", "help": "where /v1/connections/{id}/proxy/… sends requests (its path is kept)"})


class OAuth2(ConnectionType):
    """Any OAuth2 authorization server, described entirely by the credential."""

    name = "dynamiq.connections.OAuth2"
    title = "OAuth2"
    description = "An account at any OAuth 2.0 server, connected with the authorization-code flow and PKCE."
    auth = "oauth2"
    connector_name = "oauth2"
    provider = OAuth2Provider(
        offline_access="scope",
        offline_scope="offline_access",
        token_endpoint_auth_method="client_secret_basic",
        supports_pkce=True,
        default_prompt="login",  # seed 004
    )
    settings_schema = GenericOAuth2Settings

    @classmethod
    def proxy_base_url(cls, config, credential_settings):
        """The credential's ``settings.api_base_url``: the server is known only to the credential."""
        return credential_settings.get("api_base_url")


@hookimpl
def register_connection_types():
    return [OAuth2]
