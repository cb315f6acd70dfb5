"""Built-in plugin: Notion workspaces (connector ``notion``).

Endpoints from Notion's "Authorization" guide: authorization
``https://api.notion.com/v1/oauth/authorize`` (always ``owner=user``),
token ``https://api.notion.com/v1/oauth/token`` and revocation
``https://api.notion.com/v1/oauth/revoke``: both take a JSON body, HTTP Basic
client authentication and a ``Notion-Version`` header. Notion has no scopes
and no offline ask, and does not document PKCE (off).
"""
from __future__ import annotations

from connect_service import ConnectionType, OAuth2Provider, hookimpl

NOTION_VERSION = "2025-09-03"


class NotionProvider(OAuth2Provider):
    authorize_url = "https://api.notion.com/v1/oauth/authorize"
    token_url = "https://api.notion.com/v1/oauth/token"
    revoke_url = "https://api.notion.com/v1/oauth/revoke"
    default_scopes = ()
    offline_access = None
    token_endpoint_auth_method = "client_secret_basic"
    supports_pkce = False
    extra_authorize_params = {"owner": "user"}
    token_request_format = "json"
    request_headers = {"Notion-Version": NOTION_VERSION}
    default_prompt = "login"  # seed 004's default, stated where a reader of the provider looks

    def revoke(self, client, *, access_token, refresh_token, client_id, client_secret, auth_method=None):
        """Revoke the access token (Notion ``POST /v1/oauth/revoke``, JSON ``{"token"}``, Basic auth)."""
        if not self.revoke_url or not access_token:
            return False
        kwargs = self.prepare_token_request({"token": access_token}, client_id=client_id,
                                            client_secret=client_secret, auth_method="client_secret_basic")
        resp = client.post(self.revoke_url, **kwargs)
        return resp.status_code == 200


class Notion(ConnectionType):
    """A Notion workspace (the pages the user shares with the integration)."""

    name = "dynamiq.connections.Notion"
    title = "Notion"
    description = "A Notion workspace connected with OAuth 2.0."
    auth = "oauth2"
    connector_name = "notion"
    provider = NotionProvider()
    api_base_url = "https://api.notion.com"  # for /v1/connections/{id}/proxy/…


@hookimpl
def register_connection_types():
    return [Notion]
