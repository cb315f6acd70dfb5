"""marshmallow schemas of the API's answers; request bodies are declared by the domain modules that judge them."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate


class AppSchema(ma.Schema):
    id = fields.String()
    name = fields.String()
    slug = fields.String()
    hostname = fields.String()
    visibility = fields.String()
    return_urls = fields.List(fields.String())
    frame_ancestors = fields.List(fields.String())
    deployed_version = fields.Integer(allow_none=True)
    user_verification = fields.String(metadata={"enum": ["none", "required"]})
    user_verification_secret = fields.String(metadata={
        "description": "only in the answer that generated it (creation, switching on, rotation)"})
    created_at = fields.String()
    updated_at = fields.String()


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
