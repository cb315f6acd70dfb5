"""One JSON line per request, with a request id; no query strings, no secrets."""
from __future__ import annotations

import json
import logging
import secrets
import sys
import time

from flask import g, request

access_log = logging.getLogger("connect_service.access")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "msg": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str) -> None:
    root = logging.getLogger("connect_service")
    if not any(getattr(h, "_connect_service", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
        handler._connect_service = True
        root.addHandler(handler)
    root.setLevel(level)


def init_app(app) -> None:
    configure(app.config["CONNECT"]["log_level"])

    @app.before_request
    def _start():
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(16)
        g.started = time.perf_counter()

    @app.after_request
    def _log(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        # The path only: query strings of /connect and the OAuth callback carry tokens and codes,
        # and the last segment of webhook paths and credential start links is a signed value.
        path = request.path
        if path.startswith("/v1/connect/webhooks/"):
            path = path.rsplit("/", 1)[0] + "/<signed>"
        elif path.startswith("/v1/connect/oauth2/start/"):
            path = "/v1/connect/oauth2/start/<signed>"
        access_log.info("request", extra={"fields": {
            "request_id": g.get("request_id"), "method": request.method, "path": path,
            "status": response.status_code, "remote_addr": request.remote_addr,
            "duration_ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2),
        }})
        return response
