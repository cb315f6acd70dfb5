"""The authorization request: the URL, its state + PKCE session, and the browser binding.

Authorization sessions are rows, not process memory: ``state`` (256 bits) is
stored only as its SHA-256 and the PKCE verifier encrypted, so any worker can
finish a flow another one started (see :mod:`.callback` for the consuming side).
"""
from __future__ import annotations

import datetime
import hashlib
from typing import NamedTuple
from urllib.parse import parse_qsl

from oauthlib.common import add_params_to_uri, generate_token
from oauthlib.oauth2 import WebApplicationClient

from .. import errors
from ..db import is_postgres, write_transaction
from ..extensions import keyring, settings
from ..models import AuthorizationSession, Connection, Credential, new_id, utcnow
from .provider import credential_scopes, effective_pkce_method, provider_for

#: prefix of the per-flow cookie that binds a hosted-page (or signed start URL) flow to the browser
#: that began it; the full name is :func:`nonce_cookie_name` of the flow's state
NONCE_COOKIE = "connect_oauth_nonce"
#: expired authorization sessions are deleted this long after their expiry (so a late callback
#: still reads "expired" rather than "unknown"), at most this many per start / refresh-due run
SESSION_PURGE_GRACE = datetime.timedelta(hours=1)
SESSION_PURGE_ON_START = 20
#: every credential's redirect URI is ``{public_url}{CALLBACK_PATH}/{credential id}`` (RFC 9700 §4.4)
CALLBACK_PATH = "/v1/connect/oauth2/callback"
#: parameters the service itself sets on an authorization URL, and those that would move the request
#: or the response elsewhere (JAR ``request``/``request_uri``, ``response_mode``): ``additionalParams``
#: may set none of them
RESERVED_PARAMS = frozenset({
    "response_type", "client_id", "redirect_uri", "state", "scope", "prompt",
    "code_challenge", "code_challenge_method", "request", "request_uri", "response_mode",
})


def hash_secret(value: str) -> str:
    """Hex SHA-256 of a state or nonce: what the database stores instead of the value."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def callback_url(credential: Credential) -> str:
    """The credential's own redirect URI: ``{public_url}/v1/connect/oauth2/callback/{credential id}``.

    One per credential, so a provider sends its codes only to the callback of
    the credential registered with it, and the callback can refuse a state
    that another credential started (the mix-up defence of RFC 9700 §4.4).
    Admins register this exact URL at the provider.
    """
    return f"{settings()['public_url']}{CALLBACK_PATH}/{credential.id}"


def _parse_additional(additional_params: str | None) -> list[tuple[str, str]]:
    if additional_params is None:
        return []
    if not isinstance(additional_params, str):
        raise errors.BadRequest({"additionalParams": "must be a URL-encoded query string"})
    text = additional_params.strip().lstrip("?")
    if not text:
        return []
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise errors.BadRequest({"additionalParams": "must be a URL-encoded query string such as "
                                                     "login_hint=a%40example.com&hd=example.com"}) from None


def build_authorization_url(credential: Credential, *, state: str, redirect_uri: str,
                            code_challenge: str | None, code_challenge_method: str | None,
                            scopes: list[str] | None = None, prompt: str | None = None,
                            additional_params: str | None = None, disable_offline_access: bool = False) -> str:
    """The authorization URL for ``credential``: the one builder every flow uses (seed 004 rules).

    - ``scope`` = ``scopes`` (default: the credential's ``oauth_scope``) ∪
      the provider's default scopes, joined with its separator;
    - offline access is asked for in the provider's dialect (Google
      ``access_type=offline``, Dropbox ``token_access_type=offline``, the
      ``offline_access`` scope, or nothing) unless ``disable_offline_access``;
    - ``prompt`` defaults to the provider's ``default_prompt`` (``login``)
      unless ``additional_params`` contains ``approval_prompt``; any value
      passes through, and ``consent+select_account`` is sent as the two
      space-separated prompts it means (``prompt=consent+select_account``
      in the URL); an empty string sends no prompt;
    - ``additional_params`` (a URL-encoded query string) is appended; a key
      the service sets itself (``response_type``, ``client_id``, ``scope``,
      ``prompt``, ``state``, ``code_challenge``, the provider's offline
      parameter, …) is a 400 naming ``additionalParams``.

    The parameters are encoded with oauthlib's ``add_params_to_uri`` (rather
    than ``WebApplicationClient.prepare_request_uri``, which refuses the
    plain-http servers of local development and tests).
    """
    provider = provider_for(credential)
    if not provider.authorize_url:
        raise errors.BadRequest({"oauth_url": "is required: the credential has no authorization URL"})
    extra_pairs = _parse_additional(additional_params)
    offline = not disable_offline_access
    requested = list(scopes) if scopes is not None else credential_scopes(credential)
    scope_list = provider.scopes(requested, offline)
    provider_params = provider.authorization_params(scope_list, offline)

    taken = set(RESERVED_PARAMS) | set(provider_params)
    clashes = sorted({key for key, _ in extra_pairs if key in taken})
    if clashes:
        raise errors.BadRequest({"additionalParams": f"cannot set {', '.join(clashes)}: "
                                                     f"the service sets {'it' if len(clashes) == 1 else 'them'}"})

    params: list[tuple[str, str]] = [
        ("response_type", "code"),
        ("client_id", credential.oauth_client_id or ""),
        ("redirect_uri", redirect_uri),
    ]
    if scope_list:
        params.append(("scope", provider.scope_separator.join(scope_list)))
    params.append(("state", state))
    if code_challenge:
        params.append(("code_challenge", code_challenge))
        params.append(("code_challenge_method", code_challenge_method or "S256"))
    params.extend(provider_params.items())
    if prompt is None:
        if not any(key == "approval_prompt" for key, _ in extra_pairs):
            prompt = provider.default_prompt
    if prompt:
        # "+" joins prompts in the seed; on the wire it is the form-encoding of the space OIDC uses.
        params.append(("prompt", " ".join(p for p in prompt.replace("+", " ").split() if p)))
    params.extend(extra_pairs)
    return add_params_to_uri(provider.authorize_url, params)

class AuthorizationStart(NamedTuple):
    """A started flow: send the browser to ``url``; ``connection`` completes at the callback.

    ``nonce_cookie`` is the name of the per-flow cookie that must carry the
    ``browser_nonce`` given to the start (see :func:`set_nonce_cookie`).
    """

    url: str
    connection: Connection
    nonce_cookie: str


def nonce_cookie_name(state: str) -> str:
    """The browser-binding cookie of the flow with ``state``: ``connect_oauth_nonce_<sha256(state)[:16]>``.

    One cookie per flow, so two flows started in the same browser never
    overwrite each other's binding; the callback finds it by its state.
    """
    return f"{NONCE_COOKIE}_{hash_secret(state)[:16]}"


def set_nonce_cookie(response, name: str, nonce: str) -> None:
    """Set the browser-binding cookie ``name`` = ``nonce`` on a redirect to the provider.

    HttpOnly, SameSite=Lax (it must come back on the provider's top-level
    redirect), scoped to the callback path, ``Secure`` when the public URL
    is https, and living as long as an authorization session.
    """
    cfg = settings()
    response.set_cookie(name, nonce, max_age=int(cfg["oauth_session_seconds"]), path=CALLBACK_PATH,
                        httponly=True, samesite="Lax", secure=cfg["public_url"].startswith("https://"))


def purge_authorization_sessions(limit: int = 500) -> int:
    """Delete up to ``limit`` authorization sessions that expired over an hour ago; return how many.

    Consumed sessions are covered too: each one expires ``oauth_session_seconds``
    after its start. Called with a small limit on every start and from
    ``refresh-due``, so the table stays bounded without a separate job. On
    PostgreSQL rows another purge is deleting are skipped, not waited for.
    """
    cutoff = utcnow() - SESSION_PURGE_GRACE
    doomed = (AuthorizationSession.select(AuthorizationSession.id)
              .where(AuthorizationSession.expires_at < cutoff)
              .order_by(AuthorizationSession.expires_at).limit(max(1, int(limit))))
    if is_postgres():
        doomed = doomed.for_update("FOR UPDATE", skip_locked=True)
    with write_transaction():
        return AuthorizationSession.delete().where(AuthorizationSession.id.in_(doomed)).execute()


def cap_pending_sessions(connection: Connection, limit: int) -> int:
    """Delete the oldest pending sessions of ``connection``'s end user beyond ``limit``; return how many.

    The end user is (app, customer id) of the connection; org-level flows
    (no app) count per credential. Pending means neither consumed nor
    expired. ``limit <= 0`` keeps them all. A dropped session's callback
    then reads "unknown or already used".
    """
    if limit <= 0:
        return 0
    owner = (Connection.app.is_null() & (Connection.credential == connection.credential_id)
             if connection.app_id is None else (Connection.app == connection.app_id))
    same_user = (Connection.customer_id.is_null() if connection.customer_id is None
                 else Connection.customer_id == connection.customer_id)
    pending = (AuthorizationSession.select(AuthorizationSession.id)
               .join(Connection, on=(AuthorizationSession.connection == Connection.id))
               .where(owner, same_user, AuthorizationSession.consumed_at.is_null(),
                      AuthorizationSession.expires_at > utcnow())
               .order_by(AuthorizationSession.created_at.desc(), AuthorizationSession.id.desc()))
    doomed = [row.id for row in pending.offset(limit)]
    if not doomed:
        return 0
    return AuthorizationSession.delete().where(AuthorizationSession.id.in_(doomed)).execute()


def begin_authorization(credential: Credential, connection: Connection, *, return_to: str | None = None,
                        browser_nonce: str | None = None, scopes: list[str] | None = None,
                        prompt: str | None = None, additional_params: str | None = None,
                        disable_offline_access: bool = False) -> AuthorizationStart:
    """Store an AuthorizationSession for ``connection``; return its URL (an :class:`AuthorizationStart`).

    ``state`` is 256 random bits kept only as a SHA-256; the PKCE verifier is
    encrypted; ``redirect_uri`` is the credential's :func:`callback_url`; the session expires
    after ``oauth_session_seconds``. ``browser_nonce`` (kept as a SHA-256)
    binds the session to the browser holding it in the per-flow cookie
    named ``AuthorizationStart.nonce_cookie``. The URL is built before
    anything is stored, so a 400 leaves no row. Each start also purges a
    few long-expired sessions (:func:`purge_authorization_sessions`) and
    drops the connection's end user's oldest pending sessions beyond
    ``oauth_pending_sessions_per_user`` (:func:`cap_pending_sessions`).
    """
    provider = provider_for(credential)
    if not provider.token_url:
        raise errors.BadRequest({"oauth_token_url": "is required: the credential has no token URL"})
    state = generate_token(43)  # 43 chars of a 62-letter alphabet: > 250 bits
    method = effective_pkce_method(credential)
    verifier = challenge = None
    if method:
        pkce = WebApplicationClient(credential.oauth_client_id)
        verifier = pkce.create_code_verifier(64)  # RFC 7636 §4.1: 43-128 unreserved characters
        # oauthlib answers None for an explicit "plain"; plain means challenge == verifier (RFC 7636 §4.2)
        challenge = verifier if method == "plain" else pkce.create_code_challenge(verifier, "S256")
    redirect_uri = callback_url(credential)
    requested = list(scopes) if scopes is not None else credential_scopes(credential)
    url = build_authorization_url(credential, state=state, redirect_uri=redirect_uri, code_challenge=challenge,
                                  code_challenge_method=method, scopes=requested, prompt=prompt,
                                  additional_params=additional_params,
                                  disable_offline_access=disable_offline_access)
    session = AuthorizationSession(
        id=new_id("oas"), state_hash=hash_secret(state), connection=connection.id, credential=credential.id,
        redirect_uri=redirect_uri, token_url=provider.token_url,
        scope=" ".join(provider.scopes(requested, not disable_offline_access)), return_to=return_to,
        browser_nonce_hash=hash_secret(browser_nonce) if browser_nonce else None,
        expires_at=utcnow() + datetime.timedelta(seconds=int(settings()["oauth_session_seconds"])),
    )
    if verifier:
        session.verifier_encrypted = keyring().encrypt_json(verifier, "authorization_session", "verifier",
                                                             session.id)
    with write_transaction():
        session.save(force_insert=True)
        cap_pending_sessions(connection, int(settings()["oauth_pending_sessions_per_user"]))
    purge_authorization_sessions(SESSION_PURGE_ON_START)
    return AuthorizationStart(url, connection, nonce_cookie_name(state))

