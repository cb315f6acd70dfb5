"""What the hosted page shows: the page itself, its cards and notices, and the message pages.

The routes (``views.py``) decide; these functions only render. Statuses come
from the same domain function as ``GET /v1/connect/requirements/statuses``.
"""
from __future__ import annotations

import json
from typing import Any

from flask import current_app, g, render_template, request, url_for

from .. import accounts, errors
from ..connections import read_settings
from ..crypto import DecryptionError
from ..extensions import registry
from ..models import Connection
from ..requirements import find_requirement
from ..statuses import statuses_for
from .session import PageSession, csrf_token


#: the only two texts a status badge ever shows
BADGES = {"completed": "Connected", "pending": "Needs action"}
EXPIRED_MESSAGE = "This link has expired. Ask the app for a new one."
#: what the browser sees back from a provider or platform when no page session is left to show
RESULT_OK = "Done \u2014 you can close this window."
RESULT_ERROR = "The account was not connected"


def wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


# --- rendering ------------------------------------------------------------------------------

def type_name(item: dict[str, Any]) -> str:
    if item["type"] == "connection":
        return (item.get("spec") or {}).get("data", {}).get("type", "")
    return item["type"]


def format_error(label: str, message: str) -> str:
    """``"is required"`` → ``"API key is required"``; full sentences pass through."""
    message = message.strip()
    if message[:1].islower():
        return f"{label} {message}"
    return message


def _statuses(session: PageSession) -> list[dict[str, Any]] | None:
    try:
        return statuses_for(session.app, session.user_id)
    except errors.NotFound:  # no deployed version: nothing to connect
        return None


def _stored_values(session: PageSession, req_id: str, fields: list[dict]) -> dict[str, Any]:
    """Non-secret values of the user's existing connection, to prefill its form."""
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
        cls = reg.get(type_name(item))
        card = {"id": item["id"], "title": item["title"], "description": item.get("description") or "",
                "status": item["status"], "badge": BADGES[item["status"]],
                "kind": cls.auth if cls is not None else "unavailable",
                "type_name": type_name(item), "type_title": cls.title if cls is not None else "",
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
                           connecting_for=session.display,
                           nothing_deployed=items is None, key=session.key, csrf_token=csrf_token(session))
    return html, status


def render_expired(status: int = 401):
    """The "link expired" page (invalid, expired or missing token or cookie)."""
    return render_template("connect_message.html", heading="Link expired", message=EXPIRED_MESSAGE), status


def return_status() -> str | None:
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
    if wants_json():
        return errors.error_response(403, {"input": text})
    return render_template("connect_message.html", heading="Request refused", message=text,
                           back_url=url_for("connect_page.page", key=session.key) if session else None), 403


def expired_for_post():
    if wants_json():
        return errors.error_response(401, {"input": EXPIRED_MESSAGE})
    return render_expired()


def page_error(session: PageSession, req_id: str, field_errors: dict[str, str], status: int,
                values: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
    """A failed form action: the error shape for the script, else the whole page with the errors in place.

    JSON ``details`` name each field ``config.<field>`` and the form as a whole ``input``,
    each with the sentence the page shows.
    """
    if wants_json():
        details = {("input" if k == "_form" else f"config.{k}"): v for k, v in field_errors.items()}
        response = errors.error_response(status, details)
    else:
        html, _ = render_page(session, status, form_errors={req_id: field_errors},
                              form_values={req_id: values} if values is not None else None)
        response = current_app.make_response((html, status))
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def api_problem(prefix: str, exc: errors.APIError) -> str:
    details = "; ".join((exc.details or {}).values())
    return f"{prefix}: {details or exc.message}."


def _link_origins(session: PageSession, req_id: str) -> list[str]:
    try:
        return accounts.link_origins(session.app, find_requirement(session.app, req_id))
    except errors.NotFound:
        return []
