"""Which provider a credential talks to, with which URLs, client secret and auth method.

A credential's own values (authorize/token/revoke URL, issuer, auth method)
override its connector plugin's provider; ``{client_id}`` and ``{<settings
key>}`` placeholders in those URLs are filled here, once, so every flow sees
the same resolved provider.
"""
from __future__ import annotations

import copy
import re
from urllib.parse import quote

from ..connection_types import ConnectionType
from ..oauth2_provider import CLIENT_AUTH_METHODS, OAuth2Provider
from ..extensions import keyring, registry, settings
from ..http import GuardedClient
from ..outbound import outbound_client
from ..models import Credential

#: the client authentication methods a credential may name (RFC 7591 ``token_endpoint_auth_method``)
AUTH_METHODS = tuple(CLIENT_AUTH_METHODS)


def oauth_client() -> GuardedClient:
    """The guarded HTTP client for token and revocation endpoints, built from settings.

    Uses ``allowed_private_hosts`` (loopback/private hosts that may be
    reached, e.g. ``127.0.0.1`` in tests) and ``http_timeout_seconds``. A
    whole call may take at most half of ``refresh_lease_seconds``
    (``max_total_time``) and each socket operation at most a quarter of it,
    so a provider that trickles its answer cannot keep a refresh running
    after its lease expired and another worker took over.
    """
    cfg = settings()
    lease = float(cfg.get("refresh_lease_seconds") or 60)
    timeout = min(float(cfg.get("http_timeout_seconds") or 10.0), lease / 4)
    return outbound_client(timeout=timeout, max_total_time=min(60.0, lease / 2))


def connection_type_for(credential: Credential) -> type[ConnectionType] | None:
    """The registered connection type serving the credential's connector, if any."""
    return registry().by_connector(credential.connector_name)


#: a URL placeholder: ``{client_id}`` or ``{<settings key>}`` (e.g. Microsoft's ``{tenant}``)
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")


def _placeholder_values(credential: Credential) -> dict[str, str]:
    own = credential.settings if isinstance(credential.settings, dict) else {}
    values = {k: quote(str(v), safe="") for k, v in own.items()
              if isinstance(v, (str, int)) and not isinstance(v, bool)}
    values["client_id"] = quote(credential.oauth_client_id or "", safe="")
    return values


def _fill(url: str | None, credential: Credential) -> str | None:
    """Replace the known ``{name}`` placeholders (URL-encoded values); never raises.

    Only :data:`PLACEHOLDER` matches with a known name are replaced; anything
    else, including other braces, stays as it is (credentials are refused at
    save time when their URLs hold any, see :func:`url_placeholder_problem`).
    """
    if not url or "{" not in url:
        return url
    values = _placeholder_values(credential)
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), url)


def url_placeholder_problem(url: str | None, credential: Credential) -> str | None:
    """Why ``url`` may not be stored on ``credential``, or ``None`` when its braces are fine.

    A credential URL may hold ``{client_id}`` and ``{<key>}`` for the
    credential's scalar ``settings`` keys (e.g. ``{tenant}``); any other
    ``{`` or ``}`` is refused (the API answers 400 naming the field).
    """
    if not url or ("{" not in url and "}" not in url):
        return None
    values = _placeholder_values(credential)
    rest = PLACEHOLDER.sub(lambda m: "" if m.group(1) in values else m.group(0), url)
    if "{" in rest or "}" in rest:
        names = ", ".join("{" + name + "}" for name in sorted(values))
        return f"may contain {{ and }} only in the placeholders {names}"
    return None


def provider_for(credential: Credential) -> OAuth2Provider:
    """The credential's provider: the connector plugin's, with the credential's values on top.

    Credential values override plugin defaults where given: ``oauth_url``
    (authorize URL), ``oauth_token_url``, ``oauth_issuer``,
    ``token_endpoint_auth_method`` and ``settings["revoke_url"]``. For the
    generic ``oauth2`` connector the plugin has no URLs, so the credential's
    are the only ones. Returns a copy; the plugin's instance is never changed.
    """
    cls = connection_type_for(credential)
    base = cls.provider if cls is not None and isinstance(cls.provider, OAuth2Provider) else OAuth2Provider()
    provider = copy.copy(base)
    provider.authorize_url = _fill(credential.oauth_url or base.authorize_url, credential)
    provider.token_url = _fill(credential.oauth_token_url or base.token_url, credential)
    revoke = (credential.settings or {}).get("revoke_url") if isinstance(credential.settings, dict) else None
    provider.revoke_url = _fill(revoke or base.revoke_url, credential)
    provider.issuer = credential.oauth_issuer or base.issuer
    if credential.token_endpoint_auth_method:
        provider.token_endpoint_auth_method = credential.token_endpoint_auth_method
    return provider


def client_secret(credential: Credential) -> str | None:
    """The decrypted client secret (``None`` when the credential has none)."""
    if not credential.oauth_client_secret_encrypted:
        return None
    return keyring().decrypt_json(credential.oauth_client_secret_encrypted, "credential",
                                   "oauth_client_secret", credential.id)


def set_client_secret(credential: Credential, secret: str | None) -> None:
    """Encrypt ``secret`` into the credential row (bound to its id; assign ``id`` first)."""
    credential.oauth_client_secret_encrypted = (
        None if secret is None else
        keyring().encrypt_json(secret, "credential", "oauth_client_secret", credential.id))


def effective_auth_method(credential: Credential) -> str:
    """The credential's token endpoint auth method, else its provider's."""
    return credential.token_endpoint_auth_method or provider_for(credential).token_endpoint_auth_method


def effective_pkce_method(credential: Credential) -> str | None:
    """``S256``/``plain`` as the credential says; when unset, ``S256`` if the provider supports PKCE."""
    if credential.pkce_method:
        return credential.pkce_method
    return "S256" if provider_for(credential).supports_pkce else None


def credential_scopes(credential: Credential) -> list[str]:
    """The credential's ``oauth_scope`` as a list (space- or comma-separated)."""
    return [s for s in re.split(r"[\s,]+", credential.oauth_scope or "") if s]
