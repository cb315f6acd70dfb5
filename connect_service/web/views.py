"""The hosted connect page: ``GET /connect?token=…`` and the page's own ``/connect/…`` endpoints.

The connect token leaves the URL at once: ``/connect?token=…`` stores it in an
HttpOnly, SameSite=Lax cookie named after a per-(app, user) handle and
redirects to ``/connect/<handle>`` (cookies, handles, CSRF: :mod:`.session`), so
two open links for different apps or users never overwrite each other and the
URL shown, logged and kept in history carries no secret. Every form post is
authenticated by that cookie and carries a CSRF token derived from it; posts
from another origin are refused. The page works without JavaScript;
``static/connect.js`` only saves forms in place (fetch) so the other forms keep
what was typed. docs/hosted-page.md describes the whole page.
"""
from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlencode

from flask import Blueprint, Flask, current_app, g, jsonify, redirect, request, url_for

from .. import accounts, errors, oauth, ratelimit
from ..auth import connect_identity
from ..extensions import registry, settings
from ..models import Connection
from ..requirements import find_requirement, submit_config
from .forms import form_to_config, split_details
from .render import (BADGES, api_problem, expired_for_post, page_error, render_expired, render_page, render_refused,
                     render_result, return_status, type_name, wants_json)
from .session import PageSession, cookie_sessions, csrf_token, load_session, page_key, post_refusal, store_session

bp = Blueprint("connect_page", __name__, template_folder="templates", static_folder="static",
               static_url_path="/connect/static")

# --- routes ---------------------------------------------------------------------------------

@bp.get("/connect")
def entry():
    """Move the token into a cookie and redirect to the clean URL; without a token, return to a page."""
    token = request.args.get("token")
    if token is not None:
        found = connect_identity(token)
        if found is None:
            return render_expired()
        identity, app = found
        key = page_key(app.id, identity.user_id)
        response = redirect(url_for("connect_page.page", key=key), 303)
        store_session(response, key, token, identity.expires_at)
        return response
    # Back from a provider (``?status=…&requirement_id=…``): pick the page this browser started from.
    sessions = cookie_sessions()
    req_id = request.args.get("requirement_id")
    if req_id and len(sessions) > 1:
        sessions = _sessions_for_requirement(sessions, req_id) or sessions
    if not sessions:
        returning = return_status()
        return render_result(returning) if returning else render_expired()
    query = {k: request.args[k] for k in ("status", "requirement_id") if k in request.args}
    target = url_for("connect_page.page", key=sessions[0].key)
    return redirect(f"{target}?{urlencode(query)}" if query else target, 303)


def _sessions_for_requirement(sessions: list[PageSession], req_id: str) -> list[PageSession]:
    """Sessions whose user has a connection for ``req_id``, most recently updated first."""
    ranked = []
    for session in sessions:
        conn = Connection.get_or_none(Connection.app == session.app.id, Connection.customer_id == session.user_id,
                                      Connection.requirement_id == req_id)
        if conn is not None:
            ranked.append((conn.updated_at, session))
    ranked.sort(key=lambda pair: pair[0], reverse=True)
    return [session for _, session in ranked]


@bp.get("/connect/<key>")
def page(key: str):
    """The page of one (app, end user); its cookie must be in this browser."""
    session = load_session(key)
    if session is None:
        returning = return_status()
        return render_result(returning) if returning else render_expired()
    saved = request.args.get("saved")
    notices = {saved: {"kind": "ok", "text": "Saved."}} if saved else None
    return render_page(session, notices=notices)


def _post_session(key: str):
    """``(session, None)`` for an acceptable form post, else ``(None, response)``: expired link or refused post."""
    session = load_session(key)
    if session is None:
        return None, expired_for_post()
    refusal = post_refusal(session)
    if refusal:
        return None, render_refused(session, refusal)
    return session, None


@bp.post("/connect/<key>/requirements/<req_id>/credentials")
def save_credentials(key: str, req_id: str):
    """Save a connection type's form, its config (same logic as ``POST /v1/connect/requirements/{id}/credentials``)."""
    session, refused = _post_session(key)
    if refused is not None:
        return refused
    try:
        req = find_requirement(session.app, req_id)
    except errors.NotFound:
        return page_error(session, req_id, {"_form": "This requirement no longer exists. Reload the page."}, 404)
    cls = registry().get(type_name({"type": req.type, "spec": req.spec}))
    if cls is None or cls.auth != "credentials":
        return page_error(session, req_id, {"_form": "This requirement does not take a form."}, 400)
    fields = cls.form()["fields"]
    config, kept, problems = form_to_config(fields, request.form)
    try:
        ratelimit.hit(f"credentials:{session.app.id}:{ratelimit.client_address()}",
                      settings()["rate_limit_credentials_per_minute"])
        if problems:  # report the schema's findings for the other fields in the same round
            schema_messages = cls.schema().validate(config)
            details = {f"config.{k}": v for k, v in problems.items()}
            for path, message in errors.flatten_messages(schema_messages, "config").items():
                details.setdefault(path, message)
            raise errors.BadRequest(details)
        submit_config(session.app, session.user_id, req, {"type": cls.name, "config": config})
    except errors.TooManyRequests as exc:
        return page_error(session, req_id, {"_form": "Too many attempts. Wait a minute and try again."}, 429,
                           values=kept, headers=exc.headers)
    except errors.BadRequest as exc:
        return page_error(session, req_id, split_details(exc.details or {}, fields), 400, values=kept)
    if wants_json():
        return jsonify({"requirement_id": req_id, "status": "completed", "badge": BADGES["completed"],
                        "message": "Saved."})
    return redirect(url_for("connect_page.page", key=key, saved=req_id) + f"#req-{req_id}", 303)


@bp.get("/connect/<key>/oauth2/<req_id>/start")
def oauth_start(key: str, req_id: str):
    """Start an OAuth2 flow bound to this browser (cookie nonce) and redirect to the provider."""
    session = load_session(key)
    if session is None:
        return render_expired()
    if not hmac.compare_digest(request.args.get("csrf", ""), csrf_token(session)):
        return render_refused(session, "csrf")
    nonce = secrets.token_urlsafe(32)
    try:
        req = find_requirement(session.app, req_id)
        # back to this very page (not the bare /connect) so several open pages cannot be confused
        started = oauth.start_authorization(session.app, session.user_id, req,
                                            return_to=f"{settings()['public_url']}/connect/{key}",
                                            browser_nonce=nonce)
    except errors.NotFound:
        return page_error(session, req_id, {"_form": "This requirement no longer exists. Reload the page."}, 404)
    except errors.TooManyRequests as exc:
        return page_error(session, req_id, {"_form": "Too many attempts. Wait a minute and try again."}, 429,
                           headers=exc.headers)
    except errors.APIError as exc:
        return page_error(session, req_id, {"_form": api_problem("This account cannot be connected right now",
                                                                   exc)}, exc.status if exc.status < 500 else 502)
    response = redirect(started.url, 302)
    # a cookie per flow (named after its state), so two flows started in this browser both complete
    oauth.set_nonce_cookie(response, started.nonce_cookie, nonce)
    return response


@bp.post("/connect/<key>/accounts/<req_id>")
def link_account(key: str, req_id: str):
    """Send the user to the action connector's link page (same logic as ``POST …/accounts``).

    The platform sends the browser back to this very page (``/connect/<key>?requirement_id=…``),
    never to the bare ``/connect``, so several open pages cannot be confused.
    """

    session, refused = _post_session(key)
    if refused is not None:
        return refused
    try:
        req = find_requirement(session.app, req_id)
        accounts.action_type(req)
        ratelimit.hit(f"accounts:{session.app.id}:{ratelimit.client_address()}",
                      settings()["rate_limit_credentials_per_minute"])
        back = f"{settings()['public_url']}/connect/{key}?{urlencode({'requirement_id': req.public_id})}"
        link = accounts.start_link(session.app, session.user_id, req, internal_return_to=back)
    except errors.NotFound:
        return page_error(session, req_id, {"_form": "This requirement no longer exists. Reload the page."}, 404)
    except errors.TooManyRequests as exc:
        return page_error(session, req_id, {"_form": "Too many attempts. Wait a minute and try again."}, 429,
                           headers=exc.headers)
    except errors.APIError as exc:
        return page_error(session, req_id, {"_form": api_problem("The account cannot be linked right now", exc)},
                           exc.status if exc.status < 500 else 502)
    if accounts.origin_of(link["connect_link_url"]) not in accounts.link_origins(session.app, req):
        current_app.logger.warning("hosted page: requirement %s got a link outside its type's link_origins",
                                   req.public_id)
        return page_error(session, req_id, {"_form": "The account cannot be linked right now: the platform "
                                                      "answered with an unexpected link page."}, 502)
    return redirect(link["connect_link_url"], 303)


# --- headers --------------------------------------------------------------------------------

def _security_headers(response):
    if request.path != "/connect" and not request.path.startswith("/connect/"):
        return response
    app = g.get("page_app")
    ancestors = [o for o in (accounts.origin_of(u) for u in (app.frame_ancestors or [] if app else [])) if o]
    # the action-account forms redirect to their platform's link page, and only there
    form_action = " ".join(["'self'", *g.get("page_link_origins", [])])
    policy = [
        "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
        "connect-src 'self'", "object-src 'none'", "base-uri 'none'", f"form-action {form_action}",
        f"frame-ancestors {' '.join(ancestors) if ancestors else chr(39) + 'none' + chr(39)}",
    ]
    response.headers["Content-Security-Policy"] = "; ".join(policy)
    if not ancestors:
        response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def init_app(app: Flask) -> None:
    """Register the page's routes, static files and response headers."""
    app.register_blueprint(bp)
    app.after_request(_security_headers)
