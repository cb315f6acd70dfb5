"""``/healthz`` (the process answers; never touches the database) and ``/readyz`` (the database answers).

While the database is away ``/readyz`` fails like every other request: the
app's handler for ``db.UNAVAILABLE_ERRORS`` answers 503 ``service_unavailable``
after at most ``db.CONNECT_TIMEOUT_SECONDS``.
"""
from __future__ import annotations

from flask import jsonify

from .db import database


def init_app(app) -> None:
    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        database.execute_sql("SELECT 1").fetchone()
        return jsonify({"status": "ok", "database": "ok"})
