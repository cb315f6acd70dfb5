"""One error hierarchy and one JSON shape for every error the service returns.

``{"error": {"code": "bad_request", "message": "Bad Request", "details": {...}}}``:
``code`` is the snake_case reason phrase, ``message`` the phrase itself and
``details`` (present only when there is something to say) maps a field path
(dots for nesting, ``input`` for the whole body) to one sentence.
"""
from __future__ import annotations

import contextlib
import logging
import re
from http import HTTPStatus
from typing import Any, Iterator, Mapping

import marshmallow as ma
from flask import jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


#: the longest run of submitted text an error may repeat (issue 12 item 10)
MAX_ECHO = 64
# every quoted run, left to right (so 'a' … 'b' pairs as two short quotes, never as one long one)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_LONG_WORD = re.compile(r"\S{%d,}" % (MAX_ECHO + 1))
_MARKUP = str.maketrans({"<": "\u2039", ">": "\u203a"})  # ‹ › read the same and are never a tag


def _shorten(match: re.Match) -> str:
    text = match.group(0)
    if text.startswith("/v1/"):  # one of our own routes, naming a resolved row: not submitted text
        return text
    if text[0] in "'\"" and text[-1] == text[0]:
        return text if len(text) <= MAX_ECHO + 2 else text[:MAX_ECHO - 2] + "…" + text[0]
    return text[:MAX_ECHO - 1] + "…"


def safe_text(text: str) -> str:
    """``text`` fit to repeat in an error: no markup, no quoted value or word longer than 64 characters.

    Messages and field paths may carry what a client submitted (an unknown
    field's name, a value quoted with ``!r``); an error answer must not become
    a way to reflect long or marked-up text back to a browser or a log viewer.
    """
    text = str(text).translate(_MARKUP)
    if len(text) <= MAX_ECHO:
        return text
    return _LONG_WORD.sub(_shorten, _QUOTED.sub(_shorten, text))


def safe_details(details: Mapping[str, Any]) -> dict[str, str]:
    """:func:`safe_text` on every message and field path; a path longer than 64 characters is cut short."""
    out: dict[str, str] = {}
    for path, message in details.items():
        key = ".".join(safe_text(segment) for segment in str(path).split("."))
        if len(key) > MAX_ECHO:  # a path is itself submitted text (keys the client chose)
            key = key[:MAX_ECHO - 1] + "…"
        out.setdefault(key, safe_text(message) if isinstance(message, str) else message)
    return out


#: reason phrases the spec fixes where Python's differ (3.11: "Request Entity Too Large", 3.13: "Content Too Large")
PHRASES = {413: "Payload Too Large"}


def reason_phrase(status: int) -> str:
    return PHRASES.get(status) or HTTPStatus(status).phrase


def error_code(status: int) -> str:
    return reason_phrase(status).lower().replace(" ", "_").replace("-", "_")


class APIError(Exception):
    """Raise anywhere in a request to answer with the error shape.

    >>> raise BadRequest({"config.api_key": "cannot be blank"})
    """

    status = 500

    def __init__(self, details: Mapping[str, str] | None = None, message: str | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message or reason_phrase(self.status))
        self.details = safe_details(details) if details else None
        self.message = message or reason_phrase(self.status)
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": error_code(self.status), "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class BadRequest(APIError):
    status = 400


class Unauthorized(APIError):
    status = 401


class Forbidden(APIError):
    status = 403


class NotFound(APIError):
    status = 404


class Conflict(APIError):
    status = 409


class PayloadTooLarge(APIError):
    status = 413


class UnsupportedMediaType(APIError):
    status = 415


class TooManyRequests(APIError):
    status = 429


class BadGateway(APIError):
    """A provider or platform failed; ``details`` says which and why."""

    status = 502


class ServiceUnavailable(APIError):
    status = 503


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, str]:
    """Turn marshmallow's nested error messages into ``{"a.b": "first message"}``."""
    out: dict[str, str] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            if key == "_schema":
                name = prefix or "input"
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            out.update(flatten_messages(value, name))
    elif isinstance(messages, (list, tuple)):
        if messages and all(isinstance(m, str) for m in messages):
            out[prefix or "input"] = _sentence(messages[0])
        else:
            for item in messages:
                out.update(flatten_messages(item, prefix))
    else:
        out[prefix or "input"] = _sentence(str(messages))
    return out


def invalid_input(messages: Any, prefix: str = "") -> BadRequest:
    """The 400 for marshmallow error messages: each field path (under ``prefix``) with one sentence."""
    return BadRequest(flatten_messages(messages, prefix))


@contextlib.contextmanager
def field_errors(prefix: str = "") -> Iterator[None]:
    """``with field_errors("config"): schema.load(...)``: a marshmallow error inside becomes that 400.

    Bodies need no such block: ``@blp.arguments`` does the same (``api.ArgumentsParser``).
    """
    try:
        yield
    except ma.ValidationError as exc:
        raise invalid_input(exc.messages, prefix) from None


def _sentence(text: str) -> str:
    replacements = {
        "Missing data for required field.": "is required",
        "Field may not be null.": "cannot be null",
        "Unknown field.": "is not a known field",
        "Shorter than minimum length 1.": "cannot be blank",
        "Not a valid URL.": "must be a valid http(s) URL",
        "Not a valid string.": "must be a string",
        "Not a valid integer.": "must be an integer",
        "Not a valid boolean.": "must be a boolean",
        "Not a valid mapping type.": "must be an object",
        "Not a valid list.": "must be a list",
    }
    return replacements.get(text, text)


def error_response(status: int, details=None, message=None, headers=None):
    error: dict[str, Any] = {"code": error_code(status), "message": message or reason_phrase(status)}
    if details:
        error["details"] = safe_details(details)
    response = jsonify({"error": error})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def handle_api_error(exc: APIError):
    return error_response(exc.status, exc.details, exc.message, exc.headers)


def handle_http_exception(exc: HTTPException):
    status = exc.code or 500
    headers = {}
    if status == 405 and exc.get_response().headers.get("Allow"):
        headers["Allow"] = exc.get_response().headers["Allow"]
    return error_response(status, headers=headers)


def handle_unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    # Log the type and where, never the message: it may carry request data.
    log.error("unhandled %s", type(exc).__name__, exc_info=_scrubbed(exc))
    return error_response(500)


def _scrubbed(exc: Exception):
    """Traceback without exception args (which could carry secrets)."""
    clone = type(exc).__new__(type(exc))
    try:
        clone.args = ("<scrubbed>",)
    except Exception:  # pragma: no cover - exotic exception types
        return False
    return (type(exc), clone, exc.__traceback__)


def init_app(app) -> None:
    app.register_error_handler(APIError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
