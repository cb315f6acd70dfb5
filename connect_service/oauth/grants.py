"""Token endpoint requests: code exchange, refresh, client_credentials, revocation.

oauthlib builds the RFC 6749 bodies; the provider adds client authentication
and reads the answer. Every request goes through :func:`.provider.oauth_client`
(the SSRF-guarded client), and none of them writes a token: that is
:func:`.token_store.store_tokens`' job.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import parse_qsl

from oauthlib.oauth2.rfc6749.parameters import prepare_token_request

from .. import errors as api_errors
from ..oauth2_provider import OAuth2Provider, ProviderError
from ..extensions import keyring, registry
from ..http import GuardedClient, OutboundError
from ..models import AuthorizationSession, Credential
from .errors import InvalidClient, InvalidResponse, ServerError, TemporarilyUnavailable
from .provider import client_secret, credential_scopes, oauth_client, provider_for
from .start import pending_connection_for
from .token_store import store_tokens

log = logging.getLogger(__name__)

#: :func:`token_request`'s default: decrypt the credential's client secret there
_DECRYPT = object()


def _decode_body(resp) -> dict[str, Any]:
    status = resp.status_code
    if status >= 500 or status == 429:
        unavailable = TemporarilyUnavailable if status in (429, 503) else ServerError
        raise unavailable(f"the token endpoint answered HTTP {status}")
    ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    text = resp.content.decode("utf-8", "replace")
    if ctype == "application/x-www-form-urlencoded":  # GitHub without Accept, some old servers
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        # NaN/Infinity stay strings: the raw answer is echoed in API responses, which must be strict JSON
        data = json.loads(text, parse_constant=str)
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's stack
        raise ServerError(f"the token endpoint answered HTTP {status} with a body that is not JSON") from None
    if not isinstance(data, dict):
        raise ServerError(f"the token endpoint answered HTTP {status} with JSON that is not an object")
    return data


@dataclass(frozen=True)
class TokenRequest:
    """One token endpoint request, built with the credential's client authentication, ready to send.

    Built where the app context is (it reads the client secret and the provider); :meth:`send`
    needs none, so refresh-due's worker threads send prepared requests through clients of
    their own (keep-alive) while the database stays in the runner's main thread.
    """

    url: str
    kwargs: dict[str, Any]
    provider: OAuth2Provider

    def send(self, client: GuardedClient) -> dict[str, Any]:
        """POST through ``client`` (the guarded client); the provider's token response. Errors as
        :func:`request_refresh`."""
        resp = client.post(self.url, **self.kwargs)
        data = _decode_body(resp)
        token = self.provider.parse_token_response(resp.status_code, data)
        if not isinstance(token.get("access_token"), str) or not token["access_token"]:
            raise InvalidResponse("the token response has no access_token")
        return token


def token_request(credential: Credential, provider: OAuth2Provider, body: dict[str, str],
                  token_url: str | None = None, secret: str | None | object = _DECRYPT) -> TokenRequest:
    """A :class:`TokenRequest` for ``body`` (a grant's parameters) at ``token_url`` or the provider's.

    ``secret``: the decrypted client secret when the caller already has it (refresh-due
    decrypts it once per credential), else it is decrypted here.
    """
    url = token_url or provider.token_url
    if not url:
        raise InvalidClient("the credential has no token URL")
    kwargs = provider.prepare_token_request(body, client_id=credential.oauth_client_id,
                                            client_secret=client_secret(credential) if secret is _DECRYPT else secret,
                                            auth_method=credential.token_endpoint_auth_method
                                            or provider.token_endpoint_auth_method)
    return TokenRequest(url, kwargs, provider)


def _token_request(credential: Credential, provider: OAuth2Provider, body: dict[str, str],
                   token_url: str | None = None) -> dict[str, Any]:
    request = token_request(credential, provider, body, token_url)
    with oauth_client() as client:
        return request.send(client)


def _body(grant_type: str, **params: Any) -> dict[str, str]:
    # oauthlib builds the RFC 6749 body; client authentication is the provider's job.
    return dict(parse_qsl(prepare_token_request(grant_type, include_client_id=False, **params),
                          keep_blank_values=True))


def exchange_code(credential: Credential, session: AuthorizationSession, code: str) -> dict[str, Any]:
    """Exchange an authorization code using only the stored session (token URL, redirect_uri, verifier)."""
    verifier = None
    if session.verifier_encrypted:
        verifier = keyring().decrypt_json(session.verifier_encrypted, "authorization_session", "verifier",
                                           session.id)
    body = _body("authorization_code", code=code, redirect_uri=session.redirect_uri, code_verifier=verifier)
    return _token_request(credential, provider_for(credential), body, token_url=session.token_url)


def refresh_body(refresh_token: str) -> dict[str, str]:
    """The RFC 6749 §6 body of a refresh (client authentication is added by :func:`token_request`)."""
    return _body("refresh_token", refresh_token=refresh_token)


def client_credentials_body(credential: Credential, provider: OAuth2Provider,
                            scopes: list[str] | None = None) -> dict[str, str]:
    """The RFC 6749 §4.4 body for ``scopes`` (default: the credential's ``oauth_scope``)."""
    scope_list = list(scopes) if scopes is not None else credential_scopes(credential)
    params: dict[str, Any] = {}
    if scope_list:
        params["scope"] = provider.scope_separator.join(scope_list)
    return _body("client_credentials", **params)


def request_refresh(credential: Credential, refresh_token: str) -> dict[str, Any]:
    """Refresh an access token; return the provider's token response (a dict with ``access_token``).

    Raises :class:`ProviderError` for an OAuth error body (``e.g. code ==
    "invalid_grant"``), :class:`.errors.ProviderUnavailable` (a ``ProviderError``
    subclass) for a 5xx/429 or non-JSON answer, and
    ``connect_service.http.OutboundError`` when the endpoint cannot be
    reached or is refused by policy.
    """
    return _token_request(credential, provider_for(credential), refresh_body(refresh_token))


def request_client_credentials(credential: Credential, scopes: list[str] | None = None) -> dict[str, Any]:
    """Fetch a token with the client_credentials grant; errors as :func:`request_refresh`."""
    provider = provider_for(credential)
    return _token_request(credential, provider, client_credentials_body(credential, provider, scopes))


def revoke_tokens(credential: Credential, settings: Mapping[str, Any]) -> bool:
    """Revoke a connection's tokens at the provider (RFC 7009 or the provider's own way).

    ``settings`` is the connection's decrypted settings (seed 002 ``oauth``
    shape). Returns True when the provider confirmed; False when it has no
    revocation endpoint, there is no token, or the call failed. Never raises
    for a provider or transport failure (it is logged without secrets).
    """
    creds = ((settings or {}).get("oauth") or {}).get("credentials") or {}
    access, refresh = creds.get("access_token"), creds.get("refresh_token")
    if not access and not refresh:
        return False
    provider = provider_for(credential)
    try:
        with oauth_client() as client:
            return bool(provider.revoke(client, access_token=access, refresh_token=refresh,
                                        client_id=credential.oauth_client_id,
                                        client_secret=client_secret(credential),
                                        auth_method=credential.token_endpoint_auth_method
                                        or provider.token_endpoint_auth_method))
    except (OutboundError, ProviderError) as exc:
        log.warning("revocation for credential %s failed: %s", credential.id, type(exc).__name__)
        return False


# --------------------------------------------------------------------------- the org-level client_credentials token


def owns_org_token(credential: Credential) -> bool:
    """Whether the service keeps this credential's client_credentials token in an org-level connection.

    Action-account platforms use their client_credentials registration for
    their own API calls, so their token is not a connection of the org.
    """
    cls = registry().by_connector(credential.connector_name)
    return credential.oauth_grant_type == "client_credentials" and cls is not None and cls.auth != "action_account"


def fetch_client_credentials(credential: Credential) -> dict[str, Any]:
    """The client_credentials token for a credential being saved, or a 400 naming ``oauth_token_url``.

    Fetched before the credential is stored, so a registration the provider
    refuses is never saved.
    """
    try:
        return request_client_credentials(credential)
    except OutboundError as exc:
        raise api_errors.BadRequest({"oauth_token_url": f"could not reach the token endpoint: {exc.reason} "
                                                        f"({exc.url})"}) from None
    except ProviderError as exc:
        text = f"{exc.code}: {exc.description}" if exc.description else exc.code
        raise api_errors.BadRequest({"oauth_token_url": f"the token endpoint refused the request: {text}"}) from None


def store_org_token(credential: Credential, token: dict[str, Any]) -> None:
    """Store a client_credentials token in the credential's one org-level connection.

    Find-or-create goes through :func:`.start.pending_connection_for`, which
    serializes on the credential row, so concurrent saves never create two.
    """
    cls = registry().by_connector(credential.connector_name)
    conn = pending_connection_for(credential, cls, app=None, customer_id=None)
    store_tokens(conn, credential, token, keep_previous=False,
                 requested_scope=" ".join(credential_scopes(credential)) or None)
