"""Baseline: a bare Flask endpoint served with the same gunicorn settings as the service."""
from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/ping")
def ping():
    return jsonify({"status": "ok"})
