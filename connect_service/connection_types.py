"""Base classes a plugin author subclasses: ``ConnectionType`` and ``OAuth2Provider``.

A minimal credentials type, in a plugin module registered under the
``connect_service`` entry-point group::

    from marshmallow import Schema
    from connect_service import ConnectionType, hookimpl, fields

    class HelpdeskConfig(Schema):
        url = fields.Url(required=True, metadata={"label": "Helpdesk URL"})
        api_key = fields.Secret(required=True, metadata={"label": "API key"})

    class Helpdesk(ConnectionType):
        name = "acme.connections.Helpdesk"
        title = "Acme Helpdesk"
        schema = HelpdeskConfig

        def validate(self, config):
            if not config["api_key"].startswith("hd_"):
                raise ValidationError("must start with hd_", "api_key")

    @hookimpl
    def register_connection_types():
        return [Helpdesk]
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import marshmallow
from marshmallow import Schema, ValidationError, validate

__all__ = ["ConnectionType", "OAuth2Provider", "ProviderError", "ValidationError", "form_description", "AUTH_KINDS"]

AUTH_KINDS = ("credentials", "oauth2", "action_account")


class ConnectionType:
    """One kind of connection an app can require (``spec.data.type``).

    Class attributes:

    - ``name``: the type string requirements use, e.g. ``dynamiq.connections.HttpApiKey``.
    - ``title``: human name shown on the hosted page.
    - ``auth``: ``"credentials"`` (a form), ``"oauth2"`` or ``"action_account"``.
    - ``schema``: a marshmallow ``Schema`` class for the submitted ``config``; it
      also describes the hosted page's form (see :func:`form_description`).
      Mark secret fields with ``metadata={"secret": True}`` (or use
      ``connect_service.fields.Secret``).
    - ``connector_name``: the provider/credential family that serves an OAuth2
      or action-account type (``google``, ``oauth2``, ``pipedream``); for a
      credentials type it defaults to ``name``.
    - ``provider``: an :class:`OAuth2Provider` instance for ``oauth2`` types.
    - ``description``: one sentence for listings.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    auth: ClassVar[str] = "credentials"
    schema: ClassVar[type[Schema] | None] = None
    connector_name: ClassVar[str | None] = None
    provider: ClassVar["OAuth2Provider | None"] = None
    description: ClassVar[str] = ""
    #: a credential's ``settings`` schema for connectors that have settings (e.g. pipedream's project_id)
    settings_schema: ClassVar[type[Schema] | None] = None

    @classmethod
    def check_definition(cls) -> None:
        """Raise ``TypeError`` when the class is not a usable connection type."""
        for attr in ("name", "title"):
            if not isinstance(getattr(cls, attr, None), str) or not getattr(cls, attr):
                raise TypeError(f"{cls.__module__}.{cls.__qualname__}: `{attr}` must be a non-empty string")
        if cls.auth not in AUTH_KINDS:
            raise TypeError(f"{cls.name}: auth must be one of {AUTH_KINDS}, got {cls.auth!r}")
        if cls.auth == "credentials":
            if cls.schema is None:
                raise TypeError(f"{cls.name}: a credentials type needs a `schema`")
            if cls.connector_name is None:
                cls.connector_name = cls.name
        elif not cls.connector_name:
            raise TypeError(f"{cls.name}: {cls.auth} types must declare `connector_name`")
        if cls.auth == "oauth2" and not isinstance(cls.provider, OAuth2Provider):
            raise TypeError(f"{cls.name}: oauth2 types need a `provider` (an OAuth2Provider instance)")

    @classmethod
    def secret_fields(cls) -> list[str]:
        """Names of the config fields that are secret (password inputs, never echoed)."""
        if cls.schema is None:
            return []
        return [name for name, f in cls.schema().fields.items() if f.metadata.get("secret")]

    @classmethod
    def load_config(cls, data: Any) -> dict[str, Any]:
        """Validate submitted ``config`` with ``schema`` then :meth:`validate`; raise ``ValidationError``."""
        if cls.schema is None:
            raise ValidationError("this connection type takes no config", "input")
        config = cls.schema().load(data)
        cls().validate(config)
        return config

    def validate(self, config: dict[str, Any]) -> None:
        """Checks beyond the schema. Raise ``ValidationError(message, field_name)``.

        May call out to the service being connected, but only through
        ``connect_service.http.GuardedClient`` (SSRF-safe, with timeouts).
        """

    def sync_status(self, app: Any, user_id: str, requirement: Any) -> None:
        """Action-account types: bring the user's linked-account rows up to date before statuses are read.

        Called on every statuses read; implementations throttle their own
        platform calls and must not raise for a platform outage (statuses
        then answer from what is recorded).
        """

    @classmethod
    def form(cls) -> dict[str, Any]:
        """JSON description of the config form (see :func:`form_description`)."""
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


_FIELD_TYPES = [
    (marshmallow.fields.Url, "url"),
    (marshmallow.fields.Email, "email"),
    (marshmallow.fields.Boolean, "boolean"),
    (marshmallow.fields.Integer, "integer"),
    (marshmallow.fields.Number, "number"),
    (marshmallow.fields.Dict, "object"),
    (marshmallow.fields.List, "list"),
    (marshmallow.fields.String, "string"),
]


def form_description(schema: type[Schema] | Schema) -> dict[str, Any]:
    """Describe a marshmallow schema as a form: ``{"fields": [{name, label, type, secret, required, …}]}``.

    Field ``metadata`` keys read: ``label``, ``help``, ``secret``, ``placeholder``.
    ``OneOf`` validators become ``choices``; a ``load_default`` becomes ``default``.
    """
    instance = schema() if isinstance(schema, type) else schema
    out = []
    for name, f in instance.fields.items():
        if f.dump_only:
            continue
        kind = next((label for cls, label in _FIELD_TYPES if isinstance(f, cls)), "string")
        entry: dict[str, Any] = {
            "name": f.data_key or name,
            "label": f.metadata.get("label") or name.replace("_", " ").capitalize(),
            "type": kind,
            "secret": bool(f.metadata.get("secret")),
            "required": bool(f.required),
        }
        if f.metadata.get("help"):
            entry["help"] = f.metadata["help"]
        if f.metadata.get("placeholder"):
            entry["placeholder"] = f.metadata["placeholder"]
        for v in f.validators:
            if isinstance(v, validate.OneOf):
                entry["choices"] = list(v.choices)
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
    #: client_secret_basic (HTTP Basic) or client_secret_post (in the body)
    token_endpoint_auth_method: str = "client_secret_basic"
    supports_pkce: bool = True
    #: seconds an access token lives when the token response says nothing (None: ask the JWT, else the app default)
    default_token_lifetime: int | None = None
    #: extra authorize parameters always sent (e.g. Notion's ``owner=user``)
    extra_authorize_params: Mapping[str, str] = {}

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

    def parse_token_response(self, status: int, data: Mapping[str, Any]) -> dict[str, Any]:
        """Normalise a token endpoint answer; raise ``ProviderError`` on an error body.

        Override for quirks (e.g. an error reported with HTTP 200).
        """
        if status >= 400 or "error" in data or "access_token" not in data:
            raise ProviderError(str(data.get("error") or f"http_{status}"),
                                str(data.get("error_description") or "")[:200])
        return dict(data)
