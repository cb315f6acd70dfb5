"""marshmallow fields for connection-type schemas.

``Url`` accepts only http(s); ``Secret`` is a non-blank string shown as a
password input and never echoed back.
"""
from __future__ import annotations

from marshmallow import fields, validate
from marshmallow.fields import *  # noqa: F401,F403  (so plugins need one import)


class Url(fields.Url):
    """An absolute http:// or https:// URL (other schemes are refused)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("schemes", {"http", "https"})
        kwargs.setdefault("require_tld", False)
        super().__init__(**kwargs)


class Secret(fields.String):
    """A secret string (API key, password): required input renders as a password field."""

    def __init__(self, **kwargs):
        metadata = dict(kwargs.pop("metadata", {}) or {})
        metadata.setdefault("secret", True)
        kwargs.setdefault("validate", validate.Length(min=1, error="cannot be blank"))
        super().__init__(metadata=metadata, **kwargs)


class NonBlank(fields.String):
    """A string that may not be empty or whitespace."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not text.strip():
            raise self.make_error("blank")
        return text

    default_error_messages = {"blank": "cannot be blank"}
