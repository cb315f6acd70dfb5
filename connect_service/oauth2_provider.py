"""``OAuth2Provider``: how one OAuth2 provider wants to be talked to, and ``ProviderError``.

The base class a provider plugin instantiates or subclasses (exported as
``connect_service.OAuth2Provider``); the ``oauth`` package drives it.
"""
from __future__ import annotations

import base64
from typing import Any, Mapping
from urllib.parse import quote

__all__ = ["OAuth2Provider", "ProviderError", "basic_authorization", "CLIENT_AUTH_METHODS"]


def basic_authorization(client_id: str, client_secret: str) -> str:
    """``Basic base64(urlencode(id):urlencode(secret))`` as RFC 6749 §2.3.1 asks."""
    raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


# --- client authentication at the token endpoint, one function per method (as Authlib's oauth2/auth.py) ---

def _auth_basic(params: dict[str, str], headers: dict[str, str], client_id: str, client_secret: str | None) -> None:
    headers["Authorization"] = basic_authorization(client_id, client_secret or "")


def _auth_post(params: dict[str, str], headers: dict[str, str], client_id: str, client_secret: str | None) -> None:
    params["client_id"] = client_id
    params["client_secret"] = client_secret or ""


def _auth_none(params: dict[str, str], headers: dict[str, str], client_id: str, client_secret: str | None) -> None:
    params["client_id"] = client_id


#: ``token_endpoint_auth_method`` → how it authenticates a token request (RFC 7591 names)
CLIENT_AUTH_METHODS = {
    "client_secret_basic": _auth_basic,
    "client_secret_post": _auth_post,
    "none": _auth_none,
}


class ProviderError(Exception):
    """A provider answered with an OAuth2 error (``code`` e.g. ``invalid_grant``); no secrets inside."""

    def __init__(self, code: str, description: str = ""):
        super().__init__(f"{code}: {description}" if description else code)
        self.code = code
        self.description = description


class OAuth2Provider:
    """How one OAuth2 provider wants to be talked to. Subclass or instantiate with overrides.

    ::

        class Dropbox(OAuth2Provider):
            authorize_url = "https://www.dropbox.com/oauth2/authorize"
            token_url = "https://api.dropboxapi.com/oauth2/token"
            revoke_url = "https://api.dropboxapi.com/2/auth/token/revoke"
            offline_access = "param"
            offline_params = {"token_access_type": "offline"}

    URLs left ``None`` come from the credential (``oauth_url``,
    ``oauth_token_url``): that is how the generic ``oauth2`` connector works.
    A credential's values always override the plugin's. A URL may contain
    ``{name}`` placeholders filled from the credential's ``settings`` (e.g.
    Microsoft's ``{tenant}``) and ``{client_id}``.

    Methods a provider with quirks overrides: :meth:`scopes`,
    :meth:`authorization_params`, :meth:`prepare_token_request`,
    :meth:`parse_token_response` and :meth:`revoke`.
    """

    authorize_url: str | None = None
    token_url: str | None = None
    revoke_url: str | None = None
    #: RFC 9207 issuer; when set (here or on the credential) the callback's ``iss`` must match
    issuer: str | None = None
    default_scopes: tuple[str, ...] = ()
    scope_separator: str = " "
    #: "scope" adds ``offline_scope``; "param" adds ``offline_params``; None: the provider has no such ask
    offline_access: str | None = "scope"
    offline_scope: str = "offline_access"
    offline_params: Mapping[str, str] = {}
    #: client_secret_basic (HTTP Basic) or client_secret_post (in the body); "none" for public clients
    token_endpoint_auth_method: str = "client_secret_basic"
    supports_pkce: bool = True
    #: seconds an access token lives when the token response says nothing (None: ask the JWT, else the app default)
    default_token_lifetime: int | None = None
    #: extra authorize parameters always sent (e.g. Notion's ``owner=user``)
    extra_authorize_params: Mapping[str, str] = {}
    #: ``prompt`` sent when the caller gives none (seed 004: ``login``); None sends no prompt. Every provider
    #: plugin states its own (docs/api.md lists them); a provider that refuses ``login`` (Google) says what it takes
    default_prompt: str | None = "login"
    #: "form" (RFC 6749) or "json" (e.g. Notion) for token-endpoint request bodies
    token_request_format: str = "form"
    #: extra headers on token and revocation requests (e.g. an API version header)
    request_headers: Mapping[str, str] = {}
    #: whether the RFC 7009 revocation request authenticates the client (Google's endpoint takes only the token)
    revoke_client_auth: bool = True

    def __init__(self, **overrides: Any):
        for key, value in overrides.items():
            if not hasattr(type(self), key):
                raise TypeError(f"unknown OAuth2Provider setting {key!r}")
            setattr(self, key, value)

    def authorization_params(self, scopes: list[str], offline: bool) -> dict[str, str]:
        """Provider-specific authorize parameters (offline ask in its dialect, extras)."""
        params = dict(self.extra_authorize_params)
        if offline and self.offline_access == "param":
            params.update(self.offline_params)
        return params

    def scopes(self, requested: list[str], offline: bool) -> list[str]:
        """requested ∪ defaults, plus the offline scope when this provider asks for it that way."""
        out: list[str] = []
        for scope in [*requested, *self.default_scopes]:
            if scope and scope not in out:
                out.append(scope)
        if offline and self.offline_access == "scope" and self.offline_scope not in out:
            out.append(self.offline_scope)
        return out

    def prepare_token_request(self, body: Mapping[str, str], *, client_id: str | None,
                              client_secret: str | None, auth_method: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``GuardedClient.post(token_url, **kwargs)``.

        ``body`` holds the grant's parameters (``grant_type``, ``code``, …)
        without client authentication; this adds it per ``auth_method``
        (default :attr:`token_endpoint_auth_method`): ``client_secret_basic``
        sends an RFC 6749 §2.3.1 ``Authorization: Basic`` header,
        ``client_secret_post`` puts ``client_id``/``client_secret`` in the
        body, ``none`` sends only ``client_id``.
        """
        method = auth_method or self.token_endpoint_auth_method
        params = dict(body)
        headers = {"Accept": "application/json", **self.request_headers}
        if client_secret is None:  # a public client: whatever the method, only its id goes along
            method = "none"
        CLIENT_AUTH_METHODS.get(method, _auth_none)(params, headers, client_id or "", client_secret)
        if self.token_request_format == "json":
            return {"json": params, "headers": headers}
        return {"data": params, "headers": headers}

    def parse_token_response(self, status: int, data: Mapping[str, Any]) -> dict[str, Any]:
        """Normalise a token endpoint answer; raise ``ProviderError`` on an error body.

        Override for quirks (e.g. an error reported with HTTP 200).
        """
        if status >= 400 or "error" in data or "access_token" not in data:
            raise ProviderError(str(data.get("error") or f"http_{status}"),
                                str(data.get("error_description") or "")[:200])
        return dict(data)

    def revoke(self, client: Any, *, access_token: str | None, refresh_token: str | None,
               client_id: str | None, client_secret: str | None, auth_method: str | None = None) -> bool:
        """Revoke a grant at :attr:`revoke_url`; return whether the provider confirmed it.

        The default is RFC 7009: the refresh token when there is one (which
        ends the whole grant at most providers), else the access token, with
        ``token_type_hint`` and client authentication like the token endpoint.
        ``client`` is a ``GuardedClient``; transport errors propagate (the
        caller turns them into ``False``). Override for a provider whose
        revocation is not RFC 7009 (Dropbox, GitHub, Notion).
        """
        if not self.revoke_url:
            return False
        token, hint = (refresh_token, "refresh_token") if refresh_token else (access_token, "access_token")
        if not token:
            return False
        body = {"token": token, "token_type_hint": hint}
        if self.revoke_client_auth:
            kwargs = self.prepare_token_request(body, client_id=client_id, client_secret=client_secret,
                                                auth_method=auth_method)
        else:
            kwargs = {"data": body, "headers": {"Accept": "application/json", **self.request_headers}}
        if self.token_request_format == "json" and "data" in kwargs:
            kwargs["json"] = kwargs.pop("data")
        resp = client.post(self.revoke_url, **kwargs)
        return 200 <= resp.status_code < 300
