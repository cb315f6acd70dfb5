"""Toolhub accounts for connect-service: a sample action-account plugin.

Toolhub is an imaginary platform in the style of Composio or Arcade: it runs
the provider's OAuth flow itself and keeps the end user's connected accounts,
one per *toolkit* (``slack``, ``github``, …). A requirement
``{"type": "toolhub_account", "spec": {"data": {"toolkit": "slack"}}}`` is
completed once the user has linked a Slack account there.

Configuration: a credential with ``connector_name`` ``toolhub``: the workspace id
as ``oauth_client_id``, its API key as ``oauth_client_secret`` (encrypted by the
service) and ``settings`` ``{"api_base_url": "https://api.toolhub.example"}``.

The platform's API (JSON, ``Authorization: Bearer <session token>``):

- ``POST /v2/sessions`` ``{"workspace", "api_key"}`` → ``{"session_token", "ttl_seconds"}``;
  the token is kept in the facade's token cache, shared by every worker.
- ``POST /v2/links`` ``{"user", "toolkit", "callback_url", "redirect_url", "cancel_url"}``
  → ``{"url", "expires_at"}``: the page where the user links an account.
- ``GET /v2/accounts/{id}`` → ``{"id", "user", "toolkit", "state": "active"|"expired", "label"}``, 404 when gone.
- ``DELETE /v2/accounts/{id}`` → 204.
- Its webhook to ``callback_url``: ``{"type": "account.linked", "account_id"}``.

Unlike Pipedream, Toolhub cannot list a user's accounts: a lookup re-reads the
accounts already recorded (``ctx.linked_accounts()``), so one revoked on the
platform goes to ``error``.

Nothing here imports anything but ``connect_service``'s public names.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from marshmallow import Schema

from connect_service import (Account, AccountContext, ActionAccountType, LinkedAccount, OutboundError, PlatformError,
                             ValidationError, fields, hookimpl)

#: a cached session token is replaced this long before it expires
TOKEN_MARGIN_SECONDS = 30


class ToolhubSettings(Schema):
    """A toolhub credential's ``settings``."""

    api_base_url = fields.Url(required=True, metadata={"label": "Toolhub API URL"})


class ToolhubSpec(Schema):
    """A ``toolhub_account`` requirement's ``spec.data``."""

    toolkit = fields.NonBlank(required=True, metadata={"help": "the Toolhub toolkit, e.g. slack"})


class ToolhubAPI:
    """Toolhub's API for one call into the type, through the facade's guarded client and token cache."""

    def __init__(self, ctx: AccountContext):
        self.cred = ctx.credential
        self.http = ctx.http
        self.base = self.cred.settings["api_base_url"].rstrip("/")

    def _session(self) -> str:
        token = self.cred.token_cache.get(TOKEN_MARGIN_SECONDS)
        if token is None:
            data = self._send("POST", "/v2/sessions", None, json={
                "workspace": self.cred.client_id, "api_key": self.cred.client_secret()})
            token = data["session_token"]
            self.cred.token_cache.put(token, int(data["ttl_seconds"]))
        return token

    def _send(self, method: str, path: str, token: str | None, **kwargs: Any) -> dict[str, Any] | None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            resp = self.http.request(method, self.base + path, headers=headers, **kwargs)
        except OutboundError as exc:
            raise PlatformError(f"could not reach Toolhub: {exc.reason}") from None
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise PlatformError(f"Toolhub answered HTTP {resp.status_code}")
        return resp.json() if resp.content else {}

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        """The JSON answer, or None for a 404."""
        return self._send(method, path, self._session(), **kwargs)

    def account(self, account_id: str) -> dict[str, Any] | None:
        return self.call("GET", f"/v2/accounts/{quote(account_id, safe='')}")


def _account(found: dict[str, Any]) -> Account:
    """What the core records for a Toolhub account: active unless the platform says otherwise."""
    state = found.get("state")
    return Account(found["id"], name=found.get("label"),
                   status="active" if state == "active" else "error",
                   reason=None if state == "active" else f"the account is {state} on Toolhub",
                   settings={"toolkit": found["toolkit"], "state": state})


class ToolhubAccount(ActionAccountType):
    """An account the end user links on Toolhub, for the requirement's toolkit."""

    name = "toolhub_account"
    title = "Toolhub account"
    connector_name = "toolhub"
    description = "An account (Slack, GitHub, …) the end user links through Toolhub."
    settings_schema = ToolhubSettings
    spec_schema = ToolhubSpec
    link_origins = ("{api_base_url}",)

    def account_key(self, spec: dict[str, Any]) -> str:
        return spec["toolkit"]

    def link_account(self, ctx: AccountContext, *, webhook_uri: str, success_redirect_uri: str,
                     error_redirect_uri: str) -> dict[str, Any]:
        data = ToolhubAPI(ctx).call("POST", "/v2/links", json={
            "user": ctx.user_ref, "toolkit": ctx.key, "callback_url": webhook_uri,
            "redirect_url": success_redirect_uri, "cancel_url": error_redirect_uri}) or {}
        if not isinstance(data.get("url"), str) or not isinstance(data.get("expires_at"), str):
            raise PlatformError("Toolhub answered a link without url and expires_at")
        return {"connect_link_url": data["url"], "expires_at": data["expires_at"]}

    def handle_webhook(self, ctx: AccountContext, body: dict[str, Any]) -> dict[str, Any]:
        """``account.linked``: confirmed with the platform (this user, this toolkit), then recorded."""
        if body.get("type") != "account.linked":
            raise ValidationError("must be account.linked", "type")
        account_id = body.get("account_id")
        if not isinstance(account_id, str) or not account_id:
            raise ValidationError("is required", "account_id")
        found = ToolhubAPI(ctx).account(account_id)
        if found is None or found.get("user") != ctx.user_ref or found.get("toolkit") != ctx.key:
            raise ValidationError("is not a Toolhub account of this user for this toolkit", "account_id")
        ctx.record_accounts([_account(found)], complete=False)  # the user's other accounts stay as they are
        return {"message": "recorded"}

    def sync_accounts(self, ctx: AccountContext) -> None:
        """Re-read every recorded account; one the platform no longer has goes to ``error``."""
        linked = ctx.linked_accounts()
        if not linked:
            return
        api = ToolhubAPI(ctx)
        still = [api.account(a.account_id) for a in linked]
        ctx.record_accounts([_account(found) for found in still if found is not None],
                            gone_reason="the account no longer exists on Toolhub")

    def revoke_account(self, ctx: AccountContext, account: LinkedAccount) -> bool:
        ToolhubAPI(ctx).call("DELETE", f"/v2/accounts/{quote(account.account_id, safe='')}")
        return True


@hookimpl
def register_connection_types():
    return [ToolhubAccount]
