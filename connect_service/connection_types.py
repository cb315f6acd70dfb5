"""Base classes a plugin author subclasses: ``ConnectionType``, ``ActionAccountType`` and ``OAuth2Provider``.

A minimal credentials type, in a plugin module registered under the
``connect_service`` entry-point group (``docs/plugins.md`` has the whole story)::

    from marshmallow import Schema
    from connect_service import ConnectionType, ValidationError, fields, hookimpl

    class TicketsConfig(Schema):
        url = fields.Url(required=True, metadata={"label": "Tickets API URL"})
        api_key = fields.Secret(required=True, metadata={"label": "API key"})

    class Tickets(ConnectionType):
        name = "example.connections.Tickets"
        title = "Example Tickets"
        schema = TicketsConfig

        def validate(self, config):
            if not config["api_key"].startswith("tk_"):
                raise ValidationError("must start with tk_", "api_key")

    @hookimpl
    def register_connection_types():
        return [Tickets]
"""
from __future__ import annotations

import base64
import re
from typing import Any, ClassVar, Literal, Mapping
from urllib.parse import quote

import marshmallow
from marshmallow import Schema, ValidationError, validate

__all__ = ["ConnectionType", "ActionAccountType", "OAuth2Provider", "ProviderError", "ValidationError", "form_description",
           "AUTH_KINDS", "AuthKind"]

#: what a connection type is fulfilled by: a form, an OAuth2 flow, or a linked action-connector account
AuthKind = Literal["credentials", "oauth2", "action_account"]
AUTH_KINDS: tuple[AuthKind, ...] = ("credentials", "oauth2", "action_account")
#: type names are what requirements put in ``spec.data.type``: no spaces, 200 characters at most
TYPE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}$")


class ConnectionType:
    """One kind of connection an app can require (``spec.data.type``). Subclass it in a plugin.

    Class attributes (the contract; the registry checks it at start-up):

    ``name`` (str, required)
        The type string requirements use, e.g. ``dynamiq.connections.HttpApiKey``.
        Unique across every installed plugin: a duplicate stops start-up.
    ``title`` (str, required)
        Human name shown on the hosted page and in listings.
    ``auth`` (``"credentials"`` | ``"oauth2"`` | ``"action_account"``)
        How the type is fulfilled: a form (default), an OAuth2 flow, or a
        linked action-connector account.
    ``schema`` (marshmallow ``Schema`` subclass)
        Validates the submitted ``config`` (required for ``credentials``
        types) and describes the form (:func:`form_description`). Mark secret
        fields with ``connect_service.fields.Secret`` or
        ``metadata={"secret": True}``; field ``metadata`` may also carry
        ``label``, ``help`` and ``placeholder``.
    ``connector_name`` (str)
        For ``oauth2`` and ``action_account`` types, the credential family that
        serves it (``google``, ``oauth2``, ``pipedream``). A ``credentials``
        type leaves it unset and gets its own ``name``.
    ``provider`` (:class:`OAuth2Provider`)
        Required for ``oauth2`` types: how to talk to the provider.
    ``description`` (str)
        One sentence for listings.
    ``settings_schema`` (marshmallow ``Schema`` subclass)
        Connector-specific ``settings`` of a credential (e.g. a platform's
        project id), for connectors that have any.
    ``api_base_url`` (str)
        Where ``/v1/connections/{id}/proxy/{path}`` sends a connection's
        requests (``https://api.github.com``); its path is kept. Override
        :meth:`proxy_base_url` when it comes from the config or credential.
    ``proxy_auth`` (``"bearer"`` | ``("header", name)`` | ``("query", name)``)
        How the proxy injects the secret (the OAuth access token, or the
        config field ``proxy_secret_field``, default ``api_key``). Override
        :meth:`proxy_injection` when a requirement may choose.

    Worked example: a database type with a port default and a check beyond
    the schema::

        class WarehouseConfig(Schema):
            host = fields.Host(required=True)
            port = fields.Port(load_default=5439)
            user = fields.NonBlank(required=True)
            password = fields.Secret(required=True)

        class Warehouse(ConnectionType):
            name = "example.connections.Warehouse"
            title = "Example Warehouse"
            schema = WarehouseConfig

            def validate(self, config):
                if config["user"] == "root":
                    raise ValidationError("use a read-only user, not root", "user")

        Warehouse.load_config({"host": "wh.example.com", "user": "ro", "password": "pw"})
        # -> {"host": "wh.example.com", "port": 5439, "user": "ro", "password": "pw"}
        Warehouse.secret_fields()   # -> ["password"]
        Warehouse.form()            # -> {"fields": [{"name": "host", ...}, ...]}
    """

    name: ClassVar[str]
    title: ClassVar[str]
    auth: ClassVar[AuthKind] = "credentials"
    schema: ClassVar[type[Schema] | None] = None
    connector_name: ClassVar[str | None] = None
    provider: ClassVar[OAuth2Provider | None] = None
    description: ClassVar[str] = ""
    settings_schema: ClassVar[type[Schema] | None] = None
    api_base_url: ClassVar[str | None] = None
    proxy_auth: ClassVar[str | tuple[str, str]] = "bearer"
    proxy_secret_field: ClassVar[str] = "api_key"

    @classmethod
    def check_definition(cls) -> None:
        """Raise ``TypeError`` naming the problem when the class breaks the contract above.

        Called by the registry at start-up for every registered class, so a
        broken plugin fails before the service answers a request.
        """
        where = f"{cls.__module__}.{cls.__qualname__}"
        for attr in ("name", "title"):
            value = getattr(cls, attr, None)
            if not isinstance(value, str) or not value.strip():
                raise TypeError(f"{where}: `{attr}` must be a non-empty string")
        if not TYPE_NAME_RE.match(cls.name):
            raise TypeError(f"{where}: `name` {cls.name!r} must be 1-200 letters, digits, _ . : - (no spaces)")
        if cls.auth not in AUTH_KINDS:
            raise TypeError(f"{cls.name}: `auth` must be one of {', '.join(AUTH_KINDS)}; got {cls.auth!r}")
        for attr in ("schema", "settings_schema"):
            value = getattr(cls, attr)
            if value is not None and not (isinstance(value, type) and issubclass(value, Schema)):
                raise TypeError(f"{cls.name}: `{attr}` must be a marshmallow Schema subclass, got {value!r}")
        if cls.auth == "credentials":
            if cls.schema is None:
                raise TypeError(f"{cls.name}: a credentials type needs a `schema`")
            if cls.connector_name is None:
                cls.connector_name = cls.name
        elif not isinstance(cls.connector_name, str) or not cls.connector_name:
            raise TypeError(f"{cls.name}: {cls.auth} types must declare `connector_name`")
        if cls.auth == "oauth2" and not isinstance(cls.provider, OAuth2Provider):
            raise TypeError(f"{cls.name}: oauth2 types need a `provider` (an OAuth2Provider instance)")
        if cls.auth == "action_account" and not issubclass(cls, ActionAccountType):
            raise TypeError(f"{cls.name}: action_account types subclass ActionAccountType")
        if cls.schema is not None:
            form_description(cls.schema)  # a schema that cannot be described fails here, not on a request

    @classmethod
    def secret_fields(cls) -> list[str]:
        """Keys of the loaded config that are secret (password inputs, left out of public views)."""
        if cls.schema is None:
            return []
        return [name for name, f in cls.schema().fields.items() if f.metadata.get("secret")]

    @classmethod
    def load_config(cls, data: Any) -> dict[str, Any]:
        """Validate submitted ``config`` with ``schema`` then :meth:`validate`; raise ``ValidationError``.

        The error's messages are keyed by field name; the API reports them as
        ``config.<field>``.
        """
        if cls.schema is None:
            raise ValidationError("this connection type takes no config", "input")
        config = cls.schema().load(data)
        try:
            cls().validate(config)
        except ValidationError as exc:  # ValidationError(message, "field") -> {"field": [message]}
            raise ValidationError(exc.normalized_messages()) from None
        return config

    def validate(self, config: dict[str, Any]) -> None:
        """Checks beyond the schema; raise ``ValidationError(message, field_name)``. The default accepts all.

        ``config`` is the schema's output (defaults filled in). May call out to
        the service being connected, but only through
        ``connect_service.http.GuardedClient`` (SSRF-safe, with timeouts), and
        never put a secret into the error message.
        """

    @classmethod
    def form(cls) -> dict[str, Any]:
        """JSON description of the config form (see :func:`form_description`); ``{"fields": []}`` without a schema."""
        return form_description(cls.schema) if cls.schema else {"fields": []}

    @classmethod
    def proxy_base_url(cls, config: Mapping[str, Any], credential_settings: Mapping[str, Any]) -> str | None:
        """The API base URL the proxy uses for one connection; ``None``: this connection cannot be proxied.

        ``config`` is the connection's stored config (empty for OAuth types),
        ``credential_settings`` its credential's ``settings``. The default is
        :attr:`api_base_url`; the generic ``oauth2`` type reads
        ``credential_settings["api_base_url"]``, ``HttpApiKey`` its ``config["url"]``.
        """
        return cls.api_base_url

    @classmethod
    def proxy_injection(cls, requirement_data: Mapping[str, Any]) -> tuple[str, str | None]:
        """``("bearer", None)``, ``("header", name)`` or ``("query", name)``: how the proxy adds the secret.

        ``requirement_data`` is the ``spec.data`` of the requirement the
        connection fulfils (empty for imported connections). The default is
        :attr:`proxy_auth`; ``HttpApiKey`` lets ``spec.data.header`` name a header.
        """
        if cls.proxy_auth == "bearer":
            return "bearer", None
        kind, name = cls.proxy_auth
        return kind, name

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The entry ``GET /v1/connection-types`` lists for this type."""
        return {
            "name": cls.name,
            "title": cls.title,
            "auth": cls.auth,
            "connector_name": cls.connector_name,
            "description": cls.description,
            "form": cls.form(),
        }


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


# (marshmallow field class, form "type"); first match wins, so subclasses come before their bases
_FIELD_TYPES: list[tuple[type[marshmallow.fields.Field], str]] = [
    (marshmallow.fields.Url, "url"),
    (marshmallow.fields.Email, "email"),
    (marshmallow.fields.Boolean, "boolean"),
    (marshmallow.fields.Integer, "integer"),
    (marshmallow.fields.Number, "number"),
    (marshmallow.fields.Mapping, "object"),
    (marshmallow.fields.Nested, "object"),
    (marshmallow.fields.List, "list"),
    (marshmallow.fields.String, "string"),
]

_INPUTS = {"url": "url", "email": "email", "boolean": "checkbox", "integer": "number", "number": "number",
           "object": "json", "list": "json", "string": "text"}


def form_description(schema: type[Schema] | Schema) -> dict[str, Any]:
    """Describe a marshmallow schema as a form the hosted page and API clients render.

    Returns ``{"fields": [field, ...]}`` in declaration order, one per loadable
    field, each with:

    - ``name``: the key in ``config``;
    - ``label``: ``metadata["label"]``, else the name made readable;
    - ``type``: ``string`` | ``url`` | ``email`` | ``integer`` | ``number`` |
      ``boolean`` | ``object`` | ``list`` (what the value is);
    - ``input``: ``text`` | ``password`` | ``url`` | ``email`` | ``number`` |
      ``checkbox`` | ``select`` | ``json`` (how to ask for it; every secret
      scalar is ``password``);
    - ``secret``: never shown back once stored;
    - ``required``;

    and, when they apply: ``help``, ``placeholder`` (from metadata),
    ``choices`` (a ``OneOf`` validator), ``default`` (a non-callable
    ``load_default``), ``min``/``max`` (a ``Range``), ``max_length`` (a
    ``Length``).
    """
    instance = schema() if isinstance(schema, type) else schema
    out = []
    for name, f in instance.fields.items():
        if f.dump_only:
            continue
        kind = next((label for cls, label in _FIELD_TYPES if isinstance(f, cls)), "string")
        secret = bool(f.metadata.get("secret"))
        entry: dict[str, Any] = {
            "name": f.data_key or name,
            "label": f.metadata.get("label") or name.replace("_", " ").capitalize(),
            "type": kind,
            "input": _INPUTS[kind],
            "secret": secret,
            "required": bool(f.required),
        }
        for key in ("help", "placeholder"):
            if f.metadata.get(key):
                entry[key] = f.metadata[key]
        for v in f.validators:
            if isinstance(v, validate.OneOf):
                entry["choices"] = list(v.choices)
                entry["input"] = "select"
            elif isinstance(v, validate.Range):
                if v.min is not None:
                    entry["min"] = v.min
                if v.max is not None:
                    entry["max"] = v.max
            elif isinstance(v, validate.Length) and v.max is not None:
                entry["max_length"] = v.max
        if secret and kind not in ("object", "list"):
            entry["input"] = "password"
        default = f.load_default
        if default is not marshmallow.missing and not callable(default):
            entry["default"] = default
        out.append(entry)
    return {"fields": out}


class ProviderError(Exception):
    """A provider answered with an OAuth2 error (``code`` e.g. ``invalid_grant``); no secrets inside."""

    def __init__(self, code: str, description: str = ""):
        super().__init__(f"{code}: {description}" if description else code)
        self.code = code
        self.description = description


class OAuth2Provider:
    """How one OAuth2 provider wants to be talked to. Subclass or instantiate with overrides.

    ::

        class Dropbox(OAuth2Provider):
            authorize_url = "https://www.dropbox.com/oauth2/authorize"
            token_url = "https://api.dropboxapi.com/oauth2/token"
            revoke_url = "https://api.dropboxapi.com/2/auth/token/revoke"
            offline_access = "param"
            offline_params = {"token_access_type": "offline"}

    URLs left ``None`` come from the credential (``oauth_url``,
    ``oauth_token_url``): that is how the generic ``oauth2`` connector works.
    A credential's values always override the plugin's. A URL may contain
    ``{name}`` placeholders filled from the credential's ``settings`` (e.g.
    Microsoft's ``{tenant}``) and ``{client_id}``.

    Methods a provider with quirks overrides: :meth:`scopes`,
    :meth:`authorization_params`, :meth:`prepare_token_request`,
    :meth:`parse_token_response` and :meth:`revoke`.
    """

    authorize_url: str | None = None
    token_url: str | None = None
    revoke_url: str | None = None
    #: RFC 9207 issuer; when set (here or on the credential) the callback's ``iss`` must match
    issuer: str | None = None
    default_scopes: tuple[str, ...] = ()
    scope_separator: str = " "
    #: "scope" adds ``offline_scope``; "param" adds ``offline_params``; None: the provider has no such ask
    offline_access: str | None = "scope"
    offline_scope: str = "offline_access"
    offline_params: Mapping[str, str] = {}
    #: client_secret_basic (HTTP Basic) or client_secret_post (in the body); "none" for public clients
    token_endpoint_auth_method: str = "client_secret_basic"
    supports_pkce: bool = True
    #: seconds an access token lives when the token response says nothing (None: ask the JWT, else the app default)
    default_token_lifetime: int | None = None
    #: extra authorize parameters always sent (e.g. Notion's ``owner=user``)
    extra_authorize_params: Mapping[str, str] = {}
    #: ``prompt`` sent when the caller gives none (seed 004: ``login``); None sends no prompt. Every provider
    #: plugin states its own (docs/api.md lists them); a provider that refuses ``login`` (Google) says what it takes
    default_prompt: str | None = "login"
    #: "form" (RFC 6749) or "json" (e.g. Notion) for token-endpoint request bodies
    token_request_format: str = "form"
    #: extra headers on token and revocation requests (e.g. an API version header)
    request_headers: Mapping[str, str] = {}
    #: whether the RFC 7009 revocation request authenticates the client (Google's endpoint takes only the token)
    revoke_client_auth: bool = True

    def __init__(self, **overrides: Any):
        for key, value in overrides.items():
            if not hasattr(type(self), key):
                raise TypeError(f"unknown OAuth2Provider setting {key!r}")
            setattr(self, key, value)

    def authorization_params(self, scopes: list[str], offline: bool) -> dict[str, str]:
        """Provider-specific authorize parameters (offline ask in its dialect, extras)."""
        params = dict(self.extra_authorize_params)
        if offline and self.offline_access == "param":
            params.update(self.offline_params)
        return params

    def scopes(self, requested: list[str], offline: bool) -> list[str]:
        """requested ∪ defaults, plus the offline scope when this provider asks for it that way."""
        out: list[str] = []
        for scope in [*requested, *self.default_scopes]:
            if scope and scope not in out:
                out.append(scope)
        if offline and self.offline_access == "scope" and self.offline_scope not in out:
            out.append(self.offline_scope)
        return out

    def prepare_token_request(self, body: Mapping[str, str], *, client_id: str | None,
                              client_secret: str | None, auth_method: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``GuardedClient.post(token_url, **kwargs)``.

        ``body`` holds the grant's parameters (``grant_type``, ``code``, …)
        without client authentication; this adds it per ``auth_method``
        (default :attr:`token_endpoint_auth_method`): ``client_secret_basic``
        sends an RFC 6749 §2.3.1 ``Authorization: Basic`` header,
        ``client_secret_post`` puts ``client_id``/``client_secret`` in the
        body, ``none`` sends only ``client_id``.
        """
        method = auth_method or self.token_endpoint_auth_method
        params = dict(body)
        headers = {"Accept": "application/json", **self.request_headers}
        if method == "client_secret_basic" and client_secret is not None:
            headers["Authorization"] = basic_authorization(client_id or "", client_secret)
        elif method == "client_secret_post" and client_secret is not None:
            params["client_id"] = client_id or ""
            params["client_secret"] = client_secret
        else:
            params["client_id"] = client_id or ""
        if self.token_request_format == "json":
            return {"json": params, "headers": headers}
        return {"data": params, "headers": headers}

    def parse_token_response(self, status: int, data: Mapping[str, Any]) -> dict[str, Any]:
        """Normalise a token endpoint answer; raise ``ProviderError`` on an error body.

        Override for quirks (e.g. an error reported with HTTP 200).
        """
        if status >= 400 or "error" in data or "access_token" not in data:
            raise ProviderError(str(data.get("error") or f"http_{status}"),
                                str(data.get("error_description") or "")[:200])
        return dict(data)

    def revoke(self, client: Any, *, access_token: str | None, refresh_token: str | None,
               client_id: str | None, client_secret: str | None, auth_method: str | None = None) -> bool:
        """Revoke a grant at :attr:`revoke_url`; return whether the provider confirmed it.

        The default is RFC 7009: the refresh token when there is one (which
        ends the whole grant at most providers), else the access token, with
        ``token_type_hint`` and client authentication like the token endpoint.
        ``client`` is a ``GuardedClient``; transport errors propagate (the
        caller turns them into ``False``). Override for a provider whose
        revocation is not RFC 7009 (Dropbox, GitHub, Notion).
        """
        if not self.revoke_url:
            return False
        token, hint = (refresh_token, "refresh_token") if refresh_token else (access_token, "access_token")
        if not token:
            return False
        body = {"token": token, "token_type_hint": hint}
        if self.revoke_client_auth:
            kwargs = self.prepare_token_request(body, client_id=client_id, client_secret=client_secret,
                                                auth_method=auth_method)
        else:
            kwargs = {"data": body, "headers": {"Accept": "application/json", **self.request_headers}}
        if self.token_request_format == "json" and "data" in kwargs:
            kwargs["json"] = kwargs.pop("data")
        resp = client.post(self.revoke_url, **kwargs)
        return 200 <= resp.status_code < 300


def basic_authorization(client_id: str, client_secret: str) -> str:
    """``Basic base64(urlencode(id):urlencode(secret))`` as RFC 6749 §2.3.1 asks."""
    raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")
