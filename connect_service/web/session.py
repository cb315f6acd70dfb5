"""The hosted page's browser sessions: per-(app, user) cookies, their handles, CSRF and origin checks.

``/connect?token=…`` stores the connect token in an HttpOnly, SameSite=Lax cookie
``connect_session_<handle>`` (path ``/connect``) and redirects to ``/connect/<handle>``.
The handle is an HMAC of (app id, user id), so it is stable for one end user of one
app, reveals neither, and two open links never overwrite each other. Every time a
token arrives the browser's other page cookies are pruned: expired, forged or
malformed ones are deleted and at most :data:`MAX_SESSIONS` valid ones (the newest)
are kept, so the ``Cookie`` header stays far below a proxy's header buffer.

Every form post carries a CSRF token, an HMAC of the cookie's value keyed with
``secret_key`` (another site can neither read the cookie nor compute the HMAC),
and is refused when its ``Origin`` or ``Sec-Fetch-Site`` names another site.
See docs/hosted-page.md.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Response, g, request

from ..auth import connect_identity
from ..extensions import settings
from ..models import App

SESSION_COOKIE_PREFIX = "connect_session_"
SESSION_COOKIE_PATH = "/connect"
#: page cookies kept per browser (each is ~450 bytes; nginx's default header buffer is 8 KiB)
MAX_SESSIONS = 8
HANDLE_LENGTH = 24


@dataclass
class PageSession:
    """The end user behind a page request: the handle in the URL and the token in its cookie."""

    key: str
    token: str
    user_id: str
    app: App
    expires_at: datetime.datetime
    #: how the page names the user ("Connecting for …"): the token's ``user_display``, else the user id
    display: str = ""


def _mac(*parts: str) -> str:
    message = "\n".join(parts).encode()
    return hmac.new(settings()["secret_key"].encode(), message, hashlib.sha256).hexdigest()


def page_key(app_id: str, user_id: str) -> str:
    """The non-secret handle of one (app, end user): names the cookie and the clean URL."""
    return _mac("connect-page-handle", app_id, user_id)[:HANDLE_LENGTH]


def csrf_token(session: PageSession) -> str:
    """CSRF token of a page session: an HMAC of its cookie value, so another site cannot compute it."""
    return _mac("connect-page-csrf", session.token)


def _secure() -> bool:
    return settings()["public_url"].startswith("https://")


def public_origin() -> str:
    """``scheme://host[:port]`` of ``public_url``: the only origin the page's posts may come from."""
    parts = urlsplit(settings()["public_url"])
    return f"{parts.scheme}://{parts.netloc}"


def _valid_handle(key: str) -> bool:
    return len(key) == HANDLE_LENGTH and key.isalnum()


def _session_from(key: str, token: str | None) -> PageSession | None:
    found = connect_identity(token)
    if found is None:
        return None
    identity, app = found
    if not hmac.compare_digest(page_key(app.id, identity.user_id), key):
        return None
    return PageSession(key=key, token=token, user_id=identity.user_id, app=app, expires_at=identity.expires_at,
                       display=identity.user_display or identity.user_id)


def load_session(key: str) -> PageSession | None:
    """The page session for ``/connect/<key>`` from its cookie, or None (missing, expired, forged)."""
    if not _valid_handle(key):
        return None
    session = _session_from(key, request.cookies.get(SESSION_COOKIE_PREFIX + key))
    if session is not None:
        g.page_app = session.app
    return session


def cookie_sessions() -> list[PageSession]:
    """Every valid page session this browser carries, newest first."""
    out = []
    for name, value in request.cookies.items():
        key = name[len(SESSION_COOKIE_PREFIX):]
        if name.startswith(SESSION_COOKIE_PREFIX) and _valid_handle(key):
            session = _session_from(key, value)
            if session is not None:
                out.append(session)
    out.sort(key=lambda s: s.expires_at, reverse=True)
    return out


def _delete_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path=SESSION_COOKIE_PATH, secure=_secure(), httponly=True, samesite="Lax")


def store_session(response: Response, key: str, token: str, expires_at: datetime.datetime) -> None:
    """Set the cookie of a new page session and prune the browser's other page cookies.

    Invalid, expired or malformed ``connect_session_*`` cookies are deleted; of the
    valid ones the newest ``MAX_SESSIONS - 1`` others are kept, the rest deleted.
    """
    others = [s.key for s in cookie_sessions() if s.key != key]  # newest first
    keep = set(others[:MAX_SESSIONS - 1])
    for name in request.cookies:
        if name.startswith(SESSION_COOKIE_PREFIX) and name != SESSION_COOKIE_PREFIX + key \
                and name[len(SESSION_COOKIE_PREFIX):] not in keep:
            _delete_cookie(response, name)
    max_age = int((expires_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds())
    response.set_cookie(SESSION_COOKIE_PREFIX + key, token, max_age=max(max_age, 0), path=SESSION_COOKIE_PATH,
                        httponly=True, samesite="Lax", secure=_secure())


def post_refusal(session: PageSession) -> str | None:
    """Why a POST must be refused (CSRF token, Origin, Fetch metadata), or None when it may proceed."""
    sent = request.form.get("csrf_token", "")
    if not sent or not hmac.compare_digest(sent, csrf_token(session)):
        return "csrf"
    origin = request.headers.get("Origin")
    # a form navigation under Referrer-Policy: no-referrer sends ``Origin: null``; the token still guards it
    if origin and origin != "null" and origin != public_origin():
        return "origin"
    site = request.headers.get("Sec-Fetch-Site")
    if site and site not in ("same-origin", "none"):
        return "origin"
    return None
