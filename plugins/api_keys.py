"""Built-in plugin: popular services reached with an API key (and AWS with an access key pair).

Each type validates the shape of what it stores and makes no network call.
"""
from __future__ import annotations

from marshmallow import Schema

from connect_service import ConnectionType, fields, hookimpl


def api_key_schema(service: str, placeholder: str = "", url: str | None = None) -> type[Schema]:
    """A ``{api_key}`` schema (plus a required ``url`` when ``url`` gives its placeholder)."""
    attrs: dict[str, fields.Field] = {}
    if url is not None:
        attrs["url"] = fields.Url(required=True, metadata={"label": f"{service} URL", "placeholder": url})
    attrs["api_key"] = fields.Secret(required=True, metadata={"label": f"{service} API key",
                                                               "placeholder": placeholder})
    return Schema.from_dict(attrs, name=f"{service}Config")


class OpenAI(ConnectionType):
    name = "dynamiq.connections.OpenAI"
    title = "OpenAI"
    description = "An OpenAI API key."
    schema = api_key_schema("OpenAI", "sk-…")
    api_base_url = "https://api.openai.com"


class Anthropic(ConnectionType):
    name = "dynamiq.connections.Anthropic"
    title = "Anthropic"
    description = "An Anthropic API key."
    schema = api_key_schema("Anthropic", "sk-ant-…")
    api_base_url = "https://api.anthropic.com"
    proxy_auth = ("header", "x-api-key")


class Gemini(ConnectionType):
    name = "dynamiq.connections.Gemini"
    title = "Google Gemini"
    description = "A Google AI Studio (Gemini API) key."
    schema = api_key_schema("Gemini")
    api_base_url = "https://generativelanguage.googleapis.com"
    proxy_auth = ("query", "key")


class Mistral(ConnectionType):
    name = "dynamiq.connections.Mistral"
    title = "Mistral AI"
    description = "A Mistral AI API key."
    schema = api_key_schema("Mistral")


class Cohere(ConnectionType):
    name = "dynamiq.connections.Cohere"
    title = "Cohere"
    description = "A Cohere API key."
    schema = api_key_schema("Cohere")


class Pinecone(ConnectionType):
    name = "dynamiq.connections.Pinecone"
    title = "Pinecone"
    description = "A Pinecone API key."
    schema = api_key_schema("Pinecone", "pcsk_…")


class Qdrant(ConnectionType):
    name = "dynamiq.connections.Qdrant"
    title = "Qdrant"
    description = "A Qdrant cluster URL and its API key."
    schema = api_key_schema("Qdrant", url="https://xyz.eu-central.aws.cloud.qdrant.io:6333")


class AWSConfig(Schema):
    # An access key id identifies a key (AWS shows it in consoles and logs), so it is not secret;
    # the secret access key is.
    access_key_id = fields.NonBlank(
        required=True, validate=fields.FullMatch(
            r"^[A-Z0-9]{16,128}$", error="must be 16-128 capital letters and digits, like AKIAIOSFODNN7EXAMPLE"),
        metadata={"label": "Access key ID", "placeholder": "AKIA…"})
    secret_access_key = fields.Secret(required=True, metadata={"label": "Secret access key"})
    region = fields.NonBlank(
        load_default="us-east-1",
        validate=fields.FullMatch(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$", error="must be an AWS region such as us-east-1"),
        metadata={"label": "Region", "placeholder": "us-east-1"})


class AWS(ConnectionType):
    name = "dynamiq.connections.AWS"
    title = "Amazon Web Services"
    description = "An AWS access key pair and the default region."
    schema = AWSConfig


@hookimpl
def register_connection_types():
    return [OpenAI, Anthropic, Gemini, Mistral, Cohere, Pinecone, Qdrant, AWS]
