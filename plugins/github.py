"""Built-in plugin: GitHub accounts (connector ``github``).

Endpoints from GitHub's "Authorizing OAuth apps": authorization
``https://github.com/login/oauth/authorize``, token
``https://github.com/login/oauth/access_token`` (JSON with
``Accept: application/json``; errors come back with HTTP 200 and an
``error`` field in GitHub's own vocabulary: :meth:`GitHubProvider.parse_token_response`
maps a dead refresh token (``bad_refresh_token``) and a bad or used code
(``bad_verification_code``) to RFC 6749 ``invalid_grant``, and wrong client
credentials to ``invalid_client``, so a revoked grant marks the connection
``error`` instead of looking like an outage). Scopes are
space-separated; there is no offline ask (OAuth-app tokens do not expire;
GitHub-App user tokens come with ``expires_in`` and a refresh token). PKCE
S256 is supported since July 2025. The client authenticates in the body.

Revocation is not RFC 7009: it is ``DELETE
https://api.github.com/applications/{client_id}/token`` with the app's
client id and secret as HTTP Basic and ``{"access_token": …}`` as JSON,
answering 204 — implemented by :meth:`GitHubProvider.revoke`.
"""
from __future__ import annotations

from connect_service import ConnectionType, OAuth2Provider, ProviderError, basic_authorization, hookimpl

#: GitHub token-endpoint error codes -> the RFC 6749 code the service acts on
GITHUB_ERRORS = {
    "bad_refresh_token": "invalid_grant",
    "bad_verification_code": "invalid_grant",
    "incorrect_client_credentials": "invalid_client",
}


class GitHubProvider(OAuth2Provider):
    authorize_url = "https://github.com/login/oauth/authorize"
    token_url = "https://github.com/login/oauth/access_token"
    revoke_url = "https://api.github.com/applications/{client_id}/token"
    default_scopes = ("read:user",)
    scope_separator = " "
    offline_access = None
    token_endpoint_auth_method = "client_secret_post"
    supports_pkce = True
    default_prompt = "login"  # seed 004's default, stated where a reader of the provider looks

    def parse_token_response(self, status, data):
        """The default parsing, with GitHub's error codes (sent with HTTP 200) mapped to RFC 6749's.

        ``bad_refresh_token`` / ``bad_verification_code`` become
        ``invalid_grant`` and ``incorrect_client_credentials`` becomes
        ``invalid_client``; GitHub's code stays in the description.
        """
        code = data.get("error") if isinstance(data, dict) else None
        if isinstance(code, str) and code in GITHUB_ERRORS:
            text = str(data.get("error_description") or "")[:200]
            raise ProviderError(GITHUB_ERRORS[code], f"{code}: {text}" if text else code)
        return super().parse_token_response(status, data)

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
    api_base_url = "https://api.github.com"  # for /v1/connections/{id}/proxy/…


@hookimpl
def register_connection_types():
    return [GitHub]
