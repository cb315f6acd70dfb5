"""Who is calling: Access Keys (management API) and connect tokens (end users).

The decorators live here, as flaskr's ``login_required`` lives in ``auth.py``:
``api/`` and ``web/`` both import them from this module, never from each other.
"""
from __future__ import annotations

import functools

from flask import g, request

from . import errors
from .extensions import settings
from .db import compiled_sql, fetch_models
from .models import AccessKey, App, Organization, utcnow
from .tokens import InvalidToken, hash_access_key, verify_connect_token_cached

#: a key's ``last_used_at`` is written at most this often, so reads stay reads
LAST_USED_RESOLUTION_SECONDS = 60


def bearer() -> str | None:
    """The value of ``Authorization: Bearer …``, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate_access_key(token: str | None) -> AccessKey | None:
    """The ``AccessKey`` row (org joined) for a valid, unrevoked ``ak_`` key, else None."""
    if not token or not token.startswith("ak_"):
        return None
    sql = compiled_sql("auth.access_key", lambda: AccessKey.select(AccessKey, Organization).join(Organization).where(
        AccessKey.key_hash == "", AccessKey.revoked_at.is_null()))
    found = fetch_models(sql, (hash_access_key(token),), AccessKey, Organization)
    if not found:
        return None
    key, key.org = found[0]
    now = utcnow()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        AccessKey.update(last_used_at=now).where(AccessKey.id == key.id).execute()
    return key


def require_access_key(view):
    """Management API views: ``Authorization: Bearer ak_…`` of an org, else 401.

    Sets ``g.org`` and ``g.access_key``.
    """

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = authenticate_access_key(bearer())
        if key is None:
            raise errors.Unauthorized()
        g.org = key.org
        g.access_key = key
        return view(*args, **kwargs)

    return wrapper


def connect_identity(token: str | None):
    """``(identity, app)`` for a valid connect token whose app exists; None when anything is wrong."""
    if not token or token.startswith("ak_"):
        return None
    cfg = settings()
    try:
        identity = verify_connect_token_cached(token, cfg["secret_key"], cfg["secret_key_fallbacks"],
                                               cfg["public_url"])
    except InvalidToken:
        return None
    app = app_by_id(identity.app_id)
    if app is None:
        return None
    return identity, app


def app_by_id(app_id: str) -> App | None:
    """The ``App`` row with this id, or None (one query whose SQL is built once per worker)."""
    found = fetch_models(compiled_sql("auth.app_by_id", lambda: App.select().where(App.id == "")), (app_id,), App)
    return found[0][0] if found else None


def require_connect_token(view):
    """End-user views: ``Authorization: Bearer <connect token>``, else 401.

    Sets ``g.connect`` (the verified identity), ``g.app`` and ``g.org_id``.
    """

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        found = connect_identity(bearer())
        if found is None:
            raise errors.Unauthorized()
        g.connect, g.app = found
        g.org_id = g.app.org_id
        return view(*args, **kwargs)

    return wrapper
