"""One JSON line per request, with a request id; no query strings, no secrets."""
from __future__ import annotations

import json
import logging
import random
import sys
import time

from flask import g, request

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
        # the environ key werkzeug's headers read for X-Request-Id, without building the headers view
        g.request_id = request.environ.get("HTTP_X_REQUEST_ID", "")[:64] or new_request_id()
        g.started = time.perf_counter()

    @app.after_request
    def _log(response):
        state = g._get_current_object()
        request_id = getattr(state, "request_id", "")
        response.headers["X-Request-Id"] = request_id
        # The path only: query strings of /connect and the OAuth callback carry tokens and codes,
        # and the last segment of webhook paths and credential start links is a signed value.
        req = request._get_current_object()
        path = req.path
        if path.startswith("/v1/connect/webhooks/"):
            path = path.rsplit("/", 1)[0] + "/<signed>"
        elif path.startswith("/v1/connect/oauth2/start/"):
            path = "/v1/connect/oauth2/start/<signed>"
        if access_log.isEnabledFor(logging.INFO):
            started = getattr(state, "started", None)
            # made here and handed on, as ``access_log.info`` would, without its search of the stack for
            # the caller's file and line (this line's source is always this hook)
            access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, "request", (), None,
                                                    extra={"fields": {
                "request_id": request_id or None, "method": req.method, "path": path,
                "status": response.status_code, "remote_addr": req.remote_addr,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else 0.0,
            }}))
        return response
