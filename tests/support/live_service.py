"""Drive a running service (gunicorn, maybe behind nginx) over sockets, as an operator and its clients would.

:func:`cli` runs ``connect-service`` commands with the server's environment; :class:`LiveClient`
holds the API steps the process-level tests share (apps, tokens, statuses, OAuth2 flows) on top of
one ``call`` that subclasses implement for their transport.
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from urllib.parse import urlsplit

import requests

from .gunicorn_server import BIN, ROOT
from .oauth_server import OAuthTestServer

#: a request still unanswered after this many seconds counts as hanging
CLIENT_TIMEOUT = 20.0


def cli(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``connect-service ARGS`` with ``env`` (e.g. ``GunicornServer.env``); asserts success unless ``check=False``."""
    done = subprocess.run([os.path.join(BIN, "connect-service"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def last_json(stdout: str) -> dict:
    """The last JSON object line a CLI command printed."""
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def requirement(key: str, type_name: str) -> dict:
    """A ``connection`` requirement for ``type_name``."""
    return {"key": key, "type": "connection", "title": f"Connect {key}",
            "spec": {"type": "connection", "data": {"type": type_name}}}


def requirement_id(app: dict, key: str) -> str:
    """The public id of the requirement declared with ``key``."""
    return str(uuid.uuid5(uuid.UUID(app["id"]), key))


class LiveClient:
    """API steps over a real socket; subclasses implement :meth:`call`."""

    public_url: str
    access_key: str
    oauth: OAuthTestServer

    def call(self, method: str, path: str, body=None, host: str | None = None, auth: str | None = None,
             headers: dict | None = None, **transport):
        """``(status, headers, parsed JSON or raw bytes)``; ``body`` (not bytes) is sent as JSON."""
        raise NotImplementedError

    @staticmethod
    def _prepare(body, auth: str | None, headers: dict | None) -> tuple[bytes | None, dict]:
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        return body, headers

    @staticmethod
    def _parse(content_type: str | None, payload: bytes):
        return json.loads(payload) if (content_type or "").startswith("application/json") else payload

    def create_app(self, requirements: list[dict], prefix: str = "shop", domain: str = "test") -> dict:
        """A public app on ``<prefix>-<random>.<domain>`` with ``requirements`` deployed."""
        hostname = f"{prefix}-{uuid.uuid4().hex[:6]}.{domain}"
        status, _, app = self.call("POST", "/v1/apps", {"name": hostname, "hostname": hostname,
                                                        "visibility": "public"}, auth=self.access_key)
        assert status == 201, app
        status, _, version = self.call("POST", f"/v1/apps/{app['id']}/versions", {"requirements": requirements},
                                       auth=self.access_key)
        assert status == 201, version
        status, _, deployed = self.call("POST", f"/v1/apps/{app['id']}/versions/{version['number']}/deploy",
                                        auth=self.access_key)
        assert status == 200, deployed
        return app

    def mint(self, app: dict, user_id: str, headers: dict | None = None, **transport):
        """``POST /v1/connect/tokens`` on the app's host."""
        return self.call("POST", "/v1/connect/tokens", {"user_id": user_id}, host=app["hostname"],
                         headers=headers, **transport)

    def token(self, app: dict, user_id: str) -> str:
        status, _, body = self.mint(app, user_id)
        assert status == 201, body
        return body["token"]

    def statuses(self, token: str) -> dict[str, str]:
        status, _, body = self.call("GET", "/v1/connect/requirements/statuses", auth=token)
        assert status == 200, body
        return {item["id"]: item["status"] for item in body["data"]}

    def connection(self, conn_id: str, secrets: bool = False) -> dict:
        """``GET /v1/connections/{id}`` (with its stored credentials when ``secrets``)."""
        query = "?include_secrets=true&refresh=never" if secrets else ""
        status, _, body = self.call("GET", f"/v1/connections/{conn_id}{query}", auth=self.access_key)
        assert status == 200, body
        return body

    def oauth_credential(self, connector: str) -> dict:
        """An org credential for ``connector`` at the test OAuth server, whose client knows its callback.

        ``callback`` is the credential's own ``redirect_uri`` when the service names one (issue 12),
        else the shared callback under ``public_url``.
        """
        client_id, secret = f"client-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        status, _, cred = self.call("POST", "/v1/credentials", {
            "name": f"{connector} credential", "mode": "OAUTH", "connector_name": connector,
            "oauth_url": self.oauth.authorize_url, "oauth_token_url": self.oauth.token_url,
            "oauth_client_id": client_id, "oauth_client_secret": secret, "oauth_scope": "read",
            "oauth_grant_type": "authorization_code", "oauth_token_endpoint_auth_method": "client_secret_basic"},
            auth=self.access_key)
        assert status == 201, cred
        cred["callback"] = cred.get("redirect_uri") or f"{self.public_url}/v1/connect/oauth2/callback"
        self.oauth.add_client(client_id, secret, [cred["callback"]], token_endpoint_auth_method="client_secret_basic")
        return cred

    def start_flow(self, token: str, req_id: str, callback: str) -> tuple[dict, str]:
        """Start an OAuth2 flow and approve it at the provider: (authorize answer, callback ``path?query``)."""
        status, _, started = self.call("POST", f"/v1/connect/requirements/{req_id}/oauth2/authorize", auth=token)
        assert status == 201, started
        r = requests.get(started["authorization_url"], allow_redirects=False, timeout=CLIENT_TIMEOUT)
        assert r.status_code in (302, 303), r.text[:300]
        location = r.headers["Location"]
        assert location.startswith(callback + "?"), location
        parts = urlsplit(location)
        return started, f"{parts.path}?{parts.query}"
