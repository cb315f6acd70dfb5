"""A local stand-in for the Toolhub platform (the API in the plugin's docstring), served over HTTP.

A plain module rather than a ``conftest.py``, so its name cannot shadow the host suite's conftest.
"""
from __future__ import annotations

import json
import secrets
import threading

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

WORKSPACE, API_KEY = "ws_sample", "th_key_do_not_leak"


class _Quiet(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        pass


class ToolhubStub:
    """Sessions, links and accounts in memory; ``requests`` records ``(method, path)`` of every call."""

    workspace, api_key = WORKSPACE, API_KEY

    def __init__(self):
        self.sessions: set[str] = set()
        self.links: dict[str, dict] = {}  # link id -> the link request
        self.accounts: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.session_requests: list[dict] = []
        self._server = make_server("127.0.0.1", 0, self, threaded=True, request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def __call__(self, environ, start_response):
        request = Request(environ)
        self.requests.append((request.method, request.path))
        return self._answer(request)(environ, start_response)

    @staticmethod
    def _json(data, status=200):
        return Response(json.dumps(data), status, content_type="application/json")

    def _answer(self, request):
        body = request.get_json(silent=True) or {}
        if request.path == "/v2/sessions" and request.method == "POST":
            self.session_requests.append(body)
            if (body.get("workspace"), body.get("api_key")) != (WORKSPACE, API_KEY):
                return self._json({"error": "bad key"}, 401)
            token = "ths_" + secrets.token_hex(8)
            self.sessions.add(token)
            return self._json({"session_token": token, "ttl_seconds": 600})
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.sessions:
            return self._json({"error": "unauthorized"}, 401)
        if request.path == "/v2/links" and request.method == "POST":
            link_id = "lnk_" + secrets.token_hex(6)
            self.links[link_id] = body
            return self._json({"url": f"{self.url}/link/{link_id}", "expires_at": "2030-01-01T00:00:00Z"})
        if request.path.startswith("/v2/accounts/"):
            account = self.accounts.get(request.path.rsplit("/", 1)[1])
            if account is None:
                return self._json({"error": "not found"}, 404)
            if request.method == "DELETE":
                del self.accounts[account["id"]]
                return Response(status=204)
            return self._json(account)
        return self._json({"error": "no such endpoint"}, 404)

    def add_account(self, user: str, toolkit: str, label: str = "jane@example.com") -> dict:
        account = {"id": "tha_" + secrets.token_hex(6), "user": user, "toolkit": toolkit, "state": "active",
                   "label": label}
        self.accounts[account["id"]] = account
        return account

    def complete_link(self, link_url: str, deliver) -> object:
        """The user finished the link page: create the account, then POST the webhook with ``deliver``."""
        link = self.links[link_url.rsplit("/", 1)[1]]
        account = self.add_account(link["user"], link["toolkit"])
        return deliver(link["callback_url"], {"type": "account.linked", "account_id": account["id"]})
