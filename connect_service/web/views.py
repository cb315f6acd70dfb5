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
import json
import secrets
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, current_app, g, jsonify, redirect, render_template, request, url_for

from .. import accounts, errors
from ..auth import connect_identity
from ..extensions import registry, settings
from ..models import Connection
from ..requirements import find_requirement, submit_credentials
from .session import PageSession, cookie_sessions, csrf_token, load_session, page_key, post_refusal, store_session

bp = Blueprint("connect_page", __name__, template_folder="templates", static_folder="static",
               static_url_path="/connect/static")

#: the only two texts a status badge ever shows
BADGES = {"completed": "Connected", "pending": "Needs action"}
EXPIRED_MESSAGE = "This link has expired. Ask the app for a new one."
#: what the browser sees back from a provider or platform when no page session is left to show
RESULT_OK = "Done \u2014 you can close this window."
RESULT_ERROR = "The account was not connected"


def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


# --- rendering ------------------------------------------------------------------------------

def _type_name(item: dict[str, Any]) -> str:
    if item["type"] == "connection":
        return (item.get("spec") or {}).get("data", {}).get("type", "")
    return item["type"]


def _format_error(label: str, message: str) -> str:
    """``"is required"`` → ``"API key is required"``; full sentences pass through."""
    message = message.strip()
    if message[:1].islower():
        return f"{label} {message}"
    return message


def _statuses(session: PageSession) -> list[dict[str, Any]] | None:
    from ..api.connect import statuses_for

    try:
        return statuses_for(session.app, session.user_id)
    except errors.NotFound:  # no deployed version: nothing to connect
        return None


def _stored_values(session: PageSession, req_id: str, fields: list[dict]) -> dict[str, Any]:
    """Non-secret values of the user's existing connection, to prefill its form."""
    from ..connections import read_settings
    from ..crypto import DecryptionError

    conn = Connection.get_or_none(Connection.app == session.app.id, Connection.customer_id == session.user_id,
                                  Connection.requirement_id == req_id)
    if conn is None or conn.status != "active":
        return {}
    try:
        stored = read_settings(conn)
    except DecryptionError:  # e.g. a key rotated away: show an empty form, never a 500 page
        current_app.logger.warning("hosted page: cannot decrypt the settings of connection %s", conn.id)
        return {}
    out = {}
    for f in fields:
        if not f["secret"] and f["name"] in stored:
            value = stored[f["name"]]
            out[f["name"]] = value if isinstance(value, (str, bool, int, float)) else json.dumps(value)
    return out


def _error_code_arg() -> str:
    """The ``error`` query argument when it looks like an OAuth-style code (``access_denied``), else ""."""
    code = request.args.get("error", "")
    return code if code and len(code) <= 60 and code.replace("_", "").isalnum() else ""


def _return_notice(session: PageSession, req_id: str, title: str, kind: str) -> dict[str, str] | None:
    """The message for a requirement the browser just came back to (``?status=…&requirement_id=…``)."""
    status = request.args.get("status")
    if request.args.get("requirement_id") != req_id or status not in ("success", "error"):
        return None
    if kind == "action_account":
        if status == "success":
            return {"kind": "ok", "text": f"Linking {title} finished. If it is not marked done yet, "
                                          "reload this page in a minute."}
        code = _error_code_arg()
        text = f"Linking {title} did not complete"
        return {"kind": "error", "text": f"{text}: {code}. Try again." if code else f"{text}. Try again."}
    if status == "success":
        return {"kind": "ok", "text": f"Authorization for {title} finished."}
    conn = Connection.get_or_none(Connection.app == session.app.id, Connection.customer_id == session.user_id,
                                  Connection.requirement_id == req_id)
    reason = conn.status_reason if conn is not None and conn.status == "error" and conn.status_reason else ""
    reason = reason or _error_code_arg()
    text = f"The authorization for {title} did not complete"
    return {"kind": "error", "text": f"{text}: {reason}" if reason else f"{text}. Try again."}


def render_page(session: PageSession, status: int = 200, form_errors: dict[str, dict[str, str]] | None = None,
                form_values: dict[str, dict[str, Any]] | None = None,
                notices: dict[str, dict[str, str]] | None = None):
    """The page: app name and one card per requirement, with its badge and its form, link or button."""
    form_errors, form_values, notices = form_errors or {}, form_values or {}, dict(notices or {})
    items = _statuses(session)
    reg = registry()
    cards = []
    link_origins: list[str] = []  # where the action-account forms may redirect (CSP form-action)
    for item in items or []:
        cls = reg.get(_type_name(item))
        card = {"id": item["id"], "title": item["title"], "description": item.get("description") or "",
                "status": item["status"], "badge": BADGES[item["status"]],
                "kind": cls.auth if cls is not None else "unavailable",
                "type_name": _type_name(item), "type_title": cls.title if cls is not None else "",
                "errors": form_errors.get(item["id"], {}), "fields": []}
        if card["kind"] == "credentials":
            card["fields"] = cls.form()["fields"]
            values = form_values.get(item["id"])
            if values is None:
                values = _stored_values(session, item["id"], card["fields"])
            card["values"] = values
        notice = notices.get(item["id"]) or _return_notice(session, item["id"], item["title"], card["kind"])
        if notice:
            card["notice"] = notice
        if card["kind"] == "action_account":
            link_origins.extend(o for o in _link_origins(session, item["id"]) if o not in link_origins)
        cards.append(card)
    g.page_link_origins = link_origins
    page_notice = None
    if not request.args.get("requirement_id") and request.args.get("status") in ("success", "error"):
        page_notice = ({"kind": "ok", "text": "Welcome back. The list below shows what is done."}
                       if request.args["status"] == "success" else
                       {"kind": "error", "text": "Linking the account did not complete. Try again."})
    html = render_template("connect_page.html", app_name=session.app.name, cards=cards, page_notice=page_notice,
                           nothing_deployed=items is None, key=session.key, csrf_token=csrf_token(session))
    return html, status


def render_expired(status: int = 401):
    """The "link expired" page (invalid, expired or missing token or cookie)."""
    return render_template("connect_message.html", heading="Link expired", message=EXPIRED_MESSAGE), status


def _returning() -> str | None:
    """``success`` or ``error`` when the browser is back from a provider or platform (``?status=…``)."""
    status = request.args.get("status")
    return status if status in ("success", "error") else None


def render_result(status: str):
    """The neutral outcome page for a browser back without a page session (e.g. a link started by API)."""
    if status == "success":
        return render_template("connect_message.html", heading="Done", message=RESULT_OK), 200
    code = _error_code_arg()
    message = f"{RESULT_ERROR}: {code}." if code else f"{RESULT_ERROR}."
    return render_template("connect_message.html", heading="Not completed", message=message,
                           detail="You can close this window and try again."), 200


def render_refused(session: PageSession | None, reason: str):
    """403 for a post that failed the CSRF or origin checks (JSON for the script)."""
    text = ("This form has expired or was sent from another site. Reload the page and try again."
            if reason == "csrf" else "This request came from another site and was refused.")
    if _wants_json():
        return errors.error_response(403, {"input": text})
    return render_template("connect_message.html", heading="Request refused", message=text,
                           back_url=url_for("connect_page.page", key=session.key) if session else None), 403


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
        returning = _returning()
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
        returning = _returning()
        return render_result(returning) if returning else render_expired()
    saved = request.args.get("saved")
    notices = {saved: {"kind": "ok", "text": "Saved."}} if saved else None
    return render_page(session, notices=notices)


def _form_to_config(fields: list[dict], form) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Form fields → (config, non-secret values to re-show, field errors found before the schema runs)."""
    config: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for f in fields:
        name, key = f["name"], "config." + f["name"]
        if f["type"] == "boolean":
            config[name] = kept[name] = form.get(key) in ("true", "on", "1")
            continue
        raw = form.get(key, "")
        if not f["secret"]:
            kept[name] = raw
        if not raw.strip():
            if f["required"]:
                problems[name] = "is required"
            continue
        if f["type"] in ("object", "list"):
            try:
                config[name] = json.loads(raw)
            except ValueError:
                problems[name] = "must be valid JSON"
            continue
        config[name] = raw
    return config, kept, problems


def _split_details(details: dict[str, str], fields: list[dict]) -> dict[str, str]:
    """API error details → ``{field name: sentence, "_form": sentence}`` for the page."""
    labels = {f["name"]: f["label"] for f in fields}
    out: dict[str, str] = {}
    for path, message in details.items():
        name = path[len("config."):].split(".", 1)[0] if path.startswith("config.") else None
        if name in labels:
            out.setdefault(name, _format_error(labels[name], message))
        elif path == "config" and message == "cannot be blank":
            out.setdefault("_form", "Fill in at least one field.")
        else:
            out.setdefault("_form", _format_error(path.replace("_", " ").capitalize(), message))
    return out


def _post_session(key: str):
    """``(session, None)`` for an acceptable form post, else ``(None, response)``: expired link or refused post."""
    session = load_session(key)
    if session is None:
        return None, _expired_for_post()
    refusal = post_refusal(session)
    if refusal:
        return None, render_refused(session, refusal)
    return session, None


@bp.post("/connect/<key>/requirements/<req_id>/credentials")
def save_credentials(key: str, req_id: str):
    """Save a credentials form (same logic as ``POST /v1/connect/requirements/{id}/credentials``)."""
    from .. import ratelimit
    from ..api.connect import client_address

    session, refused = _post_session(key)
    if refused is not None:
        return refused
    try:
        req = find_requirement(session.app, req_id)
    except errors.NotFound:
        return _page_error(session, req_id, {"_form": "This requirement no longer exists. Reload the page."}, 404)
    cls = registry().get(_type_name({"type": req.type, "spec": req.spec}))
    if cls is None or cls.auth != "credentials":
        return _page_error(session, req_id, {"_form": "This requirement does not take a form."}, 400)
    fields = cls.form()["fields"]
    config, kept, problems = _form_to_config(fields, request.form)
    try:
        ratelimit.hit(f"credentials:{session.app.id}:{client_address()}",
                      settings()["rate_limit_credentials_per_minute"])
        if problems:  # report the schema's findings for the other fields in the same round
            schema_messages = cls.schema().validate(config)
            details = {f"config.{k}": v for k, v in problems.items()}
            for path, message in errors.flatten_messages(schema_messages, "config").items():
                details.setdefault(path, message)
            raise errors.BadRequest(details)
        submit_credentials(session.app, session.user_id, req, {"type": cls.name, "config": config}, registry())
    except errors.TooManyRequests as exc:
        return _page_error(session, req_id, {"_form": "Too many attempts. Wait a minute and try again."}, 429,
                           values=kept, headers=exc.headers)
    except errors.BadRequest as exc:
        return _page_error(session, req_id, _split_details(exc.details or {}, fields), 400, values=kept)
    if _wants_json():
        return jsonify({"requirement_id": req_id, "status": "completed", "badge": BADGES["completed"],
                        "message": "Saved."})
    return redirect(url_for("connect_page.page", key=key, saved=req_id) + f"#req-{req_id}", 303)


def _expired_for_post():
    if _wants_json():
        return errors.error_response(401, {"input": EXPIRED_MESSAGE})
    return render_expired()


def _page_error(session: PageSession, req_id: str, field_errors: dict[str, str], status: int,
                values: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
    """A failed form action: the error shape for the script, else the whole page with the errors in place.

    JSON ``details`` name each field ``config.<field>`` and the form as a whole ``input``,
    each with the sentence the page shows.
    """
    if _wants_json():
        details = {("input" if k == "_form" else f"config.{k}"): v for k, v in field_errors.items()}
        response = errors.error_response(status, details)
    else:
        html, _ = render_page(session, status, form_errors={req_id: field_errors},
                              form_values={req_id: values} if values is not None else None)
        response = current_app.make_response((html, status))
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


@bp.get("/connect/<key>/oauth2/<req_id>/start")
def oauth_start(key: str, req_id: str):
    """Start an OAuth2 flow bound to this browser (cookie nonce) and redirect to the provider."""
    from .. import oauth

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
        return _page_error(session, req_id, {"_form": "This requirement no longer exists. Reload the page."}, 404)
    except errors.APIError as exc:
        return _page_error(session, req_id, {"_form": _api_problem("This account cannot be connected right now",
                                                                   exc)}, exc.status if exc.status < 500 else 502)
    response = redirect(started.url, 302)
    # a cookie per flow (named after its state), so two flows started in this browser both complete
    oauth.set_nonce_cookie(response, started.nonce_cookie, nonce)
    return response


def _api_problem(prefix: str, exc: errors.APIError) -> str:
    details = "; ".join((exc.details or {}).values())
    return f"{prefix}: {details or exc.message}."


@bp.post("/connect/<key>/accounts/<req_id>")
def link_account(key: str, req_id: str):
    """Send the user to the action connector's link page (same logic as ``POST …/accounts``).

    The platform sends the browser back to this very page (``/connect/<key>?requirement_id=…``),
    never to the bare ``/connect``, so several open pages cannot be confused.
    """
    from .. import ratelimit
    from ..api.connect import client_address

    session, refused = _post_session(key)
    if refused is not None:
        return refused
    try:
        req = find_requirement(session.app, req_id)
        accounts.action_type(req)
        ratelimit.hit(f"accounts:{session.app.id}:{client_address()}",
                      settings()["rate_limit_credentials_per_minute"])
        back = f"{settings()['public_url']}/connect/{key}?{urlencode({'requirement_id': req.public_id})}"
        link = accounts.start_link(session.app, session.user_id, req, internal_return_to=back)
    except errors.NotFound:
        return _page_error(session, req_id, {"_form": "This requirement no longer exists. Reload the page."}, 404)
    except errors.TooManyRequests as exc:
        return _page_error(session, req_id, {"_form": "Too many attempts. Wait a minute and try again."}, 429,
                           headers=exc.headers)
    except errors.APIError as exc:
        return _page_error(session, req_id, {"_form": _api_problem("The account cannot be linked right now", exc)},
                           exc.status if exc.status < 500 else 502)
    if accounts.origin_of(link["connect_link_url"]) not in accounts.link_origins(session.app, req):
        current_app.logger.warning("hosted page: requirement %s got a link outside its type's link_origins",
                                   req.public_id)
        return _page_error(session, req_id, {"_form": "The account cannot be linked right now: the platform "
                                                      "answered with an unexpected link page."}, 502)
    return redirect(link["connect_link_url"], 303)


def _link_origins(session: PageSession, req_id: str) -> list[str]:
    try:
        return accounts.link_origins(session.app, find_requirement(session.app, req_id))
    except errors.NotFound:
        return []


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
