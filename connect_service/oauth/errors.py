"""OAuth 2.0 errors: one small class per error code, as Authlib's ``rfc6749/errors.py``.

Each is a :class:`~connect_service.ProviderError` (the public class plugins
raise), so code that only knows ``ProviderError`` keeps handling them; the
``code`` is the machine word the API, the callback redirect (``error=``) and
``status_reason`` show. A plugin may still raise ``ProviderError(code, …)``
with any other code.
"""
from __future__ import annotations

from ..oauth2_provider import ProviderError


class OAuthError(ProviderError):
    """Base of the classes below: ``code`` comes from the class, the description from the caller."""

    code = ""

    def __init__(self, description: str = ""):
        super().__init__(type(self).code, description)


class InvalidRequest(OAuthError):
    code = "invalid_request"


class InvalidClient(OAuthError):
    code = "invalid_client"


class InvalidGrant(OAuthError):
    code = "invalid_grant"


class AccessDenied(OAuthError):
    code = "access_denied"


class InvalidState(OAuthError):
    """The callback's ``state`` is unknown, already used, or its connection is gone."""

    code = "invalid_state"


class ExpiredState(OAuthError):
    code = "expired_state"


class BrowserMismatch(OAuthError):
    """The callback arrived in another browser than the one that started the flow."""

    code = "browser_mismatch"


class InvalidIssuer(OAuthError):
    """RFC 9207: the callback's ``iss`` differs from the issuer the credential declares."""

    code = "invalid_issuer"


class InvalidResponse(OAuthError):
    """The token endpoint answered success without an ``access_token``."""

    code = "invalid_response"


class ProviderUnavailable(OAuthError):
    """The provider is having trouble, not the grant: try later, keep the connection active.

    Raised for a 5xx, a non-OAuth body, or an unreachable token endpoint.
    The refresh machinery adds ``connection_id`` and the redacted ``token_url``
    that a read answering 502 shows.
    """

    code = "server_error"

    def __init__(self, description: str = "", *, connection_id: str | None = None, token_url: str | None = None):
        super().__init__(description)
        self.connection_id = connection_id
        self.token_url = token_url

    @property
    def reason(self) -> str:
        return self.description


class ServerError(ProviderUnavailable):
    code = "server_error"


class TemporarilyUnavailable(ProviderUnavailable):
    """HTTP 429/503, or the provider said ``temporarily_unavailable``."""

    code = "temporarily_unavailable"


class RefreshError(Exception):
    """A refresh could not produce a fresh token and it is not the provider's passing trouble.

    Not a ``ProviderError``: these describe the connection (``connection_id``,
    a ``reason`` without secrets), not a provider answer.
    """

    def __init__(self, connection_id: str, reason: str):
        super().__init__(reason)
        self.connection_id = connection_id
        self.reason = reason


class RefreshRejected(RefreshError):
    """The provider refused the grant (``invalid_grant``); the connection is now ``error``."""

    def __init__(self, connection_id: str, reason: str, code: str = ""):
        super().__init__(connection_id, reason)
        self.code = code


class NotRefreshable(RefreshError):
    """Nothing to refresh: not an OAuth connection, disabled, not active or no refresh token."""


#: the codes whose ``ProviderError`` means "try later" rather than "this grant is bad"
TRANSIENT_CODES = frozenset({ServerError.code, TemporarilyUnavailable.code})
