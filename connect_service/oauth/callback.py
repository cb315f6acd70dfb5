"""The redirect back from the provider: check the state, exchange the code, store the tokens.

A session is consumed by one conditional ``UPDATE … WHERE consumed_at IS
NULL`` before anything else, so two workers (or a replayed URL) can never both
accept it and a bad state never reaches the token endpoint.
"""
from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

from ..oauth2_provider import ProviderError
from ..connections import mark_error
from ..http import OutboundError
from ..models import AuthorizationSession, Connection, Credential, utcnow
from . import grants
from .authorize import hash_secret
from .errors import (BrowserMismatch, ExpiredState, InvalidClient, InvalidIssuer, InvalidRequest,
                     InvalidState)
from .provider import provider_for
from .token_store import store_tokens

log = logging.getLogger(__name__)


@dataclass
class CallbackOutcome:
    """What the callback decided: ``ok``, a short human ``message``, where to send the browser."""

    ok: bool
    message: str
    http_status: int = 200
    connection: Connection | None = None
    return_to: str | None = None
    error_code: str | None = None


def _fail(conn: Connection, was_active: bool, reason: str) -> None:
    if was_active:  # a failed re-authorization leaves the working connection alone
        log.info("re-authorization of %s failed; connection stays active", conn.id)
        return
    # Only when nothing stored a token since this callback looked (another flow may have just won).
    if not mark_error(conn, reason, generation=conn.refresh_generation):
        log.info("authorization of %s failed, but a concurrent one succeeded; keeping it", conn.id)


def _origin(url: str | None) -> str | None:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or {"http": 80, "https": 443}[parts.scheme]
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


def issuer_problem(expected: str | None, authorize_url: str | None, iss: str | None) -> bool:
    """Whether an authorization response's RFC 9207 ``iss`` must be refused.

    With a declared issuer (the credential's ``oauth_issuer``, else its
    provider plugin's), ``iss`` must be present and equal. Without one, an
    ``iss`` the provider sends must name the origin of the credential's
    authorization endpoint: a response from another authorization server is
    a mix-up.
    """
    if expected:
        return iss != expected
    if iss is None:
        return False
    return _origin(iss) is None or _origin(iss) != _origin(authorize_url)


def _consume(session: AuthorizationSession, now) -> bool:
    return AuthorizationSession.update(consumed_at=now).where(
        AuthorizationSession.id == session.id, AuthorizationSession.consumed_at.is_null(),
        AuthorizationSession.expires_at > now).execute() == 1


def complete_authorization(params: Mapping[str, str], *, credential_id: str,
                           browser_nonce: str | None = None) -> CallbackOutcome:
    """Handle ``GET /v1/connect/oauth2/callback/{credential_id}`` (query ``params``, nonce cookie value).

    Order matters: the state is looked up by hash; a session that another
    credential than ``credential_id`` started is consumed and refused
    (``invalid_state``, nothing else changes: the mix-up defence); then
    expiry and use are checked, the browser binding compared, and the
    session consumed atomically *before* anything else, so a replayed,
    unknown, expired or foreign state never reaches the token endpoint.
    Then the provider's ``error``, the RFC 9207 ``iss``
    (:func:`issuer_problem`), the code exchange at the token URL of the
    credential that started the session, with the stored verifier and its
    redirect_uri, and the token write. Messages name no credential id or
    provider URL (end users read them); the log has those.
    """
    state = params.get("state") or ""
    if not state:
        return CallbackOutcome(False, "The sign-in response has no state parameter.", 400,
                               error_code=InvalidRequest.code)
    session = AuthorizationSession.get_or_none(AuthorizationSession.state_hash == hash_secret(state))
    if session is None:
        return CallbackOutcome(False, "This sign-in link is unknown or was already used. Start again.", 400,
                               error_code=InvalidState.code)
    now = utcnow()
    if session.credential_id != credential_id:
        _consume(session, now)
        log.warning("callback of credential %s got a state of credential %s: refused (mix-up?)",
                    credential_id[:64], session.credential_id)
        return CallbackOutcome(False, "This sign-in response does not belong to this sign-in. Start again.",
                               400, error_code=InvalidState.code)
    rejected = None
    if session.consumed_at is not None:
        rejected = ("This sign-in response was already used. Start again.", InvalidState.code)
    elif session.expires_at <= now:
        rejected = ("This sign-in attempt expired. Start again.", ExpiredState.code)
    elif session.browser_nonce_hash and not hmac.compare_digest(
            session.browser_nonce_hash, hash_secret(browser_nonce or "")):
        rejected = ("This sign-in was started in another browser. Start again from the connect page.",
                    BrowserMismatch.code)
    if rejected is None:
        if not _consume(session, now):
            rejected = ("This sign-in response was already used. Start again.", InvalidState.code)
    conn = Connection.get_or_none(Connection.id == session.connection_id)
    if rejected is not None or conn is None:
        message, code = rejected or ("The connection was deleted while signing in.", InvalidState.code)
        return CallbackOutcome(False, message, 400, connection=conn, return_to=session.return_to, error_code=code)

    credential = Credential.get_or_none(Credential.id == session.credential_id)
    was_active = conn.status == "active"
    outcome = lambda msg, code: CallbackOutcome(False, msg, 400, connection=conn,  # noqa: E731
                                                return_to=session.return_to, error_code=code)
    if params.get("error"):
        code = str(params["error"])[:100]
        description = str(params.get("error_description") or "")[:300]
        reason = f"{code}: {description}" if description else code
        _fail(conn, was_active, f"authorization failed: {reason}")
        return outcome(f"The provider did not authorize the connection ({reason}).", code)
    if credential is None:
        _fail(conn, was_active, "the credential was deleted while signing in")
        return outcome("The OAuth2 credential was deleted while signing in.", InvalidClient.code)
    provider = provider_for(credential)
    if issuer_problem(provider.issuer, provider.authorize_url, params.get("iss")):
        _fail(conn, was_active, "authorization response issuer mismatch")
        return outcome("The sign-in response came from an unexpected issuer (iss mismatch).", InvalidIssuer.code)
    if session.token_url != provider.token_url:
        log.warning("credential %s changed its token URL during a sign-in; the code is not exchanged",
                    credential.id)
        _fail(conn, was_active, "the credential's token URL changed while signing in")
        return outcome("The OAuth2 credential changed while signing in. Start again.", InvalidClient.code)
    code = params.get("code")
    if not code:
        _fail(conn, was_active, "authorization response without a code")
        return outcome("The provider's response has no authorization code.", InvalidRequest.code)
    try:
        token = grants.exchange_code(credential, session, code)
    except ProviderError as exc:
        reason = f"{exc.code}: {exc.description}" if exc.description else exc.code
        _fail(conn, was_active, f"token exchange failed: {reason}")
        return outcome(f"The provider refused the token exchange ({reason}).", exc.code)
    except OutboundError as exc:
        log.warning("credential %s: token endpoint %s unreachable: %s", credential.id, exc.url, exc.reason)
        _fail(conn, was_active, f"token endpoint unreachable: {exc.reason}")
        return outcome(f"The provider could not be reached ({exc.reason}). Try again later.", exc.code)
    fresh = store_tokens(conn, credential, token, requested_scope=session.scope or None)
    return CallbackOutcome(True, "Connected. You can close this window.", 200, connection=fresh,
                           return_to=session.return_to)
