"""Base classes a plugin author subclasses: ``ConnectionType`` and ``OAuth2Provider``.

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

import re
from typing import Any, ClassVar, Literal, Mapping

import marshmallow
from marshmallow import Schema, ValidationError, validate

__all__ = ["ConnectionType", "OAuth2Provider", "ProviderError", "ValidationError", "form_description",
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
    ``link_origins`` (tuple of str)
        For ``action_account`` types: the origins (``https://host[:port]``) of
        the pages :meth:`link_account` sends the end user to. The hosted page
        lets its link forms go there (CSP ``form-action``) and nowhere else, and
        shows an error instead of redirecting to a link outside them. An entry
        may hold ``{name}`` placeholders filled from the serving credential's
        ``settings`` (e.g. ``"{api_base_url}"`` for a self-hosted or test
        platform). Default: none (the page cannot send the browser anywhere).

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
    link_origins: ClassVar[tuple[str, ...]] = ()

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

    def sync_status(self, app: Any, user_id: str, requirement: Any) -> None:
        """Action-account types: bring the user's linked-account rows up to date before statuses are read.

        Called on every statuses read; implementations throttle their own
        platform calls and must not raise for a platform outage (statuses
        then answer from what is recorded).
        """

    def link_account(self, app: Any, user_id: str, requirement: Any, *, webhook_uri: str,
                     success_redirect_uri: str, error_redirect_uri: str) -> dict[str, Any]:
        """Action-account types: ``{"connect_link_url", "expires_at"}`` where the end user links an account.

        Called by ``POST /v1/connect/requirements/{id}/accounts``. ``webhook_uri`` is this
        service's signed webhook URL for (app, user, requirement), to hand to the platform;
        the redirect URIs carry no token. Raise ``connect_service.errors.BadGateway`` when
        the platform fails and ``BadRequest`` for missing configuration.
        """
        raise NotImplementedError(f"{self.name} does not link accounts")

    def handle_webhook(self, app: Any, user_id: str, requirement: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Action-account types: judge a platform webhook delivered to the signed URL; return the JSON answer.

        The signature has been checked and names ``app``, ``user_id`` and
        ``requirement``; ``body`` is the platform's JSON object, which the type must
        confirm with the platform before it records anything.
        """
        raise NotImplementedError(f"{self.name} takes no webhooks")

    def revoke_connection(self, connection: Any) -> bool:
        """Action-account types: undo the link at the platform before ``DELETE /v1/connections/{id}`` removes the row.

        Best effort: return True when the platform confirmed, False otherwise
        (log the failure; never raise for an outage). The default does nothing.
        """
        return False

    @classmethod
    def form(cls) -> dict[str, Any]:
        """JSON description of the config form (see :func:`form_description`); ``{"fields": []}`` without a schema."""
        return form_description(cls.schema) if cls.schema else {"fields": []}

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
    #: ``prompt`` sent when the caller gives none (seed 004: ``login``); None sends no prompt
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
    import base64
    from urllib.parse import quote

    raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")
