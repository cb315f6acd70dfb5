"""marshmallow schemas of the API's answers; request bodies are declared by the domain modules that judge them.

Every field an answer always carries is ``required`` (generated clients then
type it without ``Unset``), and every one that may be null says so with
``allow_none`` (OpenAPI 3.1 ``type: [..., "null"]``). Timestamps are :func:`timestamp`.
"""
from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from ..requirements import SpecSchema


def timestamp(**kwargs: Any) -> fields.String:
    """An ISO 8601 UTC timestamp (``2026-11-23T08:30:00Z``), OpenAPI ``format: date-time``; required by default."""
    kwargs.setdefault("required", True)
    metadata = {"format": "date-time", "example": "2026-11-23T08:30:00Z", **kwargs.pop("metadata", {})}
    return fields.String(metadata=metadata, **kwargs)


class AppSchema(ma.Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    slug = fields.String(required=True)
    hostname = fields.String(required=True)
    visibility = fields.String(required=True, validate=validate.OneOf(["public", "private"]))
    return_urls = fields.List(fields.String(), required=True)
    frame_ancestors = fields.List(fields.String(), required=True)
    deployed_version = fields.Integer(required=True, allow_none=True)
    user_verification = fields.String(required=True, validate=validate.OneOf(["none", "required"]))
    user_verification_secret = fields.String(metadata={
        "description": "only in the answer that generated it (creation, switching on, rotation)"})
    created_at = timestamp()
    updated_at = timestamp()


class RequirementSchema(ma.Schema):
    id = fields.String(required=True)
    type = fields.String(required=True)
    title = fields.String(required=True)
    description = fields.String(required=True)
    spec = fields.Nested(SpecSchema, required=True)


class RequirementWithKeySchema(RequirementSchema):
    key = fields.String(required=True)


class RequirementStatusSchema(RequirementSchema):
    status = fields.String(required=True, validate=validate.OneOf(["completed", "pending"]))


class VersionSchema(ma.Schema):
    number = fields.Integer(required=True)
    requirements = fields.List(fields.Nested(RequirementWithKeySchema), required=True)
    created_at = timestamp()
    deployed_at = timestamp(allow_none=True)


def list_of(item_schema, paged: bool = True):
    """A ``{"data": [...], "next_cursor"}`` envelope schema."""
    attrs = {"data": fields.List(fields.Nested(item_schema), required=True)}
    if paged:
        attrs["next_cursor"] = fields.String(allow_none=True, required=True)
    name = item_schema.__name__.replace("Schema", "") + ("Page" if paged else "List")
    return ma.Schema.from_dict(attrs, name=name)


class MessageSchema(ma.Schema):
    message = fields.String(required=True)
