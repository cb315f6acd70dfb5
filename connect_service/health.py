"""``/healthz`` (process up) and ``/readyz`` (database reachable)."""
from __future__ import annotations

import logging

from flask import jsonify

from . import errors
from .db import database

log = logging.getLogger(__name__)


def init_app(app) -> None:
    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        try:
            database.execute_sql("SELECT 1").fetchone()
        except Exception as exc:  # any driver error means "not ready"
            log.warning("readiness check failed: %s", type(exc).__name__)
            raise errors.ServiceUnavailable({"database": "is not reachable"}) from None
        return jsonify({"status": "ok", "database": "ok"})
