"""Who is calling: Access Keys (management API) and connect tokens (end users).

The decorators live here, as flaskr's ``login_required`` lives in ``auth.py``:
``api/`` and ``web/`` both import them from this module, never from each other.
"""
from __future__ import annotations

import datetime
import functools
from typing import Any, Callable

import peewee as pw
from flask import g, request

from . import errors
from .extensions import settings
from .db import compiled_sql, fetch_models
from .models import AccessKey, App, Organization, TokenRevocation, utcnow
from .tokens import ConnectToken, InvalidToken, hash_access_key, is_revoked, verify_connect_token_cached

#: a key's ``last_used_at`` is written at most this often, so reads stay reads
LAST_USED_RESOLUTION_SECONDS = 60


def bearer() -> str | None:
    """The value of ``Authorization: Bearer …``, or None."""
    return bearer_value(request.headers.get("Authorization", ""))


def bearer_value(header: str) -> str | None:
    """The credential of an ``Authorization`` header's value ``Bearer …``, or None."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def access_key_query(*models: type) -> pw.ModelSelect:
    """Every AccessKey and Organization column, then every column of each of ``models``: the start of a
    key loader's statement. Loaders join ``models`` and end with ``.where(access_key_is(""))``, so the
    key's hash is their last parameter."""
    return AccessKey.select(AccessKey, Organization, *models).join(Organization)


def access_key_is(placeholder: str):
    """The condition a key loader ends with: the key with this hash, not revoked."""
    return (AccessKey.key_hash == placeholder) & AccessKey.revoked_at.is_null()


def load_access_key(key_hash: str, view_args: dict) -> tuple[AccessKey, Any] | None:
    """The default loader of :func:`require_access_key`: ``(key with .org, None)``, one query built once per process."""
    sql = compiled_sql("auth.access_key", lambda: access_key_query().where(access_key_is("")))
    found = fetch_models(sql, (key_hash,), AccessKey, Organization)
    if not found:
        return None
    key, key.org = found[0]
    return key, None


#: a loader: (the key's hash, the view's keyword arguments) → ``(key with .org set, anything else loaded)`` or None
KeyLoader = Callable[[str, dict], "tuple[AccessKey, Any] | None"]


def verified_access_key(token: str | None, load: KeyLoader = load_access_key,
                        view_args: dict | None = None) -> tuple[AccessKey, Any] | None:
    """``(key, extra)`` for a valid, unrevoked ``ak_`` key, else None; stamps the key's ``last_used_at``.

    ``load`` reads the key and its org, and may read more in the same query (``extra``, e.g. the
    connection a ``/v1/connections/<conn_id>`` route names, from ``view_args``).
    """
    if not token or not token.startswith("ak_"):
        return None
    found = load(hash_access_key(token), view_args or {})
    if found is None:
        return None
    key = found[0]
    now = utcnow()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        AccessKey.update(last_used_at=now).where(AccessKey.id == key.id).execute()
    return found


def authenticate_access_key(token: str | None) -> AccessKey | None:
    """The ``AccessKey`` row (org joined) for a valid, unrevoked ``ak_`` key, else None."""
    found = verified_access_key(token)
    return None if found is None else found[0]


def require_access_key(view=None, *, load: KeyLoader = load_access_key):
    """Management API views: ``Authorization: Bearer ak_…`` of an org, else 401.

    Sets ``g.org``, ``g.access_key`` and ``g.preloaded`` (what ``load`` read besides the key: None
    for the default loader). Use it bare (``decorators = [require_access_key]``) or with a loader
    (``require_access_key(load=...)``).
    """
    if view is None:
        return functools.partial(require_access_key, load=load)

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        found = verified_access_key(bearer(), load, kwargs)
        if found is None:
            raise errors.Unauthorized()
        remember_access_key(found)
        return view(*args, **kwargs)

    return wrapper


def remember_access_key(found: tuple[AccessKey, Any]) -> None:
    """Set ``g.org``, ``g.access_key`` and ``g.preloaded`` from :func:`verified_access_key`'s answer."""
    key, g.preloaded = found
    g.org = key.org
    g.access_key = key


def token_app_query(*columns) -> pw.ModelSelect:
    """Every App column, the user's revocation cut-off (parameter: the user id), then ``columns``:
    the app left-joined to the (app, user) revocation row by its primary key. Loaders add their
    own joins and end with ``.where(App.id == <placeholder>)``."""
    return (App.select(App, TokenRevocation.tokens_valid_after, *columns)
            .join(TokenRevocation, pw.JOIN.LEFT_OUTER,
                  on=(TokenRevocation.app == App.id) & (TokenRevocation.user_id == "")))


def load_token_app(identity: ConnectToken) -> tuple[App, datetime.datetime | None, None] | None:
    """The default loader of :func:`require_connect_token`: ``(app, user's revocation cut-off, None)``.

    One indexed lookup, its SQL built once per process: the app by primary key, left-joined to
    the (app, user) revocation by its primary key. None when the app does not exist.
    """
    sql = compiled_sql("auth.app_unless_revoked", lambda: token_app_query().where(App.id == ""))
    found = fetch_models(sql, (identity.user_id, identity.app_id), App, extra=(TokenRevocation.tokens_valid_after,))
    if not found:
        return None
    (app,), (user_cut,) = found[0]
    return app, user_cut, None


#: a loader: the verified token's identity → ``(app, the user's revocation cut-off, anything else loaded)`` or None
AppLoader = Callable[[ConnectToken], "tuple[App, datetime.datetime | None, Any] | None"]


def verified_connect(token: str | None, load: AppLoader = load_token_app) -> tuple[ConnectToken, App, Any] | None:
    """``(identity, app, extra)`` for a valid, unrevoked connect token whose app exists; None when anything is wrong.

    ``load`` reads the app and the user's revocation cut-off, and may read more in the same
    query (``extra``, e.g. the user's connections for statuses); revocation is judged here.
    """
    if not token or token.startswith("ak_"):
        return None
    cfg = settings()
    try:
        identity = verify_connect_token_cached(token, cfg["secret_key"], cfg["secret_key_fallbacks"],
                                               cfg["public_url"])
    except InvalidToken:
        return None
    found = load(identity)
    if found is None:
        return None
    app, user_cut, extra = found
    if is_revoked(identity, app.tokens_valid_after, user_cut):
        return None
    return identity, app, extra


def connect_identity(token: str | None) -> tuple[ConnectToken, App] | None:
    """``(identity, app)`` for a valid, unrevoked connect token whose app exists; None when anything is wrong."""
    found = verified_connect(token)
    return None if found is None else found[:2]


def require_connect_token(view=None, *, load: AppLoader = load_token_app):
    """End-user views: ``Authorization: Bearer <connect token>``, else 401.

    Sets ``g.connect`` (the verified identity), ``g.app``, ``g.org_id`` and ``g.preloaded``
    (what ``load`` read besides the app: None for the default loader). Use it bare
    (``decorators = [require_connect_token]``) or with a loader
    (``require_connect_token(load=...)``).
    """
    if view is None:
        return functools.partial(require_connect_token, load=load)

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        found = verified_connect(bearer(), load)
        if found is None:
            raise errors.Unauthorized()
        remember_connect(found)
        return view(*args, **kwargs)

    return wrapper


def remember_connect(found: tuple[ConnectToken, App, Any]) -> None:
    """Set ``g.connect``, ``g.app``, ``g.org_id`` and ``g.preloaded`` from :func:`verified_connect`'s answer."""
    g.connect, g.app, g.preloaded = found
    g.org_id = found[1].org_id
