"""Built-in plugin: Dropbox accounts (connector ``dropbox``).

Endpoints from Dropbox's OAuth guide: authorization
``https://www.dropbox.com/oauth2/authorize``, token
``https://api.dropboxapi.com/oauth2/token`` (HTTP Basic with app key and
secret, as the guide's examples do). Offline access is
``token_access_type=offline`` (short-lived access token plus a refresh
token). Scopes are space-separated and optional (the app's configured
scopes apply when none are asked). PKCE S256 is supported.

Revocation is ``POST https://api.dropboxapi.com/2/auth/token/revoke`` with
the access token as a Bearer header and no body — :meth:`DropboxProvider.revoke`.
"""
from __future__ import annotations

from connect_service import ConnectionType, OAuth2Provider, hookimpl


class DropboxProvider(OAuth2Provider):
    authorize_url = "https://www.dropbox.com/oauth2/authorize"
    token_url = "https://api.dropboxapi.com/oauth2/token"
    revoke_url = "https://api.dropboxapi.com/2/auth/token/revoke"
    default_scopes = ()
    scope_separator = " "
    offline_access = "param"
    offline_params = {"token_access_type": "offline"}
    token_endpoint_auth_method = "client_secret_basic"
    supports_pkce = True
    default_prompt = "login"  # seed 004's default, stated where a reader of the provider looks

    def revoke(self, client, *, access_token, refresh_token, client_id, client_secret, auth_method=None):
        """Revoke the access token (Dropbox ``/2/auth/token/revoke``; this also ends its refresh token)."""
        if not self.revoke_url or not access_token:
            return False
        resp = client.post(self.revoke_url, headers={"Authorization": f"Bearer {access_token}"})
        return resp.status_code == 200


class Dropbox(ConnectionType):
    """A Dropbox account."""

    name = "dynamiq.connections.Dropbox"
    title = "Dropbox"
    description = "A Dropbox account connected with OAuth 2.0."
    auth = "oauth2"
    connector_name = "dropbox"
    provider = DropboxProvider()
    api_base_url = "https://api.dropboxapi.com"  # for /v1/connections/{id}/proxy/…


@hookimpl
def register_connection_types():
    return [Dropbox]
