"""Signed, expiring URL segments (itsdangerous), keyed by ``secret_key`` and its fallbacks.

Both the credential start link and the action-connector webhook URL carry one;
each use has its own salt, so a value signed for one purpose never verifies for another.
"""
from __future__ import annotations

from typing import Any

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from .extensions import settings


def _serializer(salt: str) -> URLSafeTimedSerializer:
    cfg = settings()
    # itsdangerous signs with the last key and verifies with any of them: keys rotate.
    return URLSafeTimedSerializer([*cfg.get("secret_key_fallbacks", []), cfg["secret_key"]], salt=salt)


def sign(salt: str, payload: Any) -> str:
    """A URL-safe signed value holding ``payload`` (JSON-serialisable) for the purpose ``salt``."""
    return _serializer(salt).dumps(payload)


class InvalidSignature(Exception):
    """A signed value that is forged, malformed or signed for another purpose."""


class ExpiredSignature(InvalidSignature):
    """A genuine signed value older than its ``max_age``."""


def unsign(salt: str, value: str, max_age: int) -> Any:
    """The payload of ``value`` signed for ``salt`` within ``max_age`` seconds.

    Raises :class:`ExpiredSignature` for a genuine but old value (callers show an
    "expired" page), :class:`InvalidSignature` for anything else.
    """
    try:
        return _serializer(salt).loads(value, max_age=max_age)
    except SignatureExpired:
        raise ExpiredSignature() from None
    except BadData:
        raise InvalidSignature() from None
