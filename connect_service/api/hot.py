"""The hot routes' everyday answers, without Flask's request machinery (issue 15).

An app's backend and the hosted page call four routes far more than any other:
``POST /v1/connect/tokens``, ``GET /v1/connect/requirements``, ``GET
/v1/connect/requirements/statuses`` and ``GET /v1/connections/<id>`` (with
``include_secrets``). :class:`HotRoutes`, a WSGI middleware in front of Flask,
answers their plain case itself: the same functions as the Flask views
(``verified_connect``/``verified_access_key`` and the ``auth.remember_*`` that the
decorators call, ``api/connect.py``'s ``*_answer``, ``lifecycle.read_connection``),
in an app context of its own, minus what a plain case
does not need: werkzeug's Request, URL matching, the view and hook dispatch.
Its cheap counterparts of the hooks: the request id, the host rule of
``app._check_path_and_host``, ``Cache-Control: no-store`` and the access-log line.

Everything else is Flask's, and answered as for every other route:

* a request that is not the plain case goes to Flask untouched: another host
  than the route's, a query string the route does not take, a body that is not
  valid JSON or not valid for the schema, a forced refresh (which needs the
  request's start on the database clock);
* an error raised while answering (401, 404, 429, 502, a database away, a bug)
  is rendered by Flask's own error handlers and after-request hooks, in a request
  context pushed for it, so its answer is the one Flask would give.

``tests/test_hot_routes.py`` sends each route's requests both ways and compares
status, headers, body, the stored effects and the access-log line.
"""
from __future__ import annotations

import functools
import io
import re
import time
from types import MappingProxyType
from typing import Any, Callable

import marshmallow as ma
from flask import Flask, g
from werkzeug.http import HTTP_STATUS_CODES

from .. import errors, lifecycle
from ..apps import app_by_hostname
from ..auth import bearer_value, remember_access_key, remember_connect, verified_access_key, verified_connect
from ..hosts import management_hosts, routing_host
from ..logs import log_request, request_id_of
from ..statuses import load_app_and_connections
from ..tokens import TokenCreateSchema
from . import json_object
from .common import load_key_and_connection, org_connection
from .connect import requirements_answer, statuses_answer, token_answer
from .connections import READ_ARGS

STATUSES = "/v1/connect/requirements/statuses"
REQUIREMENTS = "/v1/connect/requirements"
TOKENS = "/v1/connect/tokens"
CONNECTION = "/v1/connections/"
#: a Host header of a name or an IPv4 address, with an optional port (anything else goes to Flask)
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?\Z", re.ASCII)
#: a connection id as ``models.new_id`` makes them
_CONN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z", re.ASCII)
#: ``include_secrets=…&refresh=…`` in any order, values without escapes
_READ_QUERY = re.compile(r"(?:(?:include_secrets|refresh)=[A-Za-z0-9]{1,10}(?:&|\Z)){1,2}\Z", re.ASCII)
_TOKEN_BODY = TokenCreateSchema()

#: (status, payload) of an answer, or None: "let Flask answer this request"
Answer = tuple[int, Any] | None


class HotRoutes:
    """WSGI middleware: the plain case of the hot routes answered here, every other request by ``wsgi_app``."""

    def __init__(self, app: Flask, wsgi_app: Callable):
        self.app = app
        self.wsgi_app = wsgi_app
        #: tests switch it off to get Flask's answer to the same request
        self.enabled = True
        self.management = management_hosts(app.config["CONNECT"])
        self.routes: dict[tuple[str, str], Callable[[HotRoutes, dict], Answer]] = {
            ("GET", STATUSES): _statuses, ("GET", REQUIREMENTS): _requirements, ("POST", TOKENS): _tokens,
        }

    def __call__(self, environ: dict, start_response: Callable):
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        route = self.routes.get((method, path))
        if route is None and method == "GET" and path.startswith(CONNECTION):
            route = _connection
        if route is None or not self.enabled:
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        with self.app.app_context():
            state = g._get_current_object()
            state.hot_request, state.started = True, started  # see logs.current_request
            state.request_id, state.remote_addr = request_id_of(environ), environ.get("REMOTE_ADDR")
            try:
                answer = route(self, environ)
                # what app.json.response makes of a payload: compact JSON and a newline
                body = None if answer is None else (self.app.json.dumps(answer[1], separators=(",", ":")) + "\n")
            except Exception as exc:  # noqa: BLE001 - Flask's error handlers decide, as for any view
                return self._flask_error(environ, start_response, exc)
            if answer is not None:
                return self._respond(start_response, method, path, answer[0], body.encode())
        return self.wsgi_app(environ, start_response)

    def host(self, environ: dict) -> str | None:
        """The request's host as ``app._check_path_and_host`` compares it, or None for one left to Flask."""
        raw = environ.get("HTTP_HOST", "")
        if not _HOST.match(raw):
            return None
        return routing_host(raw)

    def _respond(self, start_response: Callable, method: str, path: str, status: int, body: bytes):
        """A JSON answer with the headers Flask's hooks give a /v1/ answer, and its access-log line."""
        state = g._get_current_object()
        start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"), ("X-Request-Id", state.request_id)])
        log_request(state.request_id, method, path, status, state.remote_addr, state.started)
        return [body]

    def _flask_error(self, environ: dict, start_response: Callable, exc: Exception):
        """Flask's answer to ``exc`` raised by a view of this request: its error handlers, then its
        after-request hooks (request id, Cache-Control, access log), as ``Flask.full_dispatch_request``."""
        app = self.app
        with app.request_context(environ):  # shares this app context, and so g and its request id
            try:
                response = app.finalize_request(app.handle_user_exception(exc))
            except Exception as error:  # noqa: BLE001 - what Flask.wsgi_app does with it
                response = app.handle_exception(error)
            return response(environ, start_response)


def _connect_token_host(hot: HotRoutes, environ: dict) -> bool:
    """Whether a connect-token route may be answered here: no query string, on a management host."""
    return not environ.get("QUERY_STRING") and hot.host(environ) in hot.management


def _statuses(hot: HotRoutes, environ: dict) -> Answer:
    if not _connect_token_host(hot, environ):
        return None
    found = verified_connect(bearer_value(environ.get("HTTP_AUTHORIZATION", "")), load_app_and_connections)
    if found is None:
        raise errors.Unauthorized()
    remember_connect(found)
    return 200, statuses_answer(*found)


def _requirements(hot: HotRoutes, environ: dict) -> Answer:
    if not _connect_token_host(hot, environ):
        return None
    found = verified_connect(bearer_value(environ.get("HTTP_AUTHORIZATION", "")))
    if found is None:
        raise errors.Unauthorized()
    remember_connect(found)
    return 200, requirements_answer(found[1])


def _tokens(hot: HotRoutes, environ: dict) -> Answer:
    host = hot.host(environ)
    if environ.get("QUERY_STRING") or host is None or host in hot.management:
        return None
    if environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() != "application/json":
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:  # chunked, or not a number: werkzeug's rules
        return None
    raw = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(raw)  # read again by Flask if it answers
    app = app_by_hostname(host)
    if app is None or len(raw) != length:
        return None
    try:
        data = _TOKEN_BODY.load(json_object(raw, "application/json"))
    except (errors.APIError, ma.ValidationError):  # Flask answers with its 400, naming the field
        return None
    return 201, token_answer(app, data, bearer_value(environ.get("HTTP_AUTHORIZATION", "")))


@functools.lru_cache(maxsize=64)  # a pure function of the text, which _READ_QUERY keeps short
def _read_args(query: str) -> MappingProxyType | None:
    """``READ_ARGS`` loaded from ``query``, or None for one Flask answers (a name given twice, a bad value)."""
    pairs = [pair.split("=", 1) for pair in query.split("&")] if query else []
    params = dict(pairs)
    if len(params) != len(pairs):  # a name given twice: werkzeug's first value wins, Flask answers
        return None
    try:
        return MappingProxyType(READ_ARGS.load(params))
    except ma.ValidationError:
        return None


def _connection(hot: HotRoutes, environ: dict) -> Answer:
    conn_id = environ["PATH_INFO"][len(CONNECTION):]
    query = environ.get("QUERY_STRING", "")
    if (not _CONN_ID.match(conn_id) or hot.host(environ) not in hot.management
            or (query and not _READ_QUERY.match(query))):
        return None
    args = _read_args(query)
    if args is None or (args["include_secrets"] and args["refresh"] == "force"):
        return None
    found = verified_access_key(bearer_value(environ.get("HTTP_AUTHORIZATION", "")), load_key_and_connection,
                                {"conn_id": conn_id})
    if found is None:
        raise errors.Unauthorized()
    remember_access_key(found)
    conn = org_connection(conn_id)
    return 200, lifecycle.read_connection(conn, include_secrets=args["include_secrets"],
                                          refresh_mode=args["refresh"])
