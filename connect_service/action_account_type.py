"""``ActionAccountType``: the base class of connection types fulfilled by a linked platform account.

Exported as ``connect_service.ActionAccountType``; ``docs/plugins.md`` ("Action-account
types and their facade") documents it with the facade its methods receive.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import marshmallow
from marshmallow import Schema, ValidationError

from .connection_types import AuthKind, ConnectionType

__all__ = ["ActionAccountType"]


class ActionAccountType(ConnectionType):
    """A connection type fulfilled by an account the end user links on an action-connector platform.

    Platforms such as Pipedream Connect, Composio, Paragon or Arcade host the
    provider's OAuth dance themselves; this service hands the user a link,
    learns about the linked account (a signed webhook or a lookup), and keeps a
    connection row per account. The core owns the rows, the lookup throttle,
    the webhook URL and its signature, the lifecycle hooks and the serving
    credential; a subclass only speaks the platform's API. Each method gets an
    :class:`~connect_service.account_context.AccountContext` (``ctx``), the
    facade documented in ``docs/plugins.md`` ("Action-account types and their facade").

    Class attributes, beyond :class:`ConnectionType`'s (``auth`` is already
    ``"action_account"``; ``connector_name`` names the credential family that
    serves the type, e.g. ``pipedream``):

    ``spec_schema`` (marshmallow ``Schema`` subclass)
        Validates a requirement's ``spec.data`` when a version is created
        (errors are ``requirements.N.spec.data.<field>``); unknown keys pass,
        and ``credential_id`` is the core's. Default: anything.
    ``link_origins`` (tuple of str)
        The origins (``https://host[:port]``) of the pages :meth:`link_account`
        sends the end user to. The hosted page lets its link forms go there
        (CSP ``form-action``) and nowhere else. An entry may hold ``{name}``
        placeholders filled from the serving credential's ``settings``.

    Methods: :meth:`account_key`, :meth:`link_account`, :meth:`sync_accounts`,
    :meth:`handle_webhook` and :meth:`revoke_account`. Raise
    ``PlatformError(reason)`` when the platform fails (the API answers 502,
    statuses answer from the recorded rows) and ``ValidationError`` for bad
    input (400 naming the field). Worked example, a platform that lists a
    user's accounts per app::

        from marshmallow import Schema
        from connect_service import (Account, ActionAccountType, OutboundError, PlatformError,
                                     fields, hookimpl)

        class LinkSpec(Schema):
            app = fields.NonBlank(required=True)      # spec.data.app: "gmail"

        class Linky(ActionAccountType):
            name = "linky_account"
            title = "Linky account"
            connector_name = "linky"
            spec_schema = LinkSpec
            link_origins = ("https://link.linky.example",)

            def account_key(self, spec):
                return spec["app"]

            def _call(self, ctx, method, path, **kwargs):
                cred = ctx.credential
                try:
                    resp = ctx.http.request(method, "https://api.linky.example" + path, headers={
                        "Authorization": f"Bearer {cred.client_secret()}"}, **kwargs)
                except OutboundError as exc:
                    raise PlatformError(f"could not reach Linky: {exc.reason}") from None
                if resp.status_code >= 400:
                    raise PlatformError(f"Linky answered HTTP {resp.status_code}")
                return resp.json()

            def link_account(self, ctx, *, webhook_uri, success_redirect_uri, error_redirect_uri):
                data = self._call(ctx, "POST", "/links", json={
                    "user": ctx.user_ref, "app": ctx.key, "webhook": webhook_uri,
                    "done": success_redirect_uri, "failed": error_redirect_uri})
                return {"connect_link_url": data["url"], "expires_at": data["expires_at"]}

            def sync_accounts(self, ctx):
                found = self._call(ctx, "GET", "/accounts", params={"user": ctx.user_ref, "app": ctx.key})
                ctx.record_accounts([Account(a["id"], name=a["email"]) for a in found["accounts"]])

            def handle_webhook(self, ctx, body):
                self.sync_accounts(ctx)     # never trust the body: ask the platform
                return {"message": "recorded"}

            def revoke_account(self, ctx, account):
                self._call(ctx, "DELETE", f"/accounts/{account.account_id}")
                return True

        @hookimpl
        def register_connection_types():
            return [Linky]
    """

    auth: ClassVar[AuthKind] = "action_account"
    _links_accounts: ClassVar[bool] = True
    spec_schema: ClassVar[type[Schema] | None] = None
    link_origins: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_definition(cls) -> None:
        super().check_definition()
        if cls.spec_schema is not None and not (isinstance(cls.spec_schema, type)
                                                and issubclass(cls.spec_schema, Schema)):
            raise TypeError(f"{cls.name}: `spec_schema` must be a marshmallow Schema subclass")

    @classmethod
    def load_spec(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """A requirement's ``spec.data`` loaded through :attr:`spec_schema`; raises ``ValidationError``."""
        if cls.spec_schema is None:
            return dict(data)
        return cls.spec_schema(unknown=marshmallow.INCLUDE).load(data)

    @classmethod
    def spec_errors(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """marshmallow's messages for a ``spec.data`` that does not load (``{}`` when it does)."""
        try:
            cls.load_spec(data)
        except ValidationError as exc:
            return exc.normalized_messages()
        return {}

    @classmethod
    def requirement_key(cls, data: Any) -> str | None:
        """The :meth:`account_key` of a requirement's ``spec.data``; None when it no longer loads."""
        try:
            return cls().account_key(cls.load_spec(data if isinstance(data, Mapping) else {}))
        except ValidationError:
            return None

    def account_key(self, spec: dict[str, Any]) -> str:
        """What on the platform a requirement asks for (``"gmail"``), from its loaded ``spec.data``.

        Every account recorded for the requirement carries it, and any active
        account of the user with the same key completes every requirement with
        that key. The default ``""``: any account of this type will do.
        """
        return ""

    def link_account(self, ctx: Any, *, webhook_uri: str, success_redirect_uri: str,
                     error_redirect_uri: str) -> dict[str, Any]:
        """``{"connect_link_url", "expires_at"}``: where the end user links an account (``POST …/accounts``).

        Hand ``webhook_uri`` (this service's signed URL for the user and
        requirement) to the platform; the redirect URIs carry no token.
        """
        raise NotImplementedError(f"{self.name} does not link accounts")

    def sync_accounts(self, ctx: Any) -> None:
        """Ask the platform for the user's accounts and ``ctx.record_accounts(...)`` them.

        Called before statuses are read, at most once per ``account_lookup_seconds``
        per user and requirement (the core throttles). The default does nothing.
        """

    def handle_webhook(self, ctx: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Judge a platform webhook delivered to the signed URL; return the JSON answer.

        The signature has been checked and names ``ctx``'s user and requirement;
        ``body`` is the platform's JSON object. Confirm with the platform before
        recording anything. Called once per event: the core answers a replay of
        an accepted event (same URL and body) with the answer recorded the first
        time, and limits deliveries per webhook URL.
        """
        raise NotImplementedError(f"{self.name} takes no webhooks")

    def revoke_account(self, ctx: Any, account: Any) -> bool:
        """Undo the link at the platform before ``DELETE /v1/connections/{id}`` removes the row.

        ``account`` is the :class:`~connect_service.account_context.LinkedAccount`;
        ``ctx.credential`` is the credential that recorded it. Return True when the
        platform confirmed. A ``PlatformError`` is logged and counts as False; the
        row is deleted anyway. The default does nothing.
        """
        return False
