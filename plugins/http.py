"""Built-in plugin: generic HTTP connections (``HttpApiKey``, ``Http``)."""
from __future__ import annotations

from marshmallow import Schema, validate

from connect_service import ConnectionType, fields, hookimpl


class HttpApiKeyConfig(Schema):
    url = fields.Url(required=True, metadata={"label": "API URL", "placeholder": "https://api.example.com"})
    api_key = fields.Secret(required=True, metadata={"label": "API key"})


class HttpApiKey(ConnectionType):
    """An HTTP API reached with an API key. Makes no network call to validate."""

    name = "dynamiq.connections.HttpApiKey"
    title = "HTTP API key"
    description = "An HTTP API URL and the API key that authorizes requests to it."
    schema = HttpApiKeyConfig


class HttpConfig(Schema):
    url = fields.Url(required=True, metadata={"label": "URL", "placeholder": "https://api.example.com"})
    method = fields.String(load_default="POST", validate=validate.OneOf(["GET", "POST", "PUT", "PATCH", "DELETE"]),
                           metadata={"label": "HTTP method"})
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict,
                          metadata={"label": "Headers", "secret": True,
                                    "help": "JSON object of headers sent with every request"})


class Http(ConnectionType):
    """An HTTP endpoint with a method and headers (headers may carry secrets)."""

    name = "dynamiq.connections.Http"
    title = "HTTP endpoint"
    description = "An HTTP endpoint, its method and the headers sent with each request."
    schema = HttpConfig


@hookimpl
def register_connection_types():
    return [HttpApiKey, Http]
