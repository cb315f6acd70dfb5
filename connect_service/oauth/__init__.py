"""OAuth2 flows, one job per module; everything that talks to an authorization server lives here.

- :mod:`.provider`: a credential's resolved provider, client secret and auth method;
- :mod:`.authorize`: the authorization URL, its state + PKCE session, the browser-binding cookie;
- :mod:`.start`: credential selection, pending connections, and the three ways a flow starts;
- :mod:`.callback`: the provider's redirect back;
- :mod:`.grants`: token endpoint requests (code, refresh, client_credentials, revocation);
- :mod:`.token_store`: the one function that writes tokens to a connection;
- :mod:`.batch_store`: refresh-due's writer of many refreshes at once, with token_store's rules;
- :mod:`.errors`: one class per OAuth error code.

The names below are the package's surface: ``from connect_service import
oauth; oauth.select_credential(...)``.
"""
from ..oauth2_provider import ProviderError
from .authorize import (CALLBACK_PATH, NONCE_COOKIE, SESSION_PURGE_ON_START, AuthorizationStart,
                        begin_authorization, build_authorization_url, callback_url, cap_pending_sessions, hash_secret,
                        nonce_cookie_name, purge_authorization_sessions, set_nonce_cookie)
from .callback import CallbackOutcome, complete_authorization
from .errors import ProviderUnavailable
from .grants import (exchange_code, fetch_client_credentials, owns_org_token, request_client_credentials,
                     request_refresh, revoke_tokens, store_org_token)
from .provider import (AUTH_METHODS, client_secret, connection_type_for, credential_scopes,
                       effective_auth_method, effective_pkce_method, oauth_client, provider_for,
                       set_client_secret, url_placeholder_problem)
from .start import (EmbedTarget, StartRefused, credential_available_to,
                    credential_start_url, embed_target, initialise, is_exact_return_url, limit_starts,
                    pending_connection_for, select_credential, start_authorization, start_for_requirement,
                    start_from_link)
from .token_store import MAX_TOKEN_LIFETIME_SECONDS, store_tokens, token_settings

__all__ = [
    "AUTH_METHODS", "AuthorizationStart", "CALLBACK_PATH", "CallbackOutcome", "MAX_TOKEN_LIFETIME_SECONDS",
    "NONCE_COOKIE", "ProviderError", "ProviderUnavailable", "SESSION_PURGE_ON_START",
    "StartRefused", "EmbedTarget", "embed_target", "begin_authorization", "build_authorization_url",
    "callback_url", "cap_pending_sessions", "client_secret",
    "complete_authorization", "connection_type_for", "credential_available_to", "credential_scopes",
    "credential_start_url", "effective_auth_method", "effective_pkce_method", "exchange_code",
    "fetch_client_credentials", "hash_secret", "initialise", "is_exact_return_url", "limit_starts", "nonce_cookie_name",
    "oauth_client", "owns_org_token", "pending_connection_for", "provider_for", "purge_authorization_sessions",
    "request_client_credentials", "request_refresh", "revoke_tokens", "select_credential", "set_client_secret",
    "set_nonce_cookie", "start_authorization", "start_for_requirement", "start_from_link", "store_org_token",
    "store_tokens", "token_settings", "url_placeholder_problem",
]
