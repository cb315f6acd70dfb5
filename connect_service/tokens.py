"""Connect tokens (JWT, HS256) and Access Keys (``ak_…``, stored as SHA-256).

Connect tokens follow RFC 8725 (JWT BCP): the algorithm is pinned (``HS256``;
``none``, other HMAC sizes and public-key algorithms are refused before any
signature check), the key is chosen only by ``kid`` among the configured
secret and its fallbacks (never from a header such as ``jku``/``x5u``/``jwk``,
which are refused outright), every claim is required and type-checked, the
audience (``connect``) and issuer (``public_url``) are checked, and a token may
live at most 24 h.

Revocation (``DELETE /v1/apps/{id}/users/{user_id}/tokens``, an app turning
private) stores a cut-off with microseconds; a token carries its issue time to
the microsecond in ``iat_us`` beside the whole-second ``iat``, so a token minted
in the same second after a revocation still works (:func:`is_revoked`).
Apps with ``user_verification: "required"`` mint tokens only for a
``user_id_signature`` = hex HMAC-SHA256(secret, user_id) (:func:`issue_connect_token`).
"""
from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass

import jwt
import marshmallow as ma

from . import errors, ratelimit
from .extensions import keyring, settings
from .fields import WHITESPACE, NonBlank
from .models import App, AuthorizationSession, Connection, TokenRevocation, utcnow
from .timestamps import iso

ALGORITHM = "HS256"
AUDIENCE = "connect"
LIFETIME = datetime.timedelta(hours=24)
REQUIRED_CLAIMS = ["iss", "aud", "sub", "app", "iat", "exp", "jti"]
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
MICROSECOND = datetime.timedelta(microseconds=1)
#: ``user_display`` is shown on the hosted page ("Connecting for …") and rides in the token (cookie size)
DISPLAY_MAX = 64
USER_ID_MAX = 200
SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{64}")


#: OpenAPI: what :func:`_plain_text` refuses, as far as a portable pattern can say it (markup, controls, private
#: use, line/paragraph separators and the common format characters; the other format and unassigned characters
#: depend on the server's Unicode database, and lone surrogates stay out of patterns: see ``fields.NO_NUL``)
_NOT_PLAIN = (r"<>\u0000-\u001F\u007F-\u009F\u00AD\u0600-\u0605\u061C\u06DD\u070F\u180E\u200B-\u200F"
              r"\u2028-\u202E\u2060-\u2064\u2066-\u206F\uE000-\uF8FF\uFEFF\uFFF9-\uFFFB")
DISPLAY_PATTERN = rf"^[^{_NOT_PLAIN}]*[^{WHITESPACE}{_NOT_PLAIN}][^{_NOT_PLAIN}]*$"


def _plain_text(value: str) -> None:
    """Short plain text: no markup, no control, format (bidi override), private-use or unpaired characters."""
    if any(c in "<>" or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in value):
        raise ma.ValidationError("must be plain text on one line (no markup or control characters)")


def _no_surrogates(value: str) -> None:
    """A lone surrogate cannot be encoded as UTF-8: no token (nor page, nor row) may carry one."""
    if any(unicodedata.category(c) == "Cs" for c in value):
        raise ma.ValidationError("must be valid Unicode text (no unpaired surrogates)")


class TokenCreateSchema(ma.Schema):
    """Seed 001's body plus the optional identity fields of issue 12 (items 9 and 10)."""

    user_id = NonBlank(required=True, validate=[ma.validate.Length(min=1, max=USER_ID_MAX), _no_surrogates],
                       metadata={"description": "your end user's id"})
    user_id_signature = ma.fields.String(allow_none=True, validate=ma.validate.Length(max=128), metadata={
        "description": "apps with user_verification \"required\": hex HMAC-SHA256 of user_id under the "
                       "app's user_verification_secret (ignored otherwise)"})
    user_display = NonBlank(validate=[ma.validate.Length(max=DISPLAY_MAX), _plain_text], metadata={
        "description": "how the hosted page names the user (\"Connecting for …\"); default: user_id",
        "example": "Alice Example", "pattern": DISPLAY_PATTERN})

#: seconds past ``exp`` a token is still accepted
EXPIRY_LEEWAY = 30


class InvalidToken(Exception):
    """The connect token is malformed, expired, wrongly signed or missing a claim."""


@dataclass(frozen=True)
class ConnectToken:
    user_id: str
    app_id: str
    jti: str
    expires_at: datetime.datetime
    #: microseconds since the epoch (``iat_us``; a token without it: the start of its ``iat`` second)
    issued_at_us: int = 0
    #: the ``user_display`` given at minting (claim ``name``), else None
    user_display: str | None = None


def signing_kid(secret: str) -> str:
    """A short, non-reversible id of a signing key (the JWT ``kid`` header)."""
    return hashlib.sha256(b"connect-service-jwt" + secret.encode()).hexdigest()[:12]


def _micros(moment: datetime.datetime) -> int:
    """Microseconds since the epoch, exactly (naive values are UTC, as the database stores them)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return (moment - EPOCH) // MICROSECOND


def mint_connect_token(secret_key: str, issuer: str, app_id: str, user_id: str,
                       now: datetime.datetime | None = None,
                       user_display: str | None = None) -> tuple[str, datetime.datetime]:
    """A signed HS256 connect token and its expiry (the JWS compact form PyJWT would produce)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    issued_us = _micros(now)
    iat = issued_us // 1_000_000
    expires = datetime.datetime.fromtimestamp(iat, datetime.timezone.utc) + LIFETIME
    claims = {
        "iss": issuer, "aud": AUDIENCE, "sub": user_id, "app": app_id,
        "iat": iat, "iat_us": issued_us, "exp": int(expires.timestamp()), "jti": uuid.uuid4().hex,
    }
    if user_display:
        claims["name"] = user_display
    # UTF-8 JSON, not \uXXXX escapes: a display name of emoji stays small enough for the page cookie
    payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    signing_input = _jose_header(secret_key) + b"." + _b64(payload)
    signature = hmac.new(secret_key.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode(), expires


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@functools.lru_cache(maxsize=8)
def _jose_header(secret_key: str) -> bytes:
    """The encoded JOSE header for tokens signed with ``secret_key`` (built once per key)."""
    header = {"alg": ALGORITHM, "kid": signing_kid(secret_key), "typ": "JWT"}
    return _b64(json.dumps(header, separators=(",", ":")).encode())


def issue_connect_token(app: App, data: dict) -> dict[str, str]:
    """Seed 001's token answer for :class:`TokenCreateSchema` data, rate-limited per app and client address.

    An app with ``user_verification: "required"`` needs ``user_id_signature``; missing or wrong is a 401.
    """
    cfg = settings()
    ratelimit.hit(f"tokens:{app.id}:{ratelimit.client_address()}", cfg["rate_limit_tokens_per_minute"])
    if app.user_verification == "required" and not user_signature_valid(app, data["user_id"],
                                                                          data.get("user_id_signature")):
        raise errors.Unauthorized()
    token, expires = mint_connect_token(cfg["secret_key"], cfg["public_url"], app.id, data["user_id"],
                                        user_display=data.get("user_display"))
    return {"token": token, "expires_at": iso(expires), "connect_url": f"{cfg['public_url']}/connect?token={token}"}


def user_verification_secret(app: App) -> str | None:
    """The app's decrypted ``user_verification_secret``, or None."""
    if not app.user_verification_secret_encrypted:
        return None
    return keyring().decrypt_json(app.user_verification_secret_encrypted, "app", "user_verification_secret", app.id)


def user_signature_valid(app: App, user_id: str, signature: str | None) -> bool:
    """Whether ``signature`` is hex HMAC-SHA256(app's secret, UTF-8 ``user_id``); compared in constant time."""
    secret = user_verification_secret(app)
    if secret is None or not isinstance(signature, str) or not SIGNATURE_RE.fullmatch(signature):
        return False
    expected = hmac.new(secret.encode(), user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.lower())


def revoke_user_tokens(app: App, user_id: str) -> None:
    """Refuse every connect token of ``user_id`` of ``app`` issued up to now (tokens minted later work)."""
    if len(user_id) > USER_ID_MAX:  # no token can carry it
        raise errors.BadRequest({"user_id": f"must be at most {USER_ID_MAX} characters"})
    now = utcnow()
    (TokenRevocation.insert(app=app.id, user_id=user_id, tokens_valid_after=now)
     .on_conflict(conflict_target=[TokenRevocation.app, TokenRevocation.user_id],
                  update={TokenRevocation.tokens_valid_after: now})
     .execute())
    _expire_pending_flows(Connection.select(Connection.id).where(Connection.app == app.id,
                                                                 Connection.customer_id == user_id), now)


def revoke_app_tokens(app: App) -> None:
    """Refuse every connect token of ``app`` issued up to now; the caller saves ``app``."""
    now = utcnow()
    app.tokens_valid_after = now
    _expire_pending_flows(Connection.select(Connection.id).where(Connection.app == app.id), now)


def _expire_pending_flows(connections, now) -> None:
    """OAuth flows that revoked tokens started expire with them: their callback answers "expired"."""
    AuthorizationSession.update(expires_at=now).where(
        AuthorizationSession.connection.in_(connections), AuthorizationSession.consumed_at.is_null(),
        AuthorizationSession.expires_at > now).execute()


def is_revoked(identity: ConnectToken, *cutoffs: datetime.datetime | None) -> bool:
    """Whether the token was issued at or before any of the cut-offs (``tokens_valid_after`` values)."""
    return any(cut is not None and identity.issued_at_us <= _micros(cut) for cut in cutoffs)


def verify_connect_token(token: str, secret_key: str, fallbacks: list[str], issuer: str) -> ConnectToken:
    """Verify signature (key chosen by ``kid``), algorithm, every claim and the 24 h lifetime.

    Raises :class:`InvalidToken` whose message is a short reason (never the token or a claim value).
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("malformed") from None
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("unexpected algorithm")
    if any(h in header for h in FORBIDDEN_HEADERS):
        raise InvalidToken("forbidden header")
    if header.get("typ", "JWT") != "JWT":
        raise InvalidToken("unexpected token type")
    keys = {signing_kid(k): k for k in [secret_key, *fallbacks] if k}
    key = keys.get(header.get("kid"))
    if key is None:
        raise InvalidToken("unknown key id")
    try:
        claims = jwt.decode(
            token, key.encode(), algorithms=[ALGORITHM], audience=AUDIENCE, issuer=issuer,
            options={"require": REQUIRED_CLAIMS}, leeway=EXPIRY_LEEWAY,
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(type(exc).__name__) from None
    if claims["aud"] != AUDIENCE:  # a list containing "connect" is someone else's token too
        raise InvalidToken("unexpected audience")
    if not all(isinstance(claims[c], str) and claims[c] for c in ("sub", "app", "jti")):
        raise InvalidToken("bad claim type")
    if type(claims["iat"]) is not int or type(claims["exp"]) is not int:  # noqa: E721 (bool is an int)
        raise InvalidToken("bad claim type")
    issued_us = claims.get("iat_us", claims["iat"] * 1_000_000)
    if type(issued_us) is not int or issued_us // 1_000_000 != claims["iat"]:  # noqa: E721
        raise InvalidToken("bad claim type")
    display = claims.get("name")
    if display is not None and not (isinstance(display, str) and 0 < len(display) <= DISPLAY_MAX):
        raise InvalidToken("bad claim type")
    if not 0 < claims["exp"] - claims["iat"] <= LIFETIME.total_seconds():
        raise InvalidToken("lifetime not within 24 h")
    if claims["iat"] > datetime.datetime.now(datetime.timezone.utc).timestamp() + 60:
        raise InvalidToken("issued in the future")
    expires = datetime.datetime.fromtimestamp(claims["exp"], datetime.timezone.utc)
    return ConnectToken(user_id=claims["sub"], app_id=claims["app"], jti=claims["jti"], expires_at=expires,
                        issued_at_us=issued_us, user_display=display)


# --- per-worker cache of verified tokens (performance; every rule above still applies) -------------

#: most verified tokens a worker remembers; the oldest is forgotten first
VERIFIED_CACHE_SIZE = 4096
_verified: dict[tuple, tuple[ConnectToken, float]] = {}
_verified_lock = threading.Lock()


def verify_connect_token_cached(token: str, secret_key: str, fallbacks: list[str], issuer: str) -> ConnectToken:
    """:func:`verify_connect_token`, remembered per worker for tokens that passed it.

    Whether a token's header, signature and claims pass depends only on the token, the keys and
    the issuer, which together are the cache key (rotating or dropping a key therefore misses).
    What depends on time is checked again on every call: a remembered token past ``exp`` (plus
    the same leeway) is refused and forgotten. Failures are never remembered. Checks that
    depend on stored state (the app exists, revocation) belong to the caller, on every request.
    """
    key = (token, secret_key, tuple(fallbacks), issuer)
    hit = _verified.get(key)
    if hit is not None:
        identity, deadline = hit
        if time.time() < deadline:
            return identity
        _verified.pop(key, None)
        raise InvalidToken("ExpiredSignatureError")
    identity = verify_connect_token(token, secret_key, fallbacks, issuer)
    with _verified_lock:
        while len(_verified) >= VERIFIED_CACHE_SIZE:
            _verified.pop(next(iter(_verified)), None)
        _verified[key] = (identity, identity.expires_at.timestamp() + EXPIRY_LEEWAY)
    return identity


ACCESS_KEY_PREFIX = "ak_"


def generate_access_key() -> tuple[str, str, str]:
    """Return ``(plaintext, display prefix, sha256 hex)``; only the hash is stored."""
    plaintext = ACCESS_KEY_PREFIX + secrets.token_urlsafe(32)
    return plaintext, plaintext[:10], hash_access_key(plaintext)


def hash_access_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()
