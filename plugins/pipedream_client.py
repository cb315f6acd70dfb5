"""The Pipedream Connect REST API, as the ``pipedream_account`` type (``pipedream.py``) calls it.

Requests go through the facade's guarded client (``ctx.http``) to the credential's
``settings.api_base_url``; the API token (client-credentials grant) is kept in the
credential's encrypted token cache. The endpoints and their documentation are
listed in ``pipedream.py``'s module docstring. Imports only the public
``connect_service`` API, like the plugin itself.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from connect_service import AccountContext, OutboundError, PlatformError, ValidationError

#: a cached API token is replaced this long before it expires
TOKEN_MARGIN_SECONDS = 60
#: the platform's tokens last an hour (authentication docs) when ``expires_in`` is missing
DEFAULT_TOKEN_SECONDS = 3600
#: pages of accounts read per lookup (a user rarely has more than a few accounts per app)
MAX_PAGES = 20


# --- the platform API -----------------------------------------------------------------------

class PipedreamClient:
    """The Connect REST API of the credential's project, through the facade's guarded client and token cache."""

    def __init__(self, ctx: AccountContext):
        cred = ctx.credential
        if not cred.client_id or cred.client_secret() is None:
            raise ValidationError("the pipedream credential has no OAuth client id and secret", "credential")
        self.cred = cred
        self.http = ctx.http
        self.base = cred.settings["api_base_url"]
        self.project_id = cred.settings["project_id"]
        self.environment = cred.settings["environment"]

    def _fetch_token(self) -> str:
        try:
            resp = self.http.post(f"{self.base}/v1/oauth/token", json={
                "grant_type": "client_credentials", "client_id": self.cred.client_id,
                "client_secret": self.cred.client_secret()}, headers={"Accept": "application/json"})
        except OutboundError as exc:
            raise PlatformError(f"could not reach Pipedream: {exc.reason}") from None
        if resp.status_code in (400, 401, 403):
            raise PlatformError(f"Pipedream refused the credential's OAuth client (HTTP {resp.status_code})")
        data = self._json(resp)
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise PlatformError("Pipedream's token response has no access_token")
        try:
            lifetime = int(data.get("expires_in") or DEFAULT_TOKEN_SECONDS)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_SECONDS
        self.cred.token_cache.put(token, lifetime)
        return token

    @staticmethod
    def _json(resp) -> dict[str, Any]:
        if resp.status_code >= 400:
            raise PlatformError(f"Pipedream answered HTTP {resp.status_code}")
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise PlatformError("Pipedream sent a response that is not a JSON object")
        return data

    def _call(self, method: str, path: str, **kwargs: Any):
        """One API call with the cached token; a 401 fetches a new token and retries once."""
        token = self.cred.token_cache.get(TOKEN_MARGIN_SECONDS)
        for attempt in range(2):
            if token is None:
                token = self._fetch_token()
            headers = {"Authorization": f"Bearer {token}", "x-pd-environment": self.environment,
                       "Accept": "application/json"}
            try:
                resp = self.http.request(method, f"{self.base}{path}", headers=headers, **kwargs)
            except OutboundError as exc:
                raise PlatformError(f"could not reach Pipedream: {exc.reason}") from None
            if resp.status_code == 401 and attempt == 0:
                token = None
                continue
            return resp
        raise PlatformError("Pipedream refused a fresh API token (HTTP 401)")

    def _project_path(self, suffix: str) -> str:
        return f"/v1/connect/{quote(self.project_id, safe='')}{suffix}"

    def create_connect_token(self, user: str, success_uri: str, error_uri: str, webhook_uri: str) -> dict:
        resp = self._call("POST", self._project_path("/tokens"), json={
            "external_user_id": user, "success_redirect_uri": success_uri,
            "error_redirect_uri": error_uri, "webhook_uri": webhook_uri})
        return self._json(resp)

    def list_accounts(self, user: str, app_slug: str) -> list[dict[str, Any]]:
        """Every account of ``user`` the platform lists for ``app_slug`` (follows ``page_info`` cursors).

        Asks with the documented ``app_id`` filter; callers still check each account's app.
        """
        found: list[dict[str, Any]] = []
        params = {"external_user_id": user, "app_id": app_slug, "limit": 100}
        for _ in range(MAX_PAGES):
            data = self._json(self._call("GET", self._project_path("/accounts"), params=params))
            page = data.get("data")
            if not isinstance(page, list):
                raise PlatformError("Pipedream's account list has no data array")
            found.extend(a for a in page if isinstance(a, dict) and isinstance(a.get("id"), str))
            info = data.get("page_info") or {}
            total, cursor = info.get("total_count"), info.get("end_cursor")
            if not page or not cursor or not isinstance(total, int) or len(found) >= total:
                return found
            params = dict(params, after=cursor)
        return found

    def get_account(self, account_id: str) -> dict[str, Any] | None:
        resp = self._call("GET", self._project_path(f"/accounts/{quote(account_id, safe='')}"))
        if resp.status_code == 404:
            return None
        return self._json(resp)

    def delete_account(self, account_id: str) -> None:
        resp = self._call("DELETE", self._project_path(f"/accounts/{quote(account_id, safe='')}"))
        if resp.status_code not in (200, 202, 204, 404):
            raise PlatformError(f"Pipedream answered HTTP {resp.status_code}")
