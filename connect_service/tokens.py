"""Connect tokens (JWT, HS256) and Access Keys (``ak_…``, stored as SHA-256).

Connect tokens follow RFC 8725 (JWT BCP): the algorithm is pinned (``HS256``;
``none``, other HMAC sizes and public-key algorithms are refused before any
signature check), the key is chosen only by ``kid`` among the configured
secret and its fallbacks (never from a header such as ``jku``/``x5u``/``jwk``,
which are refused outright), every claim is required and type-checked, the
audience (``connect``) and issuer (``public_url``) are checked, and a token may
live at most 24 h.
"""
from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

import jwt

from . import ratelimit
from .extensions import settings
from .timestamps import iso

ALGORITHM = "HS256"
AUDIENCE = "connect"
LIFETIME = datetime.timedelta(hours=24)
REQUIRED_CLAIMS = ["iss", "aud", "sub", "app", "iat", "exp", "jti"]
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
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


def signing_kid(secret: str) -> str:
    """A short, non-reversible id of a signing key (the JWT ``kid`` header)."""
    return hashlib.sha256(b"connect-service-jwt" + secret.encode()).hexdigest()[:12]


def mint_connect_token(secret_key: str, issuer: str, app_id: str, user_id: str,
                       now: datetime.datetime | None = None) -> tuple[str, datetime.datetime]:
    """A signed HS256 connect token and its expiry (the JWS compact form PyJWT would produce)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    now = now.replace(microsecond=0)
    expires = now + LIFETIME
    claims = {
        "iss": issuer, "aud": AUDIENCE, "sub": user_id, "app": app_id,
        "iat": int(now.timestamp()), "exp": int(expires.timestamp()), "jti": uuid.uuid4().hex,
    }
    signing_input = _jose_header(secret_key) + b"." + _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret_key.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode(), expires


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@functools.lru_cache(maxsize=8)
def _jose_header(secret_key: str) -> bytes:
    """The encoded JOSE header for tokens signed with ``secret_key`` (built once per key)."""
    header = {"alg": ALGORITHM, "kid": signing_kid(secret_key), "typ": "JWT"}
    return _b64(json.dumps(header, separators=(",", ":")).encode())


def issue_connect_token(app, user_id: str) -> dict[str, str]:
    """Seed 000's token answer for ``user_id`` of ``app``, rate-limited per app and client address."""
    cfg = settings()
    ratelimit.hit(f"tokens:{app.id}:{ratelimit.client_address()}", cfg["rate_limit_tokens_per_minute"])
    token, expires = mint_connect_token(cfg["secret_key"], cfg["public_url"], app.id, user_id)
    return {"token": token, "expires_at": iso(expires), "connect_url": f"{cfg['public_url']}/connect?token={token}"}


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
    if not 0 < claims["exp"] - claims["iat"] <= LIFETIME.total_seconds():
        raise InvalidToken("lifetime not within 24 h")
    if claims["iat"] > datetime.datetime.now(datetime.timezone.utc).timestamp() + 60:
        raise InvalidToken("issued in the future")
    expires = datetime.datetime.fromtimestamp(claims["exp"], datetime.timezone.utc)
    return ConnectToken(user_id=claims["sub"], app_id=claims["app"], jti=claims["jti"], expires_at=expires)


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
