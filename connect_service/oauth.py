"""OAuth2 flows: provider resolution, authorization URLs, state + PKCE, callback, token requests.

Everything that talks to an authorization server lives here and goes through
:func:`oauth_client` (the SSRF-guarded HTTP client). The API modules
(``api/oauth.py``, ``api/credentials.py``), the hosted page and the refresh
machinery call these functions; none of them builds a URL or a token request
itself.

Authorization sessions are rows, not process memory: ``state`` (256 bits) is
stored only as its SHA-256, the PKCE verifier encrypted, and a session is
consumed by one conditional ``UPDATE … WHERE consumed_at IS NULL`` so two
workers can never both accept it.
"""
from __future__ import annotations

import copy
import datetime
import hashlib
import hmac
import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple
from urllib.parse import parse_qsl, quote, urlsplit

import jwt
import peewee
from flask import current_app
from oauthlib.common import add_params_to_uri, generate_token
from oauthlib.oauth2.rfc6749.parameters import prepare_token_request
from oauthlib.oauth2 import WebApplicationClient

from . import errors
from .connection_types import ConnectionType, OAuth2Provider, ProviderError
from .connections import mark_error, notify_activated, read_settings, seal_settings
from .db import db_now, is_postgres, write_transaction
from .http import GuardedClient, OutboundError
from .models import App, AuthorizationSession, Connection, Credential, Requirement, new_id, utcnow

log = logging.getLogger(__name__)

__all__ = [
    "ProviderUnavailable", "oauth_client", "provider_for", "build_authorization_url", "start_authorization",
    "begin_authorization", "complete_authorization", "CallbackOutcome", "token_settings", "request_refresh",
    "request_client_credentials", "revoke_tokens", "exchange_code", "client_secret", "set_client_secret",
    "effective_auth_method", "effective_pkce_method", "credential_scopes", "select_credential",
    "credential_available_to", "callback_url", "hash_secret", "NONCE_COOKIE", "nonce_cookie_name",
    "set_nonce_cookie", "AuthorizationStart", "url_placeholder_problem", "purge_authorization_sessions",
    "MAX_TOKEN_LIFETIME_SECONDS",
]

#: prefix of the per-flow cookie that binds a hosted-page (or signed start URL) flow to the browser
#: that began it; the full name is :func:`nonce_cookie_name` of the flow's state
NONCE_COOKIE = "connect_oauth_nonce"
#: the longest access-token lifetime believed (10 years): larger ``expires_in``/JWT ``exp`` are clamped
MAX_TOKEN_LIFETIME_SECONDS = 10 * 365 * 24 * 3600
#: expired authorization sessions are deleted this long after their expiry (so a late callback
#: still reads "expired" rather than "unknown"), at most this many per start / refresh-due run
SESSION_PURGE_GRACE = datetime.timedelta(hours=1)
SESSION_PURGE_ON_START = 20
CALLBACK_PATH = "/v1/connect/oauth2/callback"
#: parameters the service itself sets on an authorization URL; ``additionalParams`` may not repeat them
RESERVED_PARAMS = frozenset({
    "response_type", "client_id", "redirect_uri", "state", "scope", "prompt",
    "code_challenge", "code_challenge_method",
})
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")


class ProviderUnavailable(ProviderError):
    """The token endpoint answered 5xx, 429 or a body that is not an OAuth2 JSON answer.

    A subclass of :class:`ProviderError` with ``code`` ``"server_error"``
    (``"temporarily_unavailable"`` for 429/503), so callers that only know
    ``ProviderError`` still handle it; callers that care (read-time refresh:
    502, keep the connection active) catch this class first.
    """


# --------------------------------------------------------------------------- plumbing


def _settings() -> dict[str, Any]:
    return current_app.config["CONNECT"]


def _keyring():
    return current_app.extensions["connect_keyring"]


def _registry():
    return current_app.extensions["connect_registry"]


def hash_secret(value: str) -> str:
    """Hex SHA-256 of a state or nonce: what the database stores instead of the value."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def callback_url() -> str:
    """The one redirect_uri of this service: ``{public_url}/v1/connect/oauth2/callback``."""
    return f"{_settings()['public_url']}{CALLBACK_PATH}"


def oauth_client() -> GuardedClient:
    """The guarded HTTP client for token and revocation endpoints, built from settings.

    Uses ``allowed_private_hosts`` (loopback/private hosts that may be
    reached, e.g. ``127.0.0.1`` in tests) and ``http_timeout_seconds``. A
    whole call may take at most half of ``refresh_lease_seconds``
    (``max_total_time``) and each socket operation at most a quarter of it,
    so a provider that trickles its answer cannot keep a refresh running
    after its lease expired and another worker took over.
    """
    cfg = _settings()
    lease = float(cfg.get("refresh_lease_seconds") or 60)
    timeout = min(float(cfg.get("http_timeout_seconds") or 10.0), lease / 4)
    return GuardedClient(allowed_private_hosts=cfg.get("allowed_private_hosts") or (),
                         timeout=timeout, max_total_time=min(60.0, lease / 2))


def connection_type_for(credential: Credential) -> type[ConnectionType] | None:
    """The registered connection type serving the credential's connector, if any."""
    return _registry().by_connector(credential.connector_name)


#: a URL placeholder: ``{client_id}`` or ``{<settings key>}`` (e.g. Microsoft's ``{tenant}``)
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")


def _placeholder_values(credential: Credential) -> dict[str, str]:
    settings = credential.settings if isinstance(credential.settings, dict) else {}
    values = {k: quote(str(v), safe="") for k, v in settings.items()
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
    return _keyring().decrypt_json(credential.oauth_client_secret_encrypted, "credential",
                                   "oauth_client_secret", credential.id)


def set_client_secret(credential: Credential, secret: str | None) -> None:
    """Encrypt ``secret`` into the credential row (bound to its id; assign ``id`` first)."""
    credential.oauth_client_secret_encrypted = (
        None if secret is None else
        _keyring().encrypt_json(secret, "credential", "oauth_client_secret", credential.id))


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


# --------------------------------------------------------------------------- authorization URL


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


# --------------------------------------------------------------------------- starting a flow


def credential_available_to(credential: Credential, app: App) -> bool:
    """Whether an app may use the credential (``read_access`` APP / ORGANIZATION / SPECIFIC_APPS)."""
    if credential.org_id != app.org_id:
        return False
    if credential.read_access == "APP":
        return credential.app_id == app.id
    if credential.read_access == "SPECIFIC_APPS":
        return app.slug in (credential.shared_app_slugs or []) or credential.app_id == app.id
    return True


def select_credential(app: App, connector_name: str, credential_id: str | None = None,
                      field: str = "credential",
                      grant_types: tuple[str, ...] | None = ("authorization_code",)) -> Credential:
    """The credential that serves ``connector_name`` for ``app`` (SPEC 4.1).

    The app's own (``read_access`` APP with this app) wins; else an
    ORGANIZATION or SPECIFIC_APPS one that includes the app. Two candidates
    at the same level are a 400 unless ``credential_id`` (a requirement's
    ``spec.data.credential_id``) picks one; none is a 400 with details.
    ``grant_types`` limits the candidates (``None``: any grant type, as an
    action-connector platform's client-credentials registration needs).
    """
    query = Credential.select().where(Credential.org == app.org_id, Credential.connector_name == connector_name)
    if grant_types is not None:
        query = query.where(Credential.oauth_grant_type.in_(list(grant_types)))
    rows = list(query.order_by(Credential.created_at, Credential.id))
    kind = "" if grant_types is None else "OAuth2 "
    usable = [c for c in rows if credential_available_to(c, app)]
    if credential_id:
        for cred in usable:
            if cred.id == credential_id:
                return cred
        raise errors.BadRequest({"spec.data.credential_id": f"{credential_id!r} is not a usable {kind}"
                                                            f"credential for {connector_name!r} available to this app"})
    own = [c for c in usable if c.read_access == "APP"]
    shared = [c for c in usable if c.read_access != "APP"]
    for level, label in ((own, "the app's own"), (shared, "organization-wide")):
        if len(level) == 1:
            return level[0]
        if len(level) > 1:
            ids = ", ".join(c.id for c in level)
            raise errors.BadRequest({field: f"{len(level)} {label} credentials serve {connector_name!r} ({ids}): "
                                            f"set spec.data.credential_id on the requirement to pick one"})
    raise errors.BadRequest({field: f"no {kind}credential for connector {connector_name!r} is available to this "
                                    f"app: create one with POST /v1/credentials (connector_name "
                                    f"{connector_name!r})"})


def _pending_connection(where: list, values: dict[str, Any], lock: peewee.Query | None = None) -> Connection:
    """Find the connection matching ``where`` or create it pending; an active one is left active.

    Re-authorizing an active connection keeps its old tokens working until
    the callback succeeds; a pending or failed one is reset to pending.

    Find-then-create is serialized so concurrent starts share one row: on
    SQLite by the write transaction itself (``BEGIN IMMEDIATE``), on
    PostgreSQL by locking ``lock`` (the app or credential row the
    connection belongs to) with ``SELECT … FOR NO KEY UPDATE`` first, which
    does not block inserts that merely reference that row. The unique
    index on (app, customer, requirement) still backs up requirement flows.
    """
    for _ in range(3):
        try:
            with write_transaction():
                if lock is not None and is_postgres():
                    list(lock.for_update("FOR NO KEY UPDATE"))
                conn = Connection.select().where(*where).order_by(Connection.created_at).first()
                now = utcnow()
                if conn is None:
                    with Connection._meta.database.atomic():
                        return Connection.create(status="pending", created_at=now, updated_at=now, **values)
                if conn.status != "active":
                    Connection.update(status="pending", status_reason=None, updated_at=now, **values).where(
                        Connection.id == conn.id).execute()
                    return Connection.get_by_id(conn.id)
                return conn
        except peewee.IntegrityError:  # a concurrent first start won: use its row
            continue
    raise errors.Conflict()


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
    cfg = _settings()
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


def begin_authorization(credential: Credential, connection: Connection, *, return_to: str | None = None,
                        browser_nonce: str | None = None, scopes: list[str] | None = None,
                        prompt: str | None = None, additional_params: str | None = None,
                        disable_offline_access: bool = False) -> AuthorizationStart:
    """Store an AuthorizationSession for ``connection``; return its URL (an :class:`AuthorizationStart`).

    ``state`` is 256 random bits kept only as a SHA-256; the PKCE verifier is
    encrypted; ``redirect_uri`` is :func:`callback_url`; the session expires
    after ``oauth_session_seconds``. ``browser_nonce`` (kept as a SHA-256)
    binds the session to the browser holding it in the per-flow cookie
    named ``AuthorizationStart.nonce_cookie``. The URL is built before
    anything is stored, so a 400 leaves no row. Each start also purges a
    few long-expired sessions (:func:`purge_authorization_sessions`).
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
    redirect_uri = callback_url()
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
        expires_at=utcnow() + datetime.timedelta(seconds=int(_settings()["oauth_session_seconds"])),
    )
    if verifier:
        session.verifier_encrypted = _keyring().encrypt_json(verifier, "authorization_session", "verifier",
                                                             session.id)
    session.save(force_insert=True)
    purge_authorization_sessions(SESSION_PURGE_ON_START)
    return AuthorizationStart(url, connection, nonce_cookie_name(state))


def start_authorization(app: App, user_id: str, requirement: Requirement, *, return_to: str | None = None,
                        browser_nonce: str | None = None) -> AuthorizationStart:
    """Start the OAuth2 flow for one end user's requirement; return its :class:`AuthorizationStart`.

    Picks the credential (:func:`select_credential`), creates or reuses the
    user's connection for the requirement (pending; an active one stays
    active with its old tokens until the callback succeeds), stores the
    session and builds the URL. 400 with details when the requirement is not
    an OAuth2 connection or no credential serves it. ``return_to`` is
    trusted: callers validate it (the API demands an exact ``return_urls``
    match; the hosted page passes its own URL). ``browser_nonce`` binds the
    flow to the browser carrying it in the cookie named
    ``AuthorizationStart.nonce_cookie``.
    """
    from .requirements import CONNECTION, connection_type_name

    if requirement.type != CONNECTION:
        raise errors.BadRequest({"requirement": "is fulfilled by linking an account: "
                                                f"POST /v1/connect/requirements/{requirement.public_id}/accounts"})
    type_name = connection_type_name(requirement)
    cls = _registry().get(type_name)
    if cls is None:
        raise errors.BadRequest({"requirement": f"{type_name!r} is no longer a registered connection type"})
    if cls.auth != "oauth2":
        raise errors.BadRequest({"requirement": f"{type_name} is not OAuth2-based: submit its credentials with "
                                                f"POST /v1/connect/requirements/{requirement.public_id}/credentials"})
    data = requirement.spec.get("data") or {}
    credential = select_credential(app, cls.connector_name, data.get("credential_id"))
    conn = _pending_connection(
        [Connection.app == app.id, Connection.customer_id == user_id,
         Connection.requirement_id == requirement.public_id],
        {"org": app.org_id, "app": app.id, "customer_id": user_id, "requirement_id": requirement.public_id,
         "type": cls.name, "connector_name": cls.connector_name, "integration_id": cls.name,
         "credential": credential.id},
        lock=App.select(App.id).where(App.id == app.id),
    )
    return begin_authorization(credential, conn, return_to=return_to, browser_nonce=browser_nonce)


def pending_connection_for(credential: Credential, cls: type[ConnectionType], *, app: App | None,
                           customer_id: str | None) -> Connection:
    """The connection an embed (seed 004) or credential-level flow completes (created pending if new).

    ``app`` None is the org-level connection of the credential; else the
    app's connection for ``customer_id`` (None: app-level) and this connector.
    """
    where = [Connection.org == credential.org_id, Connection.requirement_id.is_null()]
    where.append(Connection.customer_id.is_null() if customer_id is None else Connection.customer_id == customer_id)
    if app is None:
        where += [Connection.app.is_null(), Connection.credential == credential.id]
        lock = Credential.select(Credential.id).where(Credential.id == credential.id)
    else:
        where += [Connection.app == app.id, Connection.connector_name == cls.connector_name]
        lock = App.select(App.id).where(App.id == app.id)
    values = {"org": credential.org_id, "app": app.id if app else None, "customer_id": customer_id,
              "requirement_id": None, "type": cls.name, "connector_name": cls.connector_name,
              "integration_id": cls.name, "credential": credential.id}
    return _pending_connection(where, values, lock=lock)


# --------------------------------------------------------------------------- token endpoint


def _decode_body(resp) -> dict[str, Any]:
    status = resp.status_code
    if status >= 500 or status == 429:
        code = "temporarily_unavailable" if status in (429, 503) else "server_error"
        raise ProviderUnavailable(code, f"the token endpoint answered HTTP {status}")
    ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    text = resp.content.decode("utf-8", "replace")
    if ctype == "application/x-www-form-urlencoded":  # GitHub without Accept, some old servers
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        # NaN/Infinity stay strings: the raw answer is echoed in API responses, which must be strict JSON
        data = json.loads(text, parse_constant=str)
    except ValueError:
        raise ProviderUnavailable("server_error", f"the token endpoint answered HTTP {status} "
                                                  f"with a body that is not JSON") from None
    if not isinstance(data, dict):
        raise ProviderUnavailable("server_error", f"the token endpoint answered HTTP {status} "
                                                  f"with JSON that is not an object")
    return data


def _token_request(credential: Credential, provider: OAuth2Provider, body: dict[str, str],
                   token_url: str | None = None) -> dict[str, Any]:
    url = token_url or provider.token_url
    if not url:
        raise ProviderError("invalid_client", "the credential has no token URL")
    kwargs = provider.prepare_token_request(body, client_id=credential.oauth_client_id,
                                            client_secret=client_secret(credential),
                                            auth_method=credential.token_endpoint_auth_method
                                            or provider.token_endpoint_auth_method)
    with oauth_client() as client:
        resp = client.post(url, **kwargs)
    data = _decode_body(resp)
    token = provider.parse_token_response(resp.status_code, data)
    if not isinstance(token.get("access_token"), str) or not token["access_token"]:
        raise ProviderError("invalid_response", "the token response has no access_token")
    return token


def _body(grant_type: str, **params: Any) -> dict[str, str]:
    # oauthlib builds the RFC 6749 body; client authentication is the provider's job.
    return dict(parse_qsl(prepare_token_request(grant_type, include_client_id=False, **params),
                          keep_blank_values=True))


def exchange_code(credential: Credential, session: AuthorizationSession, code: str) -> dict[str, Any]:
    """Exchange an authorization code using only the stored session (token URL, redirect_uri, verifier)."""
    verifier = None
    if session.verifier_encrypted:
        verifier = _keyring().decrypt_json(session.verifier_encrypted, "authorization_session", "verifier",
                                           session.id)
    body = _body("authorization_code", code=code, redirect_uri=session.redirect_uri, code_verifier=verifier)
    return _token_request(credential, provider_for(credential), body, token_url=session.token_url)


def request_refresh(credential: Credential, refresh_token: str) -> dict[str, Any]:
    """Refresh an access token; return the provider's token response (a dict with ``access_token``).

    Raises :class:`ProviderError` for an OAuth error body (``e.g. code ==
    "invalid_grant"``), :class:`ProviderUnavailable` (a ``ProviderError``
    subclass) for a 5xx/429 or non-JSON answer, and
    ``connect_service.http.OutboundError`` when the endpoint cannot be
    reached or is refused by policy.
    """
    body = _body("refresh_token", refresh_token=refresh_token)
    return _token_request(credential, provider_for(credential), body)


def request_client_credentials(credential: Credential, scopes: list[str] | None = None) -> dict[str, Any]:
    """Fetch a token with the client_credentials grant; errors as :func:`request_refresh`."""
    scope_list = list(scopes) if scopes is not None else credential_scopes(credential)
    provider = provider_for(credential)
    params: dict[str, Any] = {}
    if scope_list:
        params["scope"] = provider.scope_separator.join(scope_list)
    return _token_request(credential, provider, _body("client_credentials", **params))


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


# --------------------------------------------------------------------------- token settings


def _naive_utc(value: datetime.datetime) -> datetime.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def _iso(value: datetime.datetime) -> str:
    return _naive_utc(value).replace(microsecond=0).isoformat() + "Z"


def _jwt_exp(access_token: Any) -> float | None:
    if not isinstance(access_token, str) or access_token.count(".") != 2:
        return None
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False, "verify_exp": False,
                                                    "verify_aud": False, "verify_iat": False,
                                                    "verify_nbf": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    if isinstance(exp, float) and math.isnan(exp):
        return None
    return exp  # may be huge or infinite: _expiry_from_exp clamps it


def _lifetime_seconds(raw: Any) -> int | None:
    """``expires_in`` as whole seconds in 1..MAX_TOKEN_LIFETIME_SECONDS, or None when unusable.

    Larger values (``1e12``, ``"inf"``) are clamped to the maximum; zero,
    negative, NaN and non-numbers are unusable.
    """
    if raw is None or raw == "" or isinstance(raw, bool):
        return None
    if isinstance(raw, int):  # any size: no float conversion that could overflow
        value: float = raw if raw < MAX_TOKEN_LIFETIME_SECONDS else MAX_TOKEN_LIFETIME_SECONDS
    else:
        try:
            value = float(raw)
        except (TypeError, ValueError, OverflowError):
            return None
    if math.isnan(value) or value < 1:
        return None
    return int(min(value, MAX_TOKEN_LIFETIME_SECONDS))


def _expiry_from_exp(exp: float, now: datetime.datetime) -> datetime.datetime:
    """A JWT ``exp`` (Unix seconds) as naive UTC, clamped to [epoch, now + MAX_TOKEN_LIFETIME_SECONDS]."""
    epoch = datetime.datetime(1970, 1, 1)
    latest = (now - epoch).total_seconds() + MAX_TOKEN_LIFETIME_SECONDS
    return epoch + datetime.timedelta(seconds=int(min(max(exp, 0), latest)))


def token_settings(token: dict[str, Any], *, previous: dict[str, Any] | None, provider: OAuth2Provider,
                   credential: Credential | None, now: datetime.datetime, new_grant: bool = False,
                   requested_scope: str | None = None) -> tuple[dict[str, Any], datetime.datetime]:
    """Seed 002 settings ``{"oauth": {"credentials": {...}, ...}}`` and the access token's expiry.

    - a refresh token in ``token`` (rotation) replaces the old one; a
      *refresh* response without one keeps ``previous``'s. A ``new_grant``
      (a code exchange or a client_credentials fetch) never inherits the
      previous grant's refresh token or scope: the user may have signed in
      as another account;
    - ``expires_in`` missing or unusable → the access token's JWT ``exp``
      (read without verification) → ``provider.default_token_lifetime`` →
      the ``default_token_lifetime_seconds`` setting: never "never expires".
      ``expires_in`` and ``exp`` are clamped to
      :data:`MAX_TOKEN_LIFETIME_SECONDS`, so no provider answer can overflow;
    - ``scope`` missing → ``requested_scope`` when given (RFC 6749 §5.1:
      omitted means "as requested"), else the previous scope (§6, refresh);
      ``created_at`` and ``metadata`` carry over from ``previous``.

    ``now`` should be the database clock (:func:`connect_service.db.db_now`):
    refresh decisions compare the expiry with it. Returns ``(settings,
    expires_at)`` with ``expires_at`` naive UTC (the ``Connection.expires_at``
    column).
    """
    now = _naive_utc(now)
    prev_oauth = (previous or {}).get("oauth") if isinstance(previous, dict) else None
    prev_oauth = prev_oauth if isinstance(prev_oauth, dict) else {}
    prev_creds = prev_oauth.get("credentials") if isinstance(prev_oauth.get("credentials"), dict) else {}
    inherited = {} if new_grant else prev_creds

    expires_in = _lifetime_seconds(token.get("expires_in"))
    if expires_in is not None:
        expires_at = now + datetime.timedelta(seconds=expires_in)
    else:
        exp = _jwt_exp(token.get("access_token"))
        if exp is not None:
            expires_at = _expiry_from_exp(exp, now)
        else:
            lifetime = _lifetime_seconds(provider.default_token_lifetime) \
                or _lifetime_seconds(_settings()["default_token_lifetime_seconds"]) or 3600
            expires_at = now + datetime.timedelta(seconds=lifetime)
        expires_in = max(0, int((expires_at - now).total_seconds()))

    scope = token.get("scope")
    if isinstance(scope, (list, tuple)):
        scope = " ".join(str(s) for s in scope)
    if not scope:
        scope = requested_scope if requested_scope is not None else inherited.get("scope")
    credentials = {
        "access_token": token["access_token"],
        "refresh_token": token.get("refresh_token") or inherited.get("refresh_token"),
        "scope": scope,
        "expires_in": expires_in,
        "expires_at": _iso(expires_at),
        "token_type": token.get("token_type") or prev_creds.get("token_type") or "Bearer",
        "client_id": credential.oauth_client_id if credential is not None else prev_creds.get("client_id"),
        "raw": dict(token),
    }
    settings = {"oauth": {
        "credentials": credentials,
        "created_at": prev_oauth.get("created_at") or _iso(now),
        "updated_at": _iso(now),
        "last_fetched_at": _iso(now),
        "metadata": prev_oauth.get("metadata") or {},
    }}
    return settings, expires_at


def store_tokens(conn: Connection, credential: Credential, token: dict[str, Any], *,
                 keep_previous: bool = True, requested_scope: str | None = None) -> Connection:
    """Write a *new grant*'s token into ``conn`` (re-read in the transaction), activate it, bump its generation.

    For code exchanges and client_credentials fetches, not refreshes: the
    previous grant's refresh token and scope are never carried over (a
    response without a refresh token leaves none). ``keep_previous`` keeps
    the previous settings' ``created_at`` and ``metadata``; ``requested_scope``
    is stored when the response names no scope. Times come from the
    database clock, which the refresh logic compares them with.
    """
    provider = provider_for(credential)
    with write_transaction():
        current = Connection.get_by_id(conn.id)
        previous = read_settings(current) if keep_previous and current.credential_id == credential.id else None
        now = db_now()
        settings, expires_at = token_settings(token, previous=previous, provider=provider,
                                              credential=credential, now=now, new_grant=True,
                                              requested_scope=requested_scope)
        Connection.update(
            settings_encrypted=seal_settings(current, settings), expires_at=expires_at, status="active",
            status_reason=None, credential=credential.id, updated_at=now, last_refreshed_at=now,
            refresh_generation=Connection.refresh_generation + 1, refresh_lease_until=None,
            refresh_lease_owner=None,
        ).where(Connection.id == current.id).execute()
    fresh = Connection.get_by_id(conn.id)
    notify_activated(fresh)
    return fresh


# --------------------------------------------------------------------------- callback


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


def complete_authorization(params: Mapping[str, str], *, browser_nonce: str | None = None) -> CallbackOutcome:
    """Handle ``GET /v1/connect/oauth2/callback`` (query ``params``, nonce cookie value).

    Order matters: the state is looked up by hash, checked for expiry and
    use, the browser binding compared, and the session consumed atomically
    *before* anything else, so a replayed, unknown, expired or foreign state
    never reaches the token endpoint. Then the provider's ``error``, the RFC
    9207 ``iss`` (when the credential or provider declares an issuer, it must
    be present and equal), the code exchange with the stored verifier,
    token URL and redirect_uri, and the token write.
    """
    state = params.get("state") or ""
    if not state:
        return CallbackOutcome(False, "The sign-in response has no state parameter.", 400, error_code="invalid_request")
    session = AuthorizationSession.get_or_none(AuthorizationSession.state_hash == hash_secret(state))
    if session is None:
        return CallbackOutcome(False, "This sign-in link is unknown or was already used. Start again.", 400,
                               error_code="invalid_state")
    now = utcnow()
    rejected = None
    if session.consumed_at is not None:
        rejected = ("This sign-in response was already used. Start again.", "invalid_state")
    elif session.expires_at <= now:
        rejected = ("This sign-in attempt expired. Start again.", "expired_state")
    elif session.browser_nonce_hash and not hmac.compare_digest(
            session.browser_nonce_hash, hash_secret(browser_nonce or "")):
        rejected = ("This sign-in was started in another browser. Start again from the connect page.",
                    "browser_mismatch")
    if rejected is None:
        consumed = AuthorizationSession.update(consumed_at=now).where(
            AuthorizationSession.id == session.id, AuthorizationSession.consumed_at.is_null(),
            AuthorizationSession.expires_at > now).execute()
        if consumed != 1:
            rejected = ("This sign-in response was already used. Start again.", "invalid_state")
    conn = Connection.get_or_none(Connection.id == session.connection_id)
    if rejected is not None or conn is None:
        message, code = rejected or ("The connection was deleted while signing in.", "invalid_state")
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
        return outcome("The OAuth2 credential was deleted while signing in.", "invalid_client")
    provider = provider_for(credential)
    if provider.issuer and params.get("iss") != provider.issuer:
        _fail(conn, was_active, "authorization response issuer mismatch")
        return outcome("The sign-in response came from an unexpected issuer (iss mismatch).", "invalid_issuer")
    code = params.get("code")
    if not code:
        _fail(conn, was_active, "authorization response without a code")
        return outcome("The provider's response has no authorization code.", "invalid_request")
    try:
        token = exchange_code(credential, session, code)
    except ProviderError as exc:
        reason = f"{exc.code}: {exc.description}" if exc.description else exc.code
        _fail(conn, was_active, f"token exchange failed: {reason}")
        return outcome(f"The provider refused the token exchange ({reason}).", exc.code)
    except OutboundError as exc:
        _fail(conn, was_active, f"token endpoint unreachable: {exc.reason}")
        return outcome(f"The token endpoint could not be reached ({exc.reason}: {exc.url}).", exc.code)
    fresh = store_tokens(conn, credential, token, requested_scope=session.scope or None)
    return CallbackOutcome(True, "Connected. You can close this window.", 200, connection=fresh,
                           return_to=session.return_to)


def is_exact_return_url(app: App, value: str) -> bool:
    """Whether ``value`` is byte-for-byte one of the app's ``return_urls`` (and an absolute http(s) URL)."""
    if not isinstance(value, str) or value not in (app.return_urls or []):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and "\\" not in value
