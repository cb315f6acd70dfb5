"""The base class a plugin author subclasses: ``ConnectionType``.

``ActionAccountType`` (action_account_type.py) and ``OAuth2Provider``
(oauth2_provider.py) build on it; all three are exported from ``connect_service``.

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

from marshmallow import Schema, ValidationError

from .form_description import form_description
from .oauth2_provider import OAuth2Provider, ProviderError
from .outbound_errors import OutboundError

__all__ = ["ConnectionType", "ValidationError", "ProviderError", "AUTH_KINDS", "AuthKind"]

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
    #: True only from ActionAccountType on: the one base whose subclasses may declare ``auth = "action_account"``
    _links_accounts: ClassVar[bool] = False
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
        if not TYPE_NAME_RE.fullmatch(cls.name):
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
        if cls.auth == "action_account" and not cls._links_accounts:
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
        ``config.<field>``. An ``OutboundError`` that :meth:`validate` lets
        through (its call to the service was refused or failed) becomes a
        message about the whole config, never a 500.
        """
        if cls.schema is None:
            raise ValidationError("this connection type takes no config", "input")
        config = cls.schema().load(data)
        try:
            cls().validate(config)
        except ValidationError as exc:  # ValidationError(message, "field") -> {"field": [message]}
            raise ValidationError(exc.normalized_messages()) from None
        except OutboundError as exc:  # its text holds the reason and the URL without query string, never secrets
            raise ValidationError(f"could not be checked with the service: {exc}") from None
        return config

    def validate(self, config: dict[str, Any]) -> None:
        """Checks beyond the schema; raise ``ValidationError(message, field_name)``. The default accepts all.

        ``config`` is the schema's output (defaults filled in). It holds the
        submitted form values, not the service's settings. A check may call the
        service being connected, but only through the client
        :func:`connect_service.outbound_client` returns (SSRF-safe, with the
        service's ``allowed_private_hosts`` and timeouts); catch
        ``OutboundError`` and never put a secret into the message::

            from connect_service import OutboundError, ValidationError, outbound_client

            def validate(self, config):
                try:
                    with outbound_client() as client:
                        resp = client.get(config["url"].rstrip("/") + "/me",
                                          headers={"Authorization": "Bearer " + config["api_key"]})
                except OutboundError as exc:  # refused destination, timeout, TLS or connection error
                    raise ValidationError(f"could not be reached: {exc.reason}", "url")
                if resp.status_code == 401:
                    raise ValidationError("was rejected by the service", "api_key")

        An ``OutboundError`` left uncaught is answered as a 400 about the
        whole ``config``.
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
