"""marshmallow schemas shared by the API modules (request bodies and responses)."""
from __future__ import annotations

import re

import marshmallow as ma
from marshmallow import fields, validate

from ..fields import NonBlank

HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def validate_hostname(value: str) -> None:
    if not HOSTNAME_RE.match(value.lower()):
        raise ma.ValidationError("must be a hostname such as helpdesk.example.com (no scheme, port or path)")


def validate_return_url(value: str) -> None:
    from ..hosts import url_host

    try:  # http(s) only; no user-info, whitespace, control characters, backslashes or bad ports
        url_host(value)
    except ValueError:
        raise ma.ValidationError("must be an absolute http(s) URL") from None


class HostnameField(NonBlank):
    """An app hostname: lowercase DNS name, not an IP address and not the service's own host."""

    def _deserialize(self, value, attr, data, **kwargs):
        import ipaddress
        from urllib.parse import urlsplit

        from flask import current_app

        text = super()._deserialize(value, attr, data, **kwargs).strip().lower().rstrip(".")
        validate_hostname(text)
        try:
            ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            raise ma.ValidationError("must be a DNS name, not an IP address")
        if text == urlsplit(current_app.config["CONNECT"]["public_url"]).hostname:
            raise ma.ValidationError("is the service's own host (public_url), which serves the management API")
        return text


class AppCreateSchema(ma.Schema):
    name = NonBlank(required=True, validate=validate.Length(max=200))
    hostname = HostnameField(required=True)
    visibility = fields.String(load_default="private", validate=validate.OneOf(["public", "private"]))
    slug = fields.String(validate=validate.Regexp(SLUG_RE, error="must be lowercase letters, digits and dashes"))
    return_urls = fields.List(fields.String(validate=validate_return_url), load_default=list)
    frame_ancestors = fields.List(fields.String(validate=validate_return_url), load_default=list,
                                  metadata={"description": "origins allowed to frame the hosted page"})


class AppPatchSchema(ma.Schema):
    name = NonBlank(validate=validate.Length(max=200))
    hostname = HostnameField()
    visibility = fields.String(validate=validate.OneOf(["public", "private"]))
    slug = fields.String(validate=validate.Regexp(SLUG_RE, error="must be lowercase letters, digits and dashes"))
    return_urls = fields.List(fields.String(validate=validate_return_url))
    frame_ancestors = fields.List(fields.String(validate=validate_return_url))


class AppSchema(ma.Schema):
    id = fields.String()
    name = fields.String()
    slug = fields.String()
    hostname = fields.String()
    visibility = fields.String()
    return_urls = fields.List(fields.String())
    frame_ancestors = fields.List(fields.String())
    deployed_version = fields.Integer(allow_none=True)
    created_at = fields.String()
    updated_at = fields.String()


class SpecSchema(ma.Schema):
    type = NonBlank(required=True)
    data = fields.Dict(required=True)


class RequirementInSchema(ma.Schema):
    key = NonBlank(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_.:-]{1,100}$",
                                                           error="must be 1-100 letters, digits, _ . : -"))
    type = NonBlank(required=True)
    title = NonBlank(required=True, validate=validate.Length(max=200))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    spec = fields.Nested(SpecSchema, required=True)


class VersionCreateSchema(ma.Schema):
    requirements = fields.List(fields.Nested(RequirementInSchema), required=True)


class RequirementSchema(ma.Schema):
    id = fields.String(required=True)
    type = fields.String(required=True)
    title = fields.String(required=True)
    description = fields.String(required=True)
    spec = fields.Dict(required=True)


class RequirementWithKeySchema(RequirementSchema):
    key = fields.String()


class RequirementStatusSchema(RequirementSchema):
    status = fields.String(required=True, validate=validate.OneOf(["completed", "pending"]))


class VersionSchema(ma.Schema):
    number = fields.Integer()
    requirements = fields.List(fields.Nested(RequirementWithKeySchema))
    created_at = fields.String()
    deployed_at = fields.String(allow_none=True)


def list_of(item_schema, paged: bool = True):
    """A ``{"data": [...], "next_cursor"}`` envelope schema."""
    attrs = {"data": fields.List(fields.Nested(item_schema), required=True)}
    if paged:
        attrs["next_cursor"] = fields.String(allow_none=True, required=True)
    name = item_schema.__name__.replace("Schema", "") + ("Page" if paged else "List")
    return ma.Schema.from_dict(attrs, name=name)


class MessageSchema(ma.Schema):
    message = fields.String(required=True)
