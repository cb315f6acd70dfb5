"""A real OAuth 2.0 authorization server for the test-suite, built on Authlib.

The server is Authlib's Flask ``AuthorizationServer`` with the standard grants
(``AuthorizationCodeGrant`` + ``CodeChallenge`` for PKCE, ``RefreshTokenGrant``,
``ClientCredentialsGrant``), the RFC 7009 ``RevocationEndpoint``, the RFC 9207
``IssuerParameter`` extension and a ``ResourceProtector``-guarded ``/userinfo``.
Storage is in memory, guarded by a lock; nothing leaves 127.0.0.1.

Usage::

    from tests.support.oauth_server import OAuthTestServer   # or a relative import

    with OAuthTestServer() as server:                 # serves http://127.0.0.1:<free port>
        server.add_client("cid", "csecret", ["http://127.0.0.1:5000/v1/connect/oauth2/callback"],
                          token_endpoint_auth_method="client_secret_post")
        server.auto_approve = True                    # GET /authorize redirects at once
        ...point the service at server.authorize_url / server.token_url / server.revoke_url...
        assert server.token_calls("refresh_token") == 1
        assert server.authorize_requests[-1]["prompt"] == "login"
        assert server.token_is_active(access_token)

Endpoints (also mounted under ``issuer_path`` when one is given):

* ``GET /authorize``   consent page (client id, scopes, ``Allow`` / ``Deny`` submit buttons
  that POST back to ``/authorize`` with the original query). ``auto_approve=True`` skips the
  page and approves; ``auto_deny=True`` skips it and denies (``error=access_denied``).
* ``POST /token``      ``authorization_code`` (PKCE S256/plain), ``refresh_token`` (rotation
  with reuse detection: presenting an already-rotated refresh token revokes the whole token
  family and answers ``invalid_grant``; presenting an already-used code does the same),
  ``client_credentials``. Client auth per client: ``client_secret_basic``,
  ``client_secret_post`` or ``none`` (public client, ``client_secret=None``). A client
  authenticating with a method other than its registered one gets ``invalid_client``.
* ``POST /revoke``     RFC 7009 (same client auth). Revoking a refresh token revokes its
  family; revoking an access token revokes only that token. Unknown tokens answer 200.
* ``GET /userinfo``    Bearer access token -> ``{"sub", "email"}``; 401 when unknown,
  expired or revoked.
* ``GET /.well-known/oauth-authorization-server``  RFC 8414 metadata.

Knobs (plain attributes, change them at any time): ``access_token_lifetime`` (3600),
``refresh_token_lifetime`` (None = never expires), ``include_expires_in`` (True),
``jwt_access_tokens`` (False; HS256 JWTs with ``exp``, or unsigned with ``jwt_alg="none"``),
``token_delay`` (0.0 s, slept before the token endpoint processes a request; requests are then
processed one at a time so rotation is atomic), ``down`` (False; token endpoint answers 503
with an HTML body), ``rotate_refresh_tokens`` (True), ``send_iss`` (False; RFC 9207 ``iss``
on every authorization response, errors included), ``require_pkce`` (False),
``auto_approve`` / ``auto_deny`` (False), ``extra_token_fields`` ({} merged into successful
token responses), ``user`` (the resource owner who approves: ``{"sub", "email"}``),
``issuer`` (defaults to ``url + issuer_path``; may be overwritten to simulate a mismatch).

Records (lists you may inspect or ``clear()``): ``authorize_requests`` (query of every
GET /authorize, multi-valued params as lists), ``token_requests`` (every token call:
``grant_type``, ``client_id``, ``auth_method`` the client used, ``authenticated_method``
accepted by the server, ``form`` with secrets, ``basic_auth`` (id, secret) or None,
``status``, ``response``), ``revocations`` (every revoke call, same shape plus ``token``,
``token_type_hint``, ``found``), ``family_revocations`` ({"family_id", "reason"}),
``errors`` (unexpected exceptions inside the server, so a test can assert it is empty).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import itertools
import json
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass

from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector, current_token
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc6749.util import extract_basic_authorization, scope_to_list
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9207 import IssuerParameter
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from .serving import BackgroundWSGIServer

__all__ = ["OAuthTestServer", "TestClient", "IssuedToken", "DEFAULT_SCOPE"]

DEFAULT_SCOPE = "openid profile email offline_access read write"
_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
_DOWN_BODY = (
    "<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>"
    "<body><h1>Service Unavailable</h1><p>The authorization server is down for maintenance."
    "</p></body></html>"
)


# --------------------------------------------------------------------------- models


@dataclass
class TestClient(ClientMixin):
    """A registered OAuth client (Authlib ``ClientMixin``)."""

    __test__ = False  # not a pytest test class

    client_id: str
    client_secret: str | None
    redirect_uris: list[str]
    token_endpoint_auth_method: str = "client_secret_basic"
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token", "client_credentials")
    scope: str = DEFAULT_SCOPE

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope):
        # Lenient: any requested scope is granted (provider-style scopes such as
        # https://www.googleapis.com/auth/drive.readonly or `repo`); no scope -> client default.
        return scope if scope else self.scope

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris  # exact, byte-for-byte

    def check_client_secret(self, client_secret):
        return self.client_secret is not None and hmac.compare_digest(
            self.client_secret.encode(), (client_secret or "").encode()
        )

    def check_endpoint_auth_method(self, method, endpoint):
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type):
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types


@dataclass
class _AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str | None  # as sent in the authorization request (None when omitted)
    scope: str
    user: dict
    code_challenge: str | None
    code_challenge_method: str | None
    family_id: str
    expires_at: float
    used: bool = False

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope


@dataclass
class IssuedToken:
    """One token response: an access token and, maybe, a refresh token (Authlib ``TokenMixin``)."""

    access_token: str
    refresh_token: str | None
    client_id: str
    grant_type: str
    scope: str | None
    user: dict | None
    family_id: str
    issued_at: float
    expires_at: float
    refresh_expires_at: float | None = None
    access_revoked: bool = False
    refresh_revoked: bool = False
    refresh_rotated: bool = False  # refresh token was exchanged (rotation) -> reuse is an attack
    parent_refresh_token: str | None = None

    # TokenMixin
    def check_client(self, client):
        return client is not None and client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return int(self.expires_at - self.issued_at)

    def is_expired(self):
        return time.time() >= self.expires_at

    def is_revoked(self):
        return self.access_revoked

    def get_user(self):
        return self.user

    def refresh_usable(self):
        return (
            self.refresh_token is not None
            and not self.refresh_revoked
            and (self.refresh_expires_at is None or time.time() < self.refresh_expires_at)
        )


# --------------------------------------------------------------------------- Authlib glue


class _AuthzServer(AuthorizationServer):
    """Authlib's Flask server; remembers which client auth method succeeded."""

    owner: "OAuthTestServer"

    def authenticate_client(self, request, methods, endpoint="token"):
        client = super().authenticate_client(request, methods, endpoint)
        try:
            g.oauth_authenticated_method = request.auth_method
        except RuntimeError:  # pragma: no cover - outside an app context
            pass
        return client


class _CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(_AUTH_METHODS)

    def save_authorization_code(self, code, request):
        self.server.owner._save_code(code, request)

    def query_authorization_code(self, code, client):
        return self.server.owner._query_code(code, client)

    def delete_authorization_code(self, authorization_code):
        authorization_code.used = True  # kept, so a replay can be detected

    def authenticate_user(self, authorization_code):
        return authorization_code.user


class _RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = list(_AUTH_METHODS)

    def authenticate_refresh_token(self, refresh_token):
        return self.server.owner._query_refresh_token(refresh_token, self.request.client)

    def authenticate_user(self, credential):
        return credential.user or {"sub": credential.client_id}

    def issue_token(self, user, refresh_token):
        self.INCLUDE_NEW_REFRESH_TOKEN = bool(self.server.owner.rotate_refresh_tokens)
        return super().issue_token(user, refresh_token)

    def revoke_old_credential(self, refresh_token):
        if self.server.owner.rotate_refresh_tokens:
            refresh_token.refresh_revoked = True
            refresh_token.refresh_rotated = True


class _ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class _PKCE(CodeChallenge):
    """Authlib's CodeChallenge; ``required`` follows ``owner.require_pkce`` for every client."""

    def __init__(self, owner):
        super().__init__(required=False)
        self.owner = owner

    @property
    def required(self):
        return bool(self.owner.require_pkce)

    @required.setter
    def required(self, value):
        pass

    def validate_code_challenge(self, grant, redirect_uri):
        super().validate_code_challenge(grant, redirect_uri)
        if self.required and not grant.request.payload.data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge' (PKCE is required).")

    def validate_code_verifier(self, grant, result):
        if self.required and not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)


class _Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = list(_AUTH_METHODS)

    def query_token(self, token_string, token_type_hint):
        return self.server.owner._find_token(token_string, token_type_hint)

    def revoke_token(self, token, request):
        self.server.owner._revoke_string(request.form["token"], reason="revocation_endpoint")


class _Issuer(IssuerParameter):
    def __init__(self, owner):
        self.owner = owner

    def get_issuer(self):
        return self.owner.issuer if self.owner.send_iss else None


class _BearerValidator(BearerTokenValidator):
    def __init__(self, owner):
        super().__init__()
        self.owner = owner

    def authenticate_token(self, token_string):
        with self.owner._lock:
            return self.owner._by_access.get(token_string)


# --------------------------------------------------------------------------- the server


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _flat(multidict) -> dict:
    out = {}
    for key in multidict:
        values = multidict.getlist(key)
        out[key] = values[0] if len(values) == 1 else list(values)
    return out


class OAuthTestServer(BackgroundWSGIServer):
    """In-process OAuth 2.0 authorization server for tests (see module docstring)."""

    def __init__(self, issuer_path: str | None = None, host: str = "127.0.0.1", port: int = 0):
        if issuer_path and not issuer_path.startswith("/"):
            issuer_path = "/" + issuer_path
        self.issuer_path = (issuer_path or "").rstrip("/")
        self.host = host
        self._port = port
        self.url: str | None = None
        self.issuer: str | None = None

        # knobs
        self.access_token_lifetime: float = 3600
        self.refresh_token_lifetime: float | None = None
        self.include_expires_in = True
        self.jwt_access_tokens = False
        self.jwt_alg = "HS256"  # or "none" (unsigned)
        self.jwt_secret = generate_token(32)
        self.token_delay = 0.0
        self.down = False
        self.rotate_refresh_tokens = True
        self.send_iss = False
        self.require_pkce = False
        self.auto_approve = False
        self.auto_deny = False
        self.extra_token_fields: dict = {}
        self.user = {"sub": "user-1", "email": "user@example.com"}
        self.code_lifetime = 600

        # records
        self.authorize_requests: list[dict] = []
        self.token_requests: list[dict] = []
        self.revocations: list[dict] = []
        self.family_revocations: list[dict] = []
        self.errors: list[str] = []

        # storage
        self._lock = threading.RLock()
        self._clients: dict[str, TestClient] = {}
        self._codes: dict[str, _AuthorizationCode] = {}
        self._tokens: list[IssuedToken] = []
        self._by_access: dict[str, IssuedToken] = {}
        self._by_refresh: dict[str, IssuedToken] = {}
        self._pending_expiry: dict[str, tuple[float, float]] = {}
        self._family_counter = itertools.count(1)

        self.app = self._build_app()

    # ------------------------------------------------------------------ lifecycle

    thread_name = "oauth-test-server"

    def _started(self) -> None:
        if self.issuer is None:
            self.issuer = self.url + self.issuer_path

    # ------------------------------------------------------------------ URLs

    def _endpoint(self, name: str) -> str:
        if self.url is None:
            raise RuntimeError("server not started")
        return f"{self.url}{self.issuer_path}/{name}"

    @property
    def authorize_url(self) -> str:
        return self._endpoint("authorize")

    @property
    def token_url(self) -> str:
        return self._endpoint("token")

    @property
    def revoke_url(self) -> str:
        return self._endpoint("revoke")

    @property
    def userinfo_url(self) -> str:
        return self._endpoint("userinfo")

    @property
    def metadata_url(self) -> str:
        return self._endpoint(".well-known/oauth-authorization-server")

    # ------------------------------------------------------------------ clients

    def add_client(
        self,
        client_id: str,
        client_secret: str | None,
        redirect_uris,
        token_endpoint_auth_method: str | None = None,
        grant_types=("authorization_code", "refresh_token", "client_credentials"),
        scope: str = DEFAULT_SCOPE,
    ) -> TestClient:
        """Register (or replace) a client. ``client_secret=None`` makes a public client (auth ``none``)."""
        if isinstance(redirect_uris, str):
            redirect_uris = [redirect_uris]
        if token_endpoint_auth_method is None:
            token_endpoint_auth_method = "none" if client_secret is None else "client_secret_basic"
        if token_endpoint_auth_method not in _AUTH_METHODS:
            raise ValueError(f"unsupported token_endpoint_auth_method {token_endpoint_auth_method!r}")
        client = TestClient(
            client_id=client_id,
            client_secret=client_secret,
            redirect_uris=list(redirect_uris or []),
            token_endpoint_auth_method=token_endpoint_auth_method,
            grant_types=tuple(grant_types),
            scope=scope,
        )
        with self._lock:
            self._clients[client_id] = client
        return client

    def get_client(self, client_id: str) -> TestClient | None:
        with self._lock:
            return self._clients.get(client_id)

    # ------------------------------------------------------------------ introspection helpers

    def token_calls(self, grant_type: str | None = None) -> int:
        """Number of token-endpoint calls (all outcomes, 503s included), optionally for one grant."""
        with self._lock:
            return sum(1 for r in self.token_requests if grant_type is None or r["grant_type"] == grant_type)

    @property
    def issued_tokens(self) -> list[IssuedToken]:
        """Every token response issued, oldest first (live objects; read, don't mutate)."""
        with self._lock:
            return list(self._tokens)

    def issued_tokens_as_dicts(self) -> list[dict]:
        with self._lock:
            return [asdict(t) for t in self._tokens]

    def last_token(self, client_id: str | None = None) -> IssuedToken | None:
        with self._lock:
            for tok in reversed(self._tokens):
                if client_id is None or tok.client_id == client_id:
                    return tok
        return None

    def token_is_active(self, access_token: str) -> bool:
        with self._lock:
            tok = self._by_access.get(access_token)
            return bool(tok and not tok.is_revoked() and not tok.is_expired())

    def refresh_token_is_active(self, refresh_token: str) -> bool:
        with self._lock:
            tok = self._by_refresh.get(refresh_token)
            return bool(tok and tok.refresh_usable())

    def revoke(self, token: str, reason: str = "test") -> bool:
        """Revoke server-side (as if the user disconnected the app at the provider)."""
        return self._revoke_string(token, reason=reason)

    def revoke_family(self, token: str, reason: str = "test") -> bool:
        """Revoke every access/refresh token sharing ``token``'s authorization."""
        with self._lock:
            tok = self._by_access.get(token) or self._by_refresh.get(token)
            if tok is None:
                return False
            self._revoke_family(tok.family_id, reason)
            return True

    def expire_access_token(self, access_token: str) -> None:
        """Make an access token expired now (its ``exp`` claim, if a JWT, is unchanged)."""
        with self._lock:
            self._by_access[access_token].expires_at = time.time() - 1

    def decode_jwt(self, token: str) -> dict:
        """Decode (and verify, for HS256) one of this server's JWT access tokens."""
        header_b64, payload_b64, sig = token.split(".")
        pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
        header = json.loads(base64.urlsafe_b64decode(pad(header_b64)))
        if header.get("alg") == "HS256":
            expected = _b64url(
                hmac.new(
                    self.jwt_secret.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256
                ).digest()
            )
            if not hmac.compare_digest(expected, sig):
                raise ValueError("bad signature")
        return json.loads(base64.urlsafe_b64decode(pad(payload_b64)))

    def reset_records(self) -> None:
        with self._lock:
            for lst in (self.authorize_requests, self.token_requests, self.revocations,
                        self.family_revocations, self.errors):
                lst.clear()

    # ------------------------------------------------------------------ storage (called by Authlib glue)

    def _new_family(self) -> str:
        return f"fam-{next(self._family_counter)}-{uuid.uuid4().hex[:8]}"

    def _save_code(self, code, req) -> None:
        data = req.payload.data
        with self._lock:
            self._codes[code] = _AuthorizationCode(
                code=code,
                client_id=req.client.get_client_id(),
                redirect_uri=req.payload.redirect_uri,
                scope=req.scope,
                user=dict(req.user),
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
                family_id=self._new_family(),
                expires_at=time.time() + self.code_lifetime,
            )

    def _query_code(self, code, client):
        with self._lock:
            rec = self._codes.get(code)
            if rec is None or rec.client_id != client.get_client_id():
                return None
            if rec.used:
                # RFC 6749 4.1.2: a replayed code revokes what it produced.
                self._revoke_family(rec.family_id, "authorization_code_reuse")
                return None
            if time.time() >= rec.expires_at:
                return None
            return rec

    def _query_refresh_token(self, refresh_token, client):
        with self._lock:
            tok = self._by_refresh.get(refresh_token)
            if tok is None or not tok.check_client(client):
                return None
            if tok.refresh_rotated:
                self._revoke_family(tok.family_id, "refresh_token_reuse")
                raise InvalidGrantError("Refresh token reuse detected; the token family is revoked.")
            if not tok.refresh_usable():
                return None
            return tok

    def _find_token(self, token_string, hint):
        with self._lock:
            order = [self._by_access, self._by_refresh]
            if hint == "refresh_token":
                order.reverse()
            for table in order:
                if token_string in table:
                    return table[token_string]
        return None

    def _revoke_string(self, token_string, reason) -> bool:
        with self._lock:
            if token_string in self._by_refresh:
                self._revoke_family(self._by_refresh[token_string].family_id, reason)
                return True
            if token_string in self._by_access:
                self._by_access[token_string].access_revoked = True
                return True
        return False

    def _revoke_family(self, family_id, reason) -> None:
        with self._lock:
            for tok in self._tokens:
                if tok.family_id == family_id:
                    tok.access_revoked = True
                    tok.refresh_revoked = True
            self.family_revocations.append({"family_id": family_id, "reason": reason})

    def _generate_token(self, grant_type, client, user=None, scope=None, expires_in=None,
                        include_refresh_token=True):
        scope = client.get_allowed_scope(scope)
        lifetime = self.access_token_lifetime if expires_in is None else expires_in
        now = time.time()
        expires_at = now + lifetime
        if self.jwt_access_tokens:
            access_token = self._make_jwt(client, user, scope, now, expires_at)
        else:
            access_token = generate_token(42)
        token = {"token_type": "Bearer", "access_token": access_token}
        if self.include_expires_in:
            token["expires_in"] = int(lifetime)
        if include_refresh_token:
            token["refresh_token"] = generate_token(48)
        if scope:
            token["scope"] = scope
        token.update(self.extra_token_fields)
        with self._lock:
            self._pending_expiry[access_token] = (now, expires_at)
        return token

    def _make_jwt(self, client, user, scope, now, expires_at) -> str:
        header = {"alg": self.jwt_alg, "typ": "at+jwt"}
        claims = {
            "iss": self.issuer,
            "sub": (user or {}).get("sub") or client.get_client_id(),
            "aud": client.get_client_id(),
            "client_id": client.get_client_id(),
            "iat": int(now),
            "exp": int(expires_at),
            "jti": uuid.uuid4().hex,
        }
        if scope:
            claims["scope"] = scope
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        if self.jwt_alg == "none":
            return signing_input + "."
        sig = hmac.new(self.jwt_secret.encode(), signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + _b64url(sig)

    def _save_token(self, token, req) -> None:
        grant_type = req.payload.grant_type
        with self._lock:
            issued_at, expires_at = self._pending_expiry.pop(token["access_token"])
            parent = None
            if grant_type == "authorization_code":
                family = req.authorization_code.family_id
            elif grant_type == "refresh_token":
                family = req.refresh_token.family_id
                parent = req.refresh_token.refresh_token
            else:
                family = self._new_family()
            refresh = token.get("refresh_token")
            rec = IssuedToken(
                access_token=token["access_token"],
                refresh_token=refresh,
                client_id=req.client.get_client_id(),
                grant_type=grant_type,
                scope=token.get("scope"),
                user=dict(req.user) if req.user else None,
                family_id=family,
                issued_at=issued_at,
                expires_at=expires_at,
                refresh_expires_at=(issued_at + self.refresh_token_lifetime)
                if (refresh and self.refresh_token_lifetime is not None) else None,
                parent_refresh_token=parent,
            )
            self._tokens.append(rec)
            self._by_access[rec.access_token] = rec
            if refresh:
                self._by_refresh[refresh] = rec

    # ------------------------------------------------------------------ Flask app

    def _client_auth_used(self):
        basic_id, basic_secret = extract_basic_authorization(request.headers)
        if basic_id is not None:
            method = "client_secret_basic"
        elif request.form.get("client_secret") is not None:
            method = "client_secret_post"
        else:
            method = "none"
        client_id = basic_id if basic_id is not None else request.values.get("client_id")
        basic = (basic_id, basic_secret) if basic_id is not None else None
        return method, client_id, basic

    def _add_iss(self, response):
        if self.send_iss and self.issuer and getattr(response, "location", None):
            if "iss=" not in response.location.split("?", 1)[-1]:
                response.location = add_params_to_uri(response.location, {"iss": self.issuer})
        return response

    def _build_app(self) -> Flask:
        app = Flask(f"oauth_test_server_{id(self)}")
        app.config["OAUTH2_REFRESH_TOKEN_GENERATOR"] = True
        authz = _AuthzServer()
        authz.owner = self
        authz.init_app(app, query_client=self.get_client, save_token=self._save_token)
        authz.register_token_generator("default", self._generate_token)
        authz.register_grant(_CodeGrant, [_PKCE(self)])
        authz.register_grant(_RefreshGrant)
        authz.register_grant(_ClientCredentialsGrant)
        authz.register_endpoint(_Revocation)
        authz.register_extension(_Issuer(self))
        self._authz = authz

        protector = ResourceProtector()
        protector.register_token_validator(_BearerValidator(self))

        prefixes = [""]
        if self.issuer_path:
            prefixes.append(self.issuer_path)

        def authorize():
            if request.method == "GET":
                with self._lock:
                    self.authorize_requests.append(_flat(request.args))
            try:
                grant = authz.get_consent_grant(end_user=self.user)
            except OAuth2Error as error:
                return self._add_iss(authz.handle_error_response(None, error))
            if request.method == "GET" and not (self.auto_approve or self.auto_deny):
                return self._consent_page(grant)
            if request.method == "GET":
                approved = bool(self.auto_approve) and not self.auto_deny
            else:
                approved = request.form.get("decision") == "allow"
            with self._lock:
                return authz.create_authorization_response(
                    grant=grant, grant_user=dict(self.user) if approved else None
                )

        def token():
            method, client_id, basic = self._client_auth_used()
            record = {
                "grant_type": request.form.get("grant_type"),
                "client_id": client_id,
                "auth_method": method,
                "authenticated_method": None,
                "form": request.form.to_dict(flat=True),
                "basic_auth": basic,
                "time": time.time(),
                "status": None,
                "response": None,
            }
            with self._lock:
                self.token_requests.append(record)
            if self.token_delay:
                time.sleep(self.token_delay)
            if self.down:
                record["status"] = 503
                return Response(_DOWN_BODY, status=503, mimetype="text/html")
            with self._lock:  # one token request at a time: rotation / code use is atomic
                response = authz.create_token_response()
            record["status"] = response.status_code
            record["response"] = response.get_json(silent=True)
            record["authenticated_method"] = g.get("oauth_authenticated_method")
            return response

        def revoke():
            method, client_id, basic = self._client_auth_used()
            token_string = request.form.get("token")
            record = {
                "token": token_string,
                "token_type_hint": request.form.get("token_type_hint"),
                "client_id": client_id,
                "auth_method": method,
                "authenticated_method": None,
                "form": request.form.to_dict(flat=True),
                "basic_auth": basic,
                "found": bool(token_string and self._find_token(token_string, None)),
                "time": time.time(),
                "status": None,
            }
            with self._lock:
                self.revocations.append(record)
                response = authz.create_endpoint_response(_Revocation.ENDPOINT_NAME)
            record["status"] = response.status_code
            record["authenticated_method"] = g.get("oauth_authenticated_method")
            return response

        @protector()
        def userinfo():
            tok = current_token._get_current_object()
            user = tok.user or {"sub": tok.client_id}
            body = {"sub": user.get("sub")}
            if user.get("email"):
                body["email"] = user["email"]
            return jsonify(body)

        def metadata():
            return jsonify({
                "issuer": self.issuer,
                "authorization_endpoint": self.authorize_url,
                "token_endpoint": self.token_url,
                "revocation_endpoint": self.revoke_url,
                "userinfo_endpoint": self.userinfo_url,
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
                "token_endpoint_auth_methods_supported": list(_AUTH_METHODS),
                "revocation_endpoint_auth_methods_supported": list(_AUTH_METHODS),
                "code_challenge_methods_supported": ["S256", "plain"],
                "authorization_response_iss_parameter_supported": bool(self.send_iss),
            })

        for prefix in prefixes:
            tag = prefix.strip("/").replace("/", "_") or "root"
            app.add_url_rule(f"{prefix}/authorize", f"authorize_{tag}", authorize, methods=["GET", "POST"])
            app.add_url_rule(f"{prefix}/token", f"token_{tag}", token, methods=["POST"])
            app.add_url_rule(f"{prefix}/revoke", f"revoke_{tag}", revoke, methods=["POST"])
            app.add_url_rule(f"{prefix}/userinfo", f"userinfo_{tag}", userinfo, methods=["GET", "POST"])
            app.add_url_rule(f"{prefix}/.well-known/oauth-authorization-server", f"metadata_{tag}", metadata)

        @app.errorhandler(Exception)
        def _unexpected(exc):
            if isinstance(exc, HTTPException):
                return exc
            self.errors.append(traceback.format_exc())
            return Response("internal error in OAuthTestServer", status=500, mimetype="text/plain")

        return app

    def _consent_page(self, grant) -> Response:
        req = grant.request
        client_id = req.client.get_client_id()
        scopes = scope_to_list(req.scope) or []
        action = request.path + ("?" + request.query_string.decode("utf-8", "replace")
                                 if request.query_string else "")
        items = "".join(f"<li>{html.escape(s)}</li>" for s in scopes)
        body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Authorize {html.escape(client_id)}</title></head>
<body>
<h1>Authorize application</h1>
<p>The application <strong id="client-id">{html.escape(client_id)}</strong> asks for access to your account
(<span id="user">{html.escape(str(self.user.get("email") or self.user.get("sub")))}</span>).</p>
<p>Redirect URI: <code id="redirect-uri">{html.escape(grant.redirect_uri or "")}</code></p>
<h2>Requested scopes</h2>
<ul id="scopes">{items}</ul>
<form method="post" action="{html.escape(action, quote=True)}">
  <button type="submit" name="decision" value="allow">Allow</button>
  <button type="submit" name="decision" value="deny">Deny</button>
</form>
</body></html>"""
        return Response(body, status=200, mimetype="text/html")
