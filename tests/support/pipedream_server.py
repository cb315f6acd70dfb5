"""A local stand-in for the Pipedream Connect REST API, for the test-suite.

It implements the endpoints the ``pipedream_account`` plugin uses, with the
request and response shapes Pipedream documents:

* ``POST /v1/oauth/token`` — client-credentials grant, JSON body
  ``{"grant_type": "client_credentials", "client_id", "client_secret", "scope"?}`` →
  ``{"access_token", "token_type": "Bearer", "expires_in", "created_at"}``
  (https://pipedream.com/docs/connect/api-reference/create-oauth-token).
* ``POST /v1/connect/{project_id}/tokens`` — ``Authorization: Bearer``, ``x-pd-environment``,
  body ``{"external_user_id", "success_redirect_uri"?, "error_redirect_uri"?, "webhook_uri"?,
  "allowed_origins"?}`` → ``{"token", "expires_at", "connect_link_url"}``
  (https://pipedream.com/docs/connect/api-reference/create-connect-token).
* ``GET /v1/connect/{project_id}/accounts?external_user_id=&app_id=&limit=&after=`` →
  ``{"data": [account…], "page_info": {"count", "total_count", "start_cursor", "end_cursor"}}``
  (https://pipedream.com/docs/connect/api-reference/list-accounts: ``app_id`` is "the app
  slug or ID to filter accounts by"). Like a platform that does not know it, the server
  ignores any other query parameter, an ``app=`` filter included.
* ``GET /v1/connect/{project_id}/accounts/{account_id}`` → the account, 404 when unknown
  (https://pipedream.com/docs/connect/api-reference/retrieve-account).
* ``DELETE /v1/connect/{project_id}/accounts/{account_id}`` → 204
  (https://pipedream.com/docs/connect/managed-auth/users).

An account is ``{"id": "apn_…", "name", "external_id", "healthy", "dead", "app": {"id",
"name_slug", "name", "auth_type", …}, "created_at", "updated_at"}``; the server also remembers
(but never returns) the external user and project/environment it belongs to, the way the
platform scopes accounts.

Linking, which on the real platform happens in the user's browser, is simulated by
:meth:`PipedreamTestServer.complete_link` (``CONNECTION_SUCCESS``) and
:meth:`PipedreamTestServer.fail_link` (``CONNECTION_ERROR``): they build the documented
webhook payload (https://pipedream.com/docs/connect/webhooks) and POST it to the
``webhook_uri`` the connect token was created with, either over HTTP or through a
``deliver(url, payload)`` callable (e.g. one that posts into a Flask test client).

Usage::

    with PipedreamTestServer() as pd:
        pd.add_client("pd_client", "pd_secret")
        pd.add_project("proj_abc123")
        ...point a credential's settings.api_base_url at pd.url...
        token = pd.connect_tokens[-1]["token"]
        response = pd.complete_link(token, "gmail", deliver=my_deliver)

Knobs: ``down`` (every endpoint answers 503 with an HTML body), ``fail`` (``{endpoint name:
HTTP status}`` for ``oauth_token``, ``create_token``, ``list_accounts``, ``get_account``,
``delete_account``), ``access_token_lifetime`` (3600 s), ``page_size`` (default ``limit``), ``max_page_size`` (100),
``app_filter`` (True; False lists every app's accounts whatever ``app_id`` says).
Records: ``oauth_requests``, ``connect_token_requests`` (each with ``headers`` and ``json``),
``account_requests`` (``{"method", "path", "args", "authorization", "environment"}``),
``webhook_deliveries`` and ``errors`` (unexpected exceptions inside the server).
"""
from __future__ import annotations

import datetime
import hmac
import re
import secrets
import threading
import traceback
from typing import Any, Callable
from urllib.parse import urlencode

import requests
from flask import Flask, jsonify, request

from .serving import BackgroundWSGIServer

__all__ = ["PipedreamTestServer"]

PROJECT_RE = re.compile(r"^proj_[a-zA-Z0-9]+$")
ENVIRONMENTS = ("development", "production")
_DOWN_BODY = "<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>"

APPS = {
    "gmail": {"id": "app_OkrhR1", "name_slug": "gmail", "name": "Gmail", "auth_type": "oauth"},
    "slack": {"id": "app_OkrhR2", "name_slug": "slack", "name": "Slack", "auth_type": "oauth"},
    "openai": {"id": "app_OkrhR3", "name_slug": "openai", "name": "OpenAI (ChatGPT)", "auth_type": "keys"},
}


def _app_keys(account: dict[str, Any]) -> tuple[Any, ...]:
    """The values an ``app_id`` filter matches: the account's app slug and id (a malformed app: itself)."""
    app = account.get("app")
    return (app.get("name_slug"), app.get("id")) if isinstance(app, dict) else (app,)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(value: datetime.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")


class PipedreamTestServer(BackgroundWSGIServer):
    """In-process Pipedream Connect API for tests (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self._port = port
        self.port: int | None = None
        self.url: str | None = None
        self.clients: dict[str, str] = {}
        self.projects: set[str] = set()
        self.access_tokens: dict[str, datetime.datetime] = {}
        self.connect_tokens: list[dict[str, Any]] = []
        self.accounts: dict[str, dict[str, Any]] = {}
        self.down = False
        self.fail: dict[str, int] = {}
        self.access_token_lifetime = 3600
        self.page_size = 10
        self.max_page_size = 100
        self.app_filter = True
        self.oauth_requests: list[dict[str, Any]] = []
        self.connect_token_requests: list[dict[str, Any]] = []
        self.account_requests: list[dict[str, Any]] = []
        self.webhook_deliveries: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.app = self._build_app()

    # ------------------------------------------------------------------ lifecycle

    thread_name = "pipedream-test-server"

    # ------------------------------------------------------------------ setup helpers

    def add_client(self, client_id: str, client_secret: str) -> None:
        """Register an OAuth client (workspace API settings on the real platform)."""
        self.clients[client_id] = client_secret

    def add_project(self, project_id: str) -> None:
        """Register a Connect project id (``proj_…``)."""
        if not PROJECT_RE.match(project_id):
            raise ValueError("project ids look like proj_abc123")
        self.projects.add(project_id)

    def revoke_access_tokens(self) -> None:
        """Invalidate every issued API access token (the next call with one answers 401)."""
        with self._lock:
            self.access_tokens.clear()

    def oauth_calls(self) -> int:
        return len(self.oauth_requests)

    def account_calls(self, method: str | None = None) -> int:
        return len([r for r in self.account_requests if method is None or r["method"] == method])

    # ------------------------------------------------------------------ accounts

    def add_account(self, project_id: str, environment: str, external_user_id: str, app_slug: str,
                    name: str = "jane@example.com", healthy: bool = True, dead: bool | None = False) -> dict:
        """Create a connected account for an external user, as a finished connect flow does."""
        now = _iso(_now())
        account = {
            "id": "apn_" + secrets.token_hex(5),
            "name": name,
            "external_id": "uid-" + secrets.token_hex(4),
            "healthy": healthy,
            "dead": dead,
            "app": dict(APPS.get(app_slug) or {"id": "app_" + secrets.token_hex(3), "name_slug": app_slug,
                                                "name": app_slug.title(), "auth_type": "oauth"}),
            "created_at": now,
            "updated_at": now,
        }
        with self._lock:
            self.accounts[account["id"]] = {"account": account, "project_id": project_id,
                                            "environment": environment, "external_user_id": external_user_id}
        return dict(account)

    def set_account(self, account_id: str, **changes: Any) -> None:
        """Change an account's ``healthy``/``dead``/``name`` (e.g. the user revoked access)."""
        with self._lock:
            entry = self.accounts[account_id]["account"]
            entry.update(changes)
            entry["updated_at"] = _iso(_now())

    def remove_account(self, account_id: str) -> None:
        """Delete an account on the platform side (the user removed it in Pipedream)."""
        with self._lock:
            self.accounts.pop(account_id, None)

    def accounts_of(self, external_user_id: str) -> list[dict]:
        with self._lock:
            return [dict(e["account"]) for e in self.accounts.values() if e["external_user_id"] == external_user_id]

    # ------------------------------------------------------------------ linking (the browser part)

    def token_info(self, token: str) -> dict[str, Any]:
        for info in self.connect_tokens:
            if info["token"] == token:
                return info
        raise KeyError("unknown connect token")

    def complete_link(self, token: str, app_slug: str, name: str = "jane@example.com",
                      deliver: Callable[[str, dict], Any] | None = None, healthy: bool = True) -> Any:
        """Finish the connect flow of ``token``: create the account, then POST ``CONNECTION_SUCCESS``.

        Returns what ``deliver(webhook_uri, payload)`` returns (default: a real HTTP POST
        answering a ``requests.Response``); ``None`` when the token had no ``webhook_uri``.
        """
        info = self.token_info(token)
        account = self.add_account(info["project_id"], info["environment"], info["external_user_id"],
                                   app_slug, name=name, healthy=healthy)
        payload = {"event": "CONNECTION_SUCCESS", "connect_token": token, "environment": info["environment"],
                   "connect_session_id": secrets.randbelow(10 ** 12), "account": account}
        return self._deliver(info, payload, deliver)

    def fail_link(self, token: str, error: str = "Test request failed. Please verify your credentials.",
                  deliver: Callable[[str, dict], Any] | None = None) -> Any:
        """The connect flow of ``token`` failed: POST ``CONNECTION_ERROR``."""
        info = self.token_info(token)
        payload = {"event": "CONNECTION_ERROR", "connect_token": token, "environment": info["environment"],
                   "connect_session_id": secrets.randbelow(10 ** 12), "error": error}
        return self._deliver(info, payload, deliver)

    def _deliver(self, info: dict, payload: dict, deliver) -> Any:
        uri = info.get("webhook_uri")
        if not uri:
            return None
        self.webhook_deliveries.append({"uri": uri, "payload": payload})
        if deliver is not None:
            return deliver(uri, payload)
        return requests.post(uri, json=payload, timeout=10)

    # ------------------------------------------------------------------ the WSGI app

    def _build_app(self) -> Flask:
        app = Flask("pipedream_test_server")
        server = self

        def error(status: int, message: str):
            response = jsonify({"error": message})
            response.status_code = status
            return response

        @app.before_request
        def _down():
            if server.down:
                return _DOWN_BODY, 503, {"Content-Type": "text/html"}
            return None

        @app.errorhandler(Exception)
        def _unexpected(exc):
            server.errors.append(traceback.format_exc())
            return error(500, "internal error")

        def failing(name: str):
            status = server.fail.get(name)
            return error(status, f"{name} failed") if status else None

        def authorized() -> bool:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                return False
            with server._lock:
                expires = server.access_tokens.get(token)
            return expires is not None and expires > _now()

        def check_scope(project_id: str):
            if not authorized():
                return error(401, "invalid or expired access token")
            if not PROJECT_RE.match(project_id) or project_id not in server.projects:
                return error(404, "project not found")
            environment = request.headers.get("x-pd-environment")
            if environment not in ENVIRONMENTS:
                return error(400, "x-pd-environment must be development or production")
            return None

        @app.post("/v1/oauth/token")
        def oauth_token():
            body = request.get_json(silent=True)
            server.oauth_requests.append({"json": body, "content_type": request.content_type})
            failed = failing("oauth_token")
            if failed:
                return failed
            if not isinstance(body, dict) or body.get("grant_type") != "client_credentials":
                return error(400, "grant_type must be client_credentials (JSON body)")
            client_id, secret = body.get("client_id"), body.get("client_secret")
            known = server.clients.get(client_id) if isinstance(client_id, str) else None
            if known is None or not isinstance(secret, str) or not hmac.compare_digest(known, secret):
                return error(401, "invalid_client")
            token = "pd_at_" + secrets.token_urlsafe(24)
            with server._lock:
                server.access_tokens[token] = _now() + datetime.timedelta(seconds=server.access_token_lifetime)
            return jsonify({"access_token": token, "token_type": "Bearer",
                            "expires_in": server.access_token_lifetime,
                            "created_at": int(_now().timestamp())})

        @app.post("/v1/connect/<project_id>/tokens")
        def create_token(project_id):
            body = request.get_json(silent=True)
            server.connect_token_requests.append({"project_id": project_id, "json": body,
                                                  "headers": dict(request.headers)})
            failed = check_scope(project_id) or failing("create_token")
            if failed:
                return failed
            if not isinstance(body, dict) or not isinstance(body.get("external_user_id"), str) \
                    or not body["external_user_id"] or len(body["external_user_id"]) > 250:
                return error(400, "external_user_id is required (at most 250 characters)")
            token = "ctok_" + secrets.token_hex(16)
            expires = _now() + datetime.timedelta(hours=4)
            server.connect_tokens.append({
                "token": token, "project_id": project_id,
                "environment": request.headers["x-pd-environment"],
                "external_user_id": body["external_user_id"],
                "success_redirect_uri": body.get("success_redirect_uri"),
                "error_redirect_uri": body.get("error_redirect_uri"),
                "webhook_uri": body.get("webhook_uri"),
                "allowed_origins": body.get("allowed_origins"),
                "expires_at": expires,
            })
            link = f"{server.url}/_static/connect.html?" + urlencode(
                {"token": token, "connectLink": "true"})
            return jsonify({"token": token, "expires_at": _iso(expires), "connect_link_url": link})

        def record(project_id: str) -> None:
            server.account_requests.append({
                "method": request.method, "path": request.path, "project_id": project_id,
                "args": request.args.to_dict(), "authorization": request.headers.get("Authorization"),
                "environment": request.headers.get("x-pd-environment"),
            })

        @app.get("/v1/connect/<project_id>/accounts")
        def list_accounts(project_id):
            record(project_id)
            failed = check_scope(project_id) or failing("list_accounts")
            if failed:
                return failed
            environment = request.headers["x-pd-environment"]
            user = request.args.get("external_user_id")
            app_filter = request.args.get("app_id") if server.app_filter else None
            try:
                limit = min(max(int(request.args.get("limit", server.page_size)), 1), server.max_page_size)
            except ValueError:
                return error(400, "limit must be an integer")
            with server._lock:
                matching = [dict(e["account"]) for e in server.accounts.values()
                            if e["project_id"] == project_id and e["environment"] == environment
                            and (user is None or e["external_user_id"] == user)
                            and (app_filter is None or app_filter in _app_keys(e["account"]))]
            matching.sort(key=lambda a: a["id"])
            after = request.args.get("after")
            if after:
                matching = [a for a in matching if a["id"] > after]
            total = len(matching)
            page = matching[:limit]
            return jsonify({"data": page, "page_info": {
                "count": len(page), "total_count": total,
                "start_cursor": page[0]["id"] if page else None,
                "end_cursor": page[-1]["id"] if page else None,
            }})

        @app.get("/v1/connect/<project_id>/accounts/<account_id>")
        def get_account(project_id, account_id):
            record(project_id)
            failed = check_scope(project_id) or failing("get_account")
            if failed:
                return failed
            with server._lock:
                entry = server.accounts.get(account_id)
            if entry is None or entry["project_id"] != project_id \
                    or entry["environment"] != request.headers["x-pd-environment"]:
                return error(404, "account not found")
            return jsonify(entry["account"])

        @app.delete("/v1/connect/<project_id>/accounts/<account_id>")
        def delete_account(project_id, account_id):
            record(project_id)
            failed = check_scope(project_id) or failing("delete_account")
            if failed:
                return failed
            with server._lock:
                entry = server.accounts.get(account_id)
                if entry is None or entry["project_id"] != project_id:
                    return error(404, "account not found")
                del server.accounts[account_id]
            return "", 204

        return app
