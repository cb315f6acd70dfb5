"""Built-in plugin: Google accounts (connector ``google``).

Endpoints from Google's "Using OAuth 2.0 for Web Server Applications":
authorization ``https://accounts.google.com/o/oauth2/v2/auth``, token
``https://oauth2.googleapis.com/token``, revocation
``https://oauth2.googleapis.com/revoke`` (takes only ``token``). Offline
access is ``access_type=offline``. Google accepts only ``none``, ``consent``
and ``select_account`` as ``prompt`` and answers ``invalid_request`` to the
service-wide default ``login``, so this provider's default prompt is
``consent`` (which also makes Google issue a refresh token again on
re-authorization); an explicit ``prompt`` or ``approval_prompt`` in
``additionalParams`` still wins. PKCE S256 is supported; the client
authenticates in the body.
"""
from __future__ import annotations

from connect_service import ConnectionType, OAuth2Provider, hookimpl


class GoogleProvider(OAuth2Provider):
    authorize_url = "https://accounts.google.com/o/oauth2/v2/auth"
    token_url = "https://oauth2.googleapis.com/token"
    revoke_url = "https://oauth2.googleapis.com/revoke"
    default_scopes = ("openid", "email")
    scope_separator = " "
    offline_access = "param"
    offline_params = {"access_type": "offline"}
    token_endpoint_auth_method = "client_secret_post"
    supports_pkce = True
    revoke_client_auth = False
    default_prompt = "consent"


class Google(ConnectionType):
    """A Google account (Gmail, Drive, Calendar, … per the scopes requested)."""

    name = "dynamiq.connections.Google"
    title = "Google"
    description = "A Google account connected with OAuth 2.0."
    auth = "oauth2"
    connector_name = "google"
    provider = GoogleProvider()
    api_base_url = "https://www.googleapis.com"  # for /v1/connections/{id}/proxy/…


@hookimpl
def register_connection_types():
    return [Google]
