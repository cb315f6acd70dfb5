"""Baselines served with the same gunicorn settings as the service.

``GET /ping``: a bare Flask JSON endpoint (the issue's baseline).
``GET /ping-db?id=<org id>``: the same plus one primary-key lookup on the service's own database
(``CONNECT_DATABASE_URL``), through the plain driver on one connection per thread (prepared once
per connection on PostgreSQL). No endpoint that reads the database on every request can beat it,
so bench_api.py prints its ratio as the floor the hot endpoints are measured against.
"""
import os
import sqlite3
import threading

from flask import Flask, jsonify, request

app = Flask(__name__)
_local = threading.local()
_URL = os.environ.get("CONNECT_DATABASE_URL", "")


@app.get("/ping")
def ping():
    return jsonify({"status": "ok"})


def _cursor():
    cur = getattr(_local, "cursor", None)
    if cur is None:
        if _URL.startswith("sqlite"):
            conn = sqlite3.connect(_URL.split("sqlite:///", 1)[1], isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=wal")
        else:
            import psycopg2  # only the PostgreSQL bench needs it

            conn = psycopg2.connect(_URL)
            conn.autocommit = True
            conn.cursor().execute("PREPARE org_by_id AS SELECT id, name FROM organization WHERE id = $1")
        cur = _local.cursor = conn.cursor()
    return cur


@app.get("/ping-db")
def ping_db():
    cur = _cursor()
    if _URL.startswith("sqlite"):
        cur.execute("SELECT id, name FROM organization WHERE id = ?", (request.args["id"],))
    else:
        cur.execute("EXECUTE org_by_id (%s)", (request.args["id"],))
    row = cur.fetchone()
    return jsonify({"id": row[0], "name": row[1]})
