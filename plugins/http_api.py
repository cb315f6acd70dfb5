"""Built-in plugin: generic HTTP connections (``HttpApiKey``, ``Http``)."""
from __future__ import annotations

import re

from marshmallow import Schema, ValidationError, validate

from connect_service import ConnectionType, fields, hookimpl

#: RFC 9110 field-name (token) characters
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class HttpApiKeyConfig(Schema):
    url = fields.Url(required=True, metadata={"label": "API URL", "placeholder": "https://api.example.com"})
    api_key = fields.Secret(required=True, metadata={"label": "API key"})


class HttpApiKey(ConnectionType):
    """An HTTP API reached with an API key. Makes no network call to validate."""

    name = "dynamiq.connections.HttpApiKey"
    title = "HTTP API key"
    description = "An HTTP API URL and the API key that authorizes requests to it."
    schema = HttpApiKeyConfig

    @classmethod
    def proxy_base_url(cls, config, credential_settings):
        """The submitted ``url``: each connection names its own API."""
        return config.get("url")

    @classmethod
    def proxy_injection(cls, requirement_data):
        """``Authorization: Bearer <api_key>``, unless the requirement's ``spec.data.header`` names another header."""
        header = requirement_data.get("header")
        if isinstance(header, str) and HEADER_NAME.fullmatch(header) and header.lower() != "authorization":
            return "header", header
        return "bearer", None


def _check_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        if not HEADER_NAME.fullmatch(name):
            raise ValidationError(f"{name[:40]!r} is not a valid header name")
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValidationError(f"the value of {name!r} must not contain line breaks")


class HttpConfig(Schema):
    url = fields.Url(required=True, metadata={"label": "URL", "placeholder": "https://api.example.com"})
    method = fields.String(load_default="POST", validate=validate.OneOf(METHODS, error="must be one of {choices}"),
                           metadata={"label": "HTTP method"})
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict, validate=_check_headers,
                          metadata={"label": "Headers", "secret": True,
                                    "help": "JSON object of headers sent with every request, "
                                            "e.g. {\"Authorization\": \"Bearer …\"}"})


class Http(ConnectionType):
    """An HTTP endpoint with a method and headers (headers may carry secrets, so they are secret)."""

    name = "dynamiq.connections.Http"
    title = "HTTP endpoint"
    description = "An HTTP endpoint, its method and the headers sent with each request."
    schema = HttpConfig


@hookimpl
def register_connection_types():
    return [HttpApiKey, Http]
