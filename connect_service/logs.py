"""One JSON line per request, with a request id; no query strings, no secrets."""
from __future__ import annotations

import json
import logging
import random
import sys
import time

from flask import g, has_app_context, has_request_context, request

access_log = logging.getLogger("connect_service.access")
#: ``json.dumps(..., default=str)`` builds an encoder on every call; one line per request shares this one
_ENCODER = json.JSONEncoder(default=str)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self._timestamp(record.created), "level": record.levelname,
                 "logger": record.name, "msg": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)

    #: (second, its text): one tuple, so a thread never pairs one second with another's text
    _formatted: tuple[int, str] = (-1, "")

    def _timestamp(self, created: float) -> str:
        """``formatTime(record, "%Y-%m-%dT%H:%M:%S")``, formatted once per second (one line per request)."""
        second = int(created)
        cached_second, text = self._formatted
        if second != cached_second:  # a race only formats the same second twice
            text = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(created))
            self._formatted = (second, text)
        return text


class LineHandler(logging.StreamHandler):
    """A ``StreamHandler`` for one-line JSON records that takes no lock of its own.

    Each record is one ``write`` of a whole line to a line-buffered text stream (stderr is
    line-buffered since Python 3.9), which the io module keeps whole under concurrent writers;
    the handler's lock would only queue the request threads of a worker behind one another
    twice per access-log line (write, then flush).
    """

    def createLock(self):  # noqa: N802 (logging's name)
        self.lock = None


def new_request_id() -> str:
    """32 hex digits from the process's pseudo-random generator (reseeded in each forked worker).

    A request id correlates log lines and audit rows and guards nothing, so it needs no
    ``os.urandom``: that system call releases the GIL, and under load every release lets
    another request thread in before this one continues.
    """
    return f"{random.getrandbits(128):032x}"


def configure(level: str) -> None:
    root = logging.getLogger("connect_service")
    if not any(getattr(h, "_connect_service", False) for h in root.handlers):
        handler = LineHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
        handler._connect_service = True
        root.addHandler(handler)
    root.setLevel(level)


def init_app(app) -> None:
    configure(app.config["CONNECT"]["log_level"])

    @app.before_request
    def _start():
        g.request_id = request_id_of(request.environ)
        g.started = time.perf_counter()

    @app.after_request
    def _log(response):
        state = g._get_current_object()
        request_id = getattr(state, "request_id", "")
        response.headers["X-Request-Id"] = request_id
        req = request._get_current_object()
        log_request(request_id, req.method, req.path, response.status_code, req.remote_addr,
                    getattr(state, "started", None))
        return response


def current_request() -> tuple[str | None, str | None] | None:
    """``(client address, request id)`` of the request this code runs for, else None (CLI, jobs).

    A request is Flask's, or one that ``api/hot.py`` answers without Flask's request machinery, in
    an app context of its own whose ``g`` it marks ``hot_request`` and gives ``remote_addr`` and
    ``request_id``.
    """
    if has_request_context():
        return request.remote_addr, g.get("request_id")
    if has_app_context() and g.get("hot_request"):
        return g.remote_addr, g.request_id
    return None


def request_id_of(environ: dict) -> str:
    """The request's id: the client's ``X-Request-Id`` (at most 64 characters), else a new one."""
    return environ.get("HTTP_X_REQUEST_ID", "")[:64] or new_request_id()


def logged_path(path: str) -> str:
    """The path as the access log shows it: the signed last segment of webhook paths and credential
    start links replaced (query strings are never logged: those of /connect and the OAuth callback
    carry tokens and codes)."""
    if path.startswith("/v1/connect/webhooks/"):
        return path.rsplit("/", 1)[0] + "/<signed>"
    if path.startswith("/v1/connect/oauth2/start/"):
        return "/v1/connect/oauth2/start/<signed>"
    return path


def log_request(request_id: str, method: str, path: str, status: int, remote_addr: str | None,
                started: float | None) -> None:
    """The access log's line for one request (its ``path`` as :func:`logged_path` shows it)."""
    if access_log.isEnabledFor(logging.INFO):
        # made here and handed on, as ``access_log.info`` would, without its search of the stack for
        # the caller's file and line (this line's source is always this function)
        access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, "request", (), None,
                                                extra={"fields": {
            "request_id": request_id or None, "method": method, "path": logged_path(path),
            "status": status, "remote_addr": remote_addr,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else 0.0,
        }}))
