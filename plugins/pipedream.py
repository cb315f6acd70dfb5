"""Built-in plugin: the ``pipedream_account`` action connector (Pipedream Connect).

An app requirement ``{"type": "pipedream_account", "spec": {"data": {"app_slug": "gmail"}}}``
is completed once the end user has linked a Gmail account in the app's Pipedream
Connect project. The plugin speaks the platform's REST API over HTTP, through the
service's guarded client, at the credential's ``settings.api_base_url``.

Configuration: one Credential with ``connector_name`` ``pipedream`` holds the
workspace OAuth client (``oauth_client_id``, ``oauth_client_secret``, encrypted) and
``settings`` ``{"project_id": "proj_…", "environment": "development"|"production",
"api_base_url": "https://api.pipedream.com"}`` (validated by :class:`PipedreamSettings`).
Which credential serves an app follows the OAuth rule: the app's own (``read_access``
``APP``), else one shared with it (``ORGANIZATION`` or ``SPECIFIC_APPS``); two at the same
level need ``spec.data.credential_id``.

Platform API used (request and response shapes as documented by Pipedream):

- API token, client-credentials grant with a JSON body
  ``{"grant_type": "client_credentials", "client_id", "client_secret"}`` →
  ``{"access_token", "token_type", "expires_in"}``:
  https://pipedream.com/docs/connect/api-reference/create-oauth-token and
  https://pipedream.com/docs/connect/api-reference/authentication (tokens last one hour).
  The client (``pipedream_client.py``) keeps the token in the credential's token cache (``ctx.credential.token_cache``:
  encrypted, shared by every worker, bound to the client id and settings) until a minute
  before it expires; a 401 from the API fetches a new one and retries once.
- ``POST /v1/connect/{project_id}/tokens`` with ``Authorization: Bearer``, the
  ``x-pd-environment`` header and ``{"external_user_id", "success_redirect_uri",
  "error_redirect_uri", "webhook_uri"}`` → ``{"token", "expires_at", "connect_link_url"}``:
  https://pipedream.com/docs/connect/api-reference/create-connect-token; the link gets
  ``app=<app_slug>`` added as https://pipedream.com/docs/connect/managed-auth/connect-link says.
  The hosted page lets its link form go to ``https://pipedream.com`` (the link page) and to
  the origin of the credential's ``api_base_url`` (a test or self-hosted platform) only:
  :attr:`PipedreamAccount.link_origins`.
- ``GET /v1/connect/{project_id}/accounts?external_user_id=…&app_id=…&limit=…&after=…`` →
  ``{"data": [{"id", "name", "external_id", "healthy", "dead", "app": {"name_slug", …},
  "created_at", "updated_at"}], "page_info": {"count", "total_count", "start_cursor",
  "end_cursor"}}``: https://pipedream.com/docs/connect/api-reference/list-accounts, whose
  query parameter ``app_id`` takes "the app slug or ID to filter accounts by" (older
  guides called it ``app``). The plugin filters the answer by ``app.name_slug`` again
  itself, so an account of another app is never recorded whatever the platform does.
- ``GET /v1/connect/{project_id}/accounts/{account_id}``:
  https://pipedream.com/docs/connect/api-reference/retrieve-account.
- ``DELETE /v1/connect/{project_id}/accounts/{account_id}`` when the connection is deleted:
  https://pipedream.com/docs/connect/managed-auth/users.
- Webhooks ``CONNECTION_SUCCESS`` (``connect_token``, ``environment``, ``account``) and
  ``CONNECTION_ERROR`` (``error``): https://pipedream.com/docs/connect/webhooks. A success
  counts only after the account is fetched from the platform and found among the user's
  accounts for the requirement's app.
- External users (ids up to 250 characters, the ``x-pd-environment`` header):
  https://pipedream.com/docs/connect/api.

``external_user_id`` is the facade's ``ctx.user_ref``, ``"cs-" + sha256(app id + "\\n" + user
id)`` in hex: stable for a user of an app, different between apps, and it reveals neither id
to the platform. The ``webhook_uri`` handed to the platform does not either: its last segment
is an encrypted, signed reference (the core's ``account_webhook_urls``).

Statuses reads look the user's accounts up at most once per ``account_lookup_seconds``
(default 60) per user and requirement, whatever else happens (the core's throttle; starting
a link does not lift it): a link shows up through the ``CONNECTION_SUCCESS`` webhook at
once, or through the next lookup after that.

A linked account is a connection the core records (type and integration
``pipedream_account``, connector ``pipedream``, account key = the app slug, no requirement
id) whose encrypted settings are ``{"account_id", "app_slug", "healthy", "dead", "external_user_id",
"project_id", "environment"}``: everything a backend needs to act with the account
through Pipedream, and no platform secret. It is ``active`` while the account is healthy
and ``error`` when it is dead, unhealthy or gone, which makes the requirement pending again.
"""
from __future__ import annotations

import datetime
import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from marshmallow import Schema, post_load, validate

from connect_service import (Account, AccountContext, ActionAccountType, LinkedAccount, PlatformError, ValidationError,
                             fields, hookimpl)

from .pipedream_client import DEFAULT_TOKEN_SECONDS, MAX_PAGES, TOKEN_MARGIN_SECONDS, PipedreamClient

log = logging.getLogger(__name__)

# re-exported: the platform API client and its limits live in pipedream_client.py
__all__ = ["CONNECTOR", "CONNECT_TOKEN_SECONDS", "DEFAULT_API_BASE_URL", "DEFAULT_TOKEN_SECONDS", "MAX_PAGES",
           "TOKEN_MARGIN_SECONDS", "TYPE_NAME", "PipedreamAccount", "PipedreamClient", "PipedreamSettings",
           "PipedreamSpec", "app_slug_of", "register_connection_types"]

CONNECTOR = "pipedream"
TYPE_NAME = "pipedream_account"
DEFAULT_API_BASE_URL = "https://api.pipedream.com"
#: connect tokens last four hours (connect-token docs) when ``expires_at`` is missing
CONNECT_TOKEN_SECONDS = 4 * 3600


def _validate_api_base_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValidationError("must be a plain http(s) base URL without credentials, query or fragment")


class PipedreamSettings(Schema):
    """A pipedream credential's ``settings`` (non-secret)."""

    project_id = fields.String(required=True, validate=fields.FullMatch(
        r"^proj_[A-Za-z0-9]+$", error="must be a Pipedream project id such as proj_abc123"),
        metadata={"label": "Project ID", "placeholder": "proj_abc123"})
    environment = fields.String(load_default="production", validate=validate.OneOf(
        ["development", "production"], error="must be development or production"),
        metadata={"label": "Environment"})
    api_base_url = fields.Url(load_default=DEFAULT_API_BASE_URL, validate=_validate_api_base_url,
                              metadata={"label": "API base URL",
                                        "help": "the platform's origin, without /v1 (tests point it at a local server)"})

    @post_load
    def _strip(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["api_base_url"] = data["api_base_url"].rstrip("/")
        return data


class PipedreamSpec(Schema):
    """A ``pipedream_account`` requirement's ``spec.data``: which Pipedream app (``gmail``)."""

    app_slug = fields.String(required=True, validate=validate.Regexp(r"\s*\S", error="is required"))


def _iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.timezone.utc).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# --- recording linked accounts ----------------------------------------------------------------

def app_slug_of(account: dict[str, Any]) -> str | None:
    """The platform app of an account (``app.name_slug``); None when the answer has no ``app``.

    A malformed ``app`` (not an object with a string ``name_slug``) gives ``""``, which
    matches no requirement.
    """
    app = account.get("app")
    if app is None:
        return None
    slug = app.get("name_slug") if isinstance(app, dict) else None
    return slug if isinstance(slug, str) else ""


def _account(ctx: AccountContext, client: PipedreamClient, account: dict[str, Any]) -> Account:
    """What the core records for one platform account (``active`` unless dead or unhealthy)."""
    status, reason = "active", None
    if account.get("dead"):
        status, reason = "error", "the account is dead on Pipedream: the user must connect it again"
    elif account.get("healthy") is False:
        status, reason = "error", "the account is unhealthy on Pipedream: the user may need to connect it again"
    return Account(account["id"], name=str(account.get("name") or "") or None, status=status, reason=reason,
                   settings={"app_slug": ctx.key, "healthy": account.get("healthy"), "dead": account.get("dead"),
                             "external_user_id": ctx.user_ref, "project_id": client.project_id,
                             "environment": client.environment})


def _record(ctx: AccountContext, client: PipedreamClient, accounts: list[dict[str, Any]]) -> None:
    """Record the user's complete list of accounts for the requirement's app (other apps' are dropped)."""
    mine = [a for a in accounts if app_slug_of(a) in (ctx.key, None)]
    ctx.record_accounts([_account(ctx, client, a) for a in mine],
                        gone_reason="the account no longer exists on Pipedream")


# --- the connection type ------------------------------------------------------------------------

class PipedreamAccount(ActionAccountType):
    """An account the end user links in a Pipedream Connect project (see the module docstring)."""

    name = TYPE_NAME
    title = "Pipedream Connect account"
    connector_name = CONNECTOR
    description = "An account (Gmail, Slack, …) the end user links through Pipedream Connect."
    settings_schema = PipedreamSettings
    spec_schema = PipedreamSpec
    #: Pipedream's hosted link page, and the configured platform (a local server in tests)
    link_origins = ("https://pipedream.com", "{api_base_url}")

    def account_key(self, spec: dict[str, Any]) -> str:
        return spec["app_slug"]

    def link_account(self, ctx: AccountContext, *, webhook_uri: str, success_redirect_uri: str,
                     error_redirect_uri: str) -> dict[str, Any]:
        """Create a platform connect token for the user; ``{"connect_link_url", "expires_at"}``."""
        data = PipedreamClient(ctx).create_connect_token(ctx.user_ref, success_redirect_uri, error_redirect_uri,
                                                         webhook_uri)
        link = data.get("connect_link_url")
        parts = urlsplit(link) if isinstance(link, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise PlatformError("Pipedream's connect token response has no connect_link_url")
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "app"]
        query.append(("app", ctx.key))
        expires = _parse_time(data.get("expires_at"))
        if data.get("expires_at") is not None and expires is None:
            raise PlatformError("Pipedream's connect token response has an invalid expires_at")
        expires = expires or _now() + datetime.timedelta(seconds=CONNECT_TOKEN_SECONDS)
        return {"connect_link_url": urlunsplit(parts._replace(query=urlencode(query))), "expires_at": _iso(expires)}

    def sync_accounts(self, ctx: AccountContext) -> None:
        """Record every account the platform lists for the user and the requirement's app."""
        client = PipedreamClient(ctx)
        _record(ctx, client, client.list_accounts(ctx.user_ref, ctx.key))

    def handle_webhook(self, ctx: AccountContext, body: dict[str, Any]) -> dict[str, Any]:
        """Record a ``CONNECTION_SUCCESS`` after confirming the account with the platform.

        ``CONNECTION_ERROR`` is logged (the user may retry) and changes nothing. A payload
        that does not name one of this user's accounts for the requirement's app is a 400;
        a platform that cannot confirm it a 502 (the platform then delivers again).
        """
        event = body.get("event")
        if event == "CONNECTION_ERROR":
            log.info("pipedream connect flow failed for app %s requirement %s", ctx.app_id, ctx.requirement_id)
            return {"message": "recorded"}
        if event != "CONNECTION_SUCCESS":
            raise ValidationError("must be CONNECTION_SUCCESS or CONNECTION_ERROR", "event")
        account = body.get("account")
        account_id = account.get("id") if isinstance(account, dict) else None
        if not isinstance(account_id, str) or not account_id.strip():
            raise ValidationError("is required", "account.id")
        client = PipedreamClient(ctx)
        confirmed = client.get_account(account_id)
        if confirmed is None:
            raise ValidationError("is not an account on Pipedream", "account.id")
        if app_slug_of(confirmed) != ctx.key:
            raise ValidationError(f"is not {ctx.key!r}, the app this requirement asks for", "account.app")
        owned = client.list_accounts(ctx.user_ref, ctx.key)
        if account_id not in {a["id"] for a in owned}:
            raise ValidationError("is not an account of this user", "account.id")
        _record(ctx, client, [dict(confirmed, id=account_id) if a["id"] == account_id else a for a in owned])
        return {"message": "recorded"}

    def revoke_account(self, ctx: AccountContext, account: LinkedAccount) -> bool:
        """Delete the linked account on the platform (already gone counts as done)."""
        PipedreamClient(ctx).delete_account(account.account_id)
        return True


@hookimpl
def register_connection_types():
    return [PipedreamAccount]
