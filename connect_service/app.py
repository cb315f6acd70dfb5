"""The application factory: ``create_app(config)`` wires config, database, plugins and the API."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import types
from typing import Any, Iterable

import peewee
from flask import Flask, g, request
from flask.sessions import SessionInterface
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.middleware.proxy_fix import ProxyFix

from . import api, db, errors, health, logs, migrations, strict_json, web
from .api.hot import HotRoutes
from .apps import app_by_hostname
from .config import ConfigError, load_config
from .crypto import Keyring
from .hosts import management_hosts, routing_host
from .plugins import get_plugin_manager
from .rotation import check_keys_decrypt

log = logging.getLogger(__name__)

#: the only path an app host serves
APP_HOST_PATHS = {"/v1/connect/tokens"}
HEALTH_PATHS = {"/healthz", "/readyz"}


class _CappedInput:
    """A ``wsgi.input`` without Content-Length (chunked): more than ``max_bytes`` raises 413 while reading.

    werkzeug reads such a stream up to exactly ``MAX_CONTENT_LENGTH`` and stops
    silently (truncating the body), so on reaching the cap one more byte is
    asked for: if there is one, the body is too large.
    """

    def __init__(self, stream, max_bytes: int):
        self._stream = stream
        self._max = max_bytes
        self._seen = 0

    def _count(self, data: bytes) -> bytes:
        self._seen += len(data)
        if self._seen > self._max or (self._seen == self._max and data and self._stream.read(1)):
            raise errors.PayloadTooLarge({"input": f"must be at most {self._max} bytes"})
        return data

    def read(self, size: int = -1) -> bytes:
        return self._count(self._stream.read(size) if size is not None and size >= 0 else self._stream.read())

    def readline(self, size: int = -1) -> bytes:
        return self._count(self._stream.readline(size) if size is not None and size >= 0 else self._stream.readline())

    def __iter__(self):
        while line := self.readline():
            yield line


class BodySizeLimit:
    """WSGI middleware: refuse a declared body over ``max_body_bytes`` before routing (413).

    A body without Content-Length (chunked) is capped while it is read.
    """

    def __init__(self, wsgi_app, max_bytes: int):
        self.wsgi_app = wsgi_app
        self.max_bytes = max_bytes

    def __call__(self, environ, start_response):
        length = environ.get("CONTENT_LENGTH")
        too_large = False
        if length:
            try:
                too_large = not 0 <= int(length) <= self.max_bytes
            except ValueError:
                too_large = True
        elif environ.get("wsgi.input") is not None:
            environ["wsgi.input"] = _CappedInput(environ["wsgi.input"], self.max_bytes)
        if too_large:
            body = json.dumps({"error": {"code": "payload_too_large", "message": "Payload Too Large",
                                         "details": {"input": f"must be at most {self.max_bytes} bytes"}}}).encode()
            start_response("413 Payload Too Large", [("Content-Type", "application/json"),
                                                     ("Content-Length", str(len(body))), ("Connection", "close")])
            return [body]
        return self.wsgi_app(environ, start_response)


class NoSessions(SessionInterface):
    """No Flask session: the service never uses ``flask.session`` (the hosted page keeps its own
    cookies, see ``web/session.py``), so no request parses a cookie or builds a signer for one.

    Flask then hands out its null session, which refuses any write.
    """

    def open_session(self, app, request):
        return None

    def save_session(self, app, session, response):
        return None


class ConnectFlask(Flask):
    """Flask, remembering per function whether it needs an async wrapper.

    Flask asks ``ensure_sync`` of every hook and view on every request, and the answer
    (an ``inspect`` check) never changes for a function. Only plain functions are
    remembered (a fixed set: hooks, views, handlers); a bound method, such as a
    ``MethodView``'s ``dispatch_request`` of a per-request instance, is asked afresh.
    """

    def ensure_sync(self, func):
        if type(func) is not types.FunctionType:
            return super().ensure_sync(func)
        found = self._sync_functions.get(func)
        if found is None:
            found = self._sync_functions[func] = super().ensure_sync(func)
        return found

    @functools.cached_property
    def _sync_functions(self) -> dict:
        return {}


def create_app(config: dict[str, Any] | None = None, plugins: Iterable[object] = (), *,
               require_schema: bool = True) -> Flask:
    """Build the WSGI app. ``config`` overrides file and env settings; ``plugins`` are extra plugin objects.

    Outside ``env = "testing"`` it first checks the database: unreachable, or
    (with ``require_schema``) behind this code's migrations, or holding secrets
    the keys cannot decrypt, raises :class:`ConfigError` with one line.
    """
    cfg = load_config(config)
    app = ConnectFlask(__name__, instance_path=cfg["instance_path"])
    app.session_interface = NoSessions()
    app.json = strict_json.JSONProvider(app)  # responses are strict JSON (no NaN, Infinity, lone surrogates)
    app.config["CONNECT"] = cfg
    app.config["SECRET_KEY"] = cfg["secret_key"]
    app.config["SECRET_KEY_FALLBACKS"] = cfg["secret_key_fallbacks"]
    app.config["MAX_CONTENT_LENGTH"] = cfg["max_body_bytes"]
    app.config["TESTING"] = cfg["env"] == "testing"
    app.json.sort_keys = False
    app.extensions["connect_keyring"] = Keyring(cfg["encryption_keys"])
    app.extensions["connect_registry"] = get_plugin_manager(cfg, plugins)

    logs.init_app(app)
    errors.init_app(app)
    db.init_app(app)
    for unavailable in db.UNAVAILABLE_ERRORS:
        app.register_error_handler(unavailable, _database_unavailable)
    if cfg["env"] != "testing":  # the test harness resets its database after building the app
        with app.app_context():
            _check_database(app, require_schema)
    _init_host_routing(app)

    @app.after_request
    def _no_store(response):  # API answers carry tokens, signed URLs, secrets or per-user data
        # every /v1/ answer is no-store (no view sets another value); assigned, not setdefault: werkzeug's
        # lookup of a missing header raises and catches a KeyError, on every request
        if request.path.startswith("/v1/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    health.init_app(app)
    api.init_app(app)
    web.init_app(app)
    errors.init_app(app)  # after flask-smorest, whose own handler would otherwise win

    app.wsgi_app = BodySizeLimit(HotRoutes(app, app.wsgi_app), cfg["max_body_bytes"])  # api/hot.py
    if cfg["proxy_count"] > 0:
        n = cfg["proxy_count"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)
    return app


#: set by the gunicorn master (deploy/gunicorn.conf.py) once its own start-up check of the keys passed; the
#: workers it forks inherit it and skip that check when their database and keyring are the same (see below)
KEYS_CHECKED_ENV = "CONNECT_STARTUP_KEYS_CHECKED"


def keys_checked_marker(app: Flask) -> str:
    """What :data:`KEYS_CHECKED_ENV` holds once this app's keys were checked: a digest of the database URL
    and the keyring's key ids (never a key or a password in the clear)."""
    ring = app.extensions["connect_keyring"]
    text = "\n".join([app.config["CONNECT"]["database_url"], *ring.key_ids])
    return hashlib.sha256(text.encode()).hexdigest()


def mark_keys_checked(app: Flask) -> None:
    """Note in this process's environment that ``app``'s start-up key check passed, for processes it forks.

    ``rotation.check_keys_decrypt`` reads every encrypted column of every row (2–3 s at ten million
    connections here); the gunicorn master runs it once, and each worker it forks with the same
    database and keyring skips it instead of scanning again at every boot. A worker whose settings
    differ (a reload with other keys) checks for itself.
    """
    os.environ[KEYS_CHECKED_ENV] = keys_checked_marker(app)


def _check_database(app: Flask, require_schema: bool) -> None:
    """Start-up: reachable, migrated, keys decrypt; each failure one line (ConfigError)."""
    url = app.config["CONNECT"]["database_url"]
    try:
        db.check_connection()
        if require_schema:
            migrations.check_schema()
        if os.environ.get(KEYS_CHECKED_ENV) != keys_checked_marker(app):  # checked by the master: see above
            check_keys_decrypt(app.extensions["connect_keyring"])  # ConfigError naming CONNECT_ENCRYPTION_KEYS
    except peewee.DatabaseError as exc:
        raise ConfigError(f"CONNECT_DATABASE_URL: cannot use the database: {db.describe_error(exc, url)}") from None
    finally:
        db.close_pool()  # gunicorn may fork after this check: no connection may be inherited


def _database_unavailable(exc: Exception):
    # The database is away (or its pool exhausted): a fast 503 the client may retry; the pool drops
    # broken connections, so the next request after the outage connects afresh.
    log.warning("database unavailable: %s", type(exc).__name__)
    return errors.handle_api_error(errors.ServiceUnavailable({"database": "is unavailable, retry shortly"},
                                                             headers={"Retry-After": "2"}))


def _init_host_routing(app: Flask) -> None:
    management = management_hosts(app.config["CONNECT"])

    @app.before_request
    def _check_path_and_host():
        req = request._get_current_object()
        path = req.path
        # A NUL can reach the database from a path id or query argument; PostgreSQL refuses it.
        if "\x00" in path:
            raise errors.NotFound()
        if req.environ.get("QUERY_STRING"):
            bad = sorted({key for key, value in req.args.items(multi=True) if "\x00" in key + value})
            if bad:
                raise errors.BadRequest({key.replace("\x00", "") or "query": "must not contain NUL characters"
                                         for key in bad})
        if path in HEALTH_PATHS:  # probes answer on any host, without a lookup
            return None
        if isinstance(req.routing_exception, MethodNotAllowed):  # a known path, another method: 405 + Allow
            return None
        host = routing_host(req.host or "")
        if host.startswith("[") or host in management:  # never an app host, whatever rows say
            if path in APP_HOST_PATHS:
                raise errors.NotFound()
            return None
        app_row = app_by_hostname(host)
        if app_row is None:
            if path in APP_HOST_PATHS:
                raise errors.NotFound()
            return None
        if path not in APP_HOST_PATHS:
            raise errors.NotFound()
        g.host_app = app_row
        return None
