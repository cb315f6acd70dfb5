"""Built-in plugin: Box accounts (connector ``box``).

Endpoints from Box's OAuth 2.0 guide: authorization
``https://account.box.com/api/oauth2/authorize``, token
``https://api.box.com/oauth2/token`` and revocation
``https://api.box.com/oauth2/revoke`` (``client_id``, ``client_secret`` and
``token`` in the form body, which is RFC 7009 with ``client_secret_post``).
Box always returns a refresh token (standard refresh, no offline ask);
access tokens live about an hour. Box does not document PKCE, so it is off.
"""
from __future__ import annotations

from connect_service import ConnectionType, OAuth2Provider, hookimpl


class BoxProvider(OAuth2Provider):
    authorize_url = "https://account.box.com/api/oauth2/authorize"
    token_url = "https://api.box.com/oauth2/token"
    revoke_url = "https://api.box.com/oauth2/revoke"
    default_scopes = ()
    scope_separator = " "
    offline_access = None
    token_endpoint_auth_method = "client_secret_post"
    supports_pkce = False
    default_prompt = "login"  # seed 004's default, stated where a reader of the provider looks


class Box(ConnectionType):
    """A Box account."""

    name = "dynamiq.connections.Box"
    title = "Box"
    description = "A Box account connected with OAuth 2.0."
    auth = "oauth2"
    connector_name = "box"
    provider = BoxProvider()
    api_base_url = "https://api.box.com"  # for /v1/connections/{id}/proxy/…


@hookimpl
def register_connection_types():
    return [Box]
