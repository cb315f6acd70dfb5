"""Built-in plugin: GitHub accounts (connector ``github``).

Endpoints from GitHub's "Authorizing OAuth apps": authorization
``https://github.com/login/oauth/authorize``, token
``https://github.com/login/oauth/access_token`` (JSON with
``Accept: application/json``; errors come back with HTTP 200 and an
``error`` field, which the default parser treats as errors). Scopes are
space-separated; there is no offline ask (OAuth-app tokens do not expire;
GitHub-App user tokens come with ``expires_in`` and a refresh token). PKCE
S256 is supported since July 2025. The client authenticates in the body.

Revocation is not RFC 7009: it is ``DELETE
https://api.github.com/applications/{client_id}/token`` with the app's
client id and secret as HTTP Basic and ``{"access_token": …}`` as JSON,
answering 204 — implemented by :meth:`GitHubProvider.revoke`.
"""
from __future__ import annotations

from connect_service import ConnectionType, OAuth2Provider, hookimpl
from connect_service.connection_types import basic_authorization


class GitHubProvider(OAuth2Provider):
    authorize_url = "https://github.com/login/oauth/authorize"
    token_url = "https://github.com/login/oauth/access_token"
    revoke_url = "https://api.github.com/applications/{client_id}/token"
    default_scopes = ("read:user",)
    scope_separator = " "
    offline_access = None
    token_endpoint_auth_method = "client_secret_post"
    supports_pkce = True

    def revoke(self, client, *, access_token, refresh_token, client_id, client_secret, auth_method=None):
        """Delete the app authorization's token (GitHub REST ``DELETE /applications/{client_id}/token``)."""
        if not self.revoke_url or not access_token or client_secret is None:
            return False
        resp = client.request("DELETE", self.revoke_url, json={"access_token": access_token}, headers={
            "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
            "Authorization": basic_authorization(client_id or "", client_secret)})
        return resp.status_code == 204


class GitHub(ConnectionType):
    """A GitHub account."""

    name = "dynamiq.connections.GitHub"
    title = "GitHub"
    description = "A GitHub account connected with OAuth 2.0."
    auth = "oauth2"
    connector_name = "github"
    provider = GitHubProvider()


@hookimpl
def register_connection_types():
    return [GitHub]
