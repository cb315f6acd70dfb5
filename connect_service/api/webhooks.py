"""``/v1/webhook-endpoints`` and ``/v1/webhook-deliveries``: the HTTP face of ``webhooks.py``."""
from __future__ import annotations

import marshmallow as ma
from flask import g
from flask.views import MethodView
from marshmallow import fields, validate

from .. import webhooks
from ..auth import require_access_key
from ..models import WebhookDelivery, WebhookEndpoint
from ..fields import NonBlank
from ..webhooks import DELIVERY_STATUSES, EVENT_TYPES, EndpointCreateSchema
from . import Blueprint, schemas
from .common import PageArgs, paginate, resolve_path
from .openapi import ACCESS_KEY

blp = Blueprint("webhooks", __name__, url_prefix="/v1", description="Webhook endpoints and deliveries")


class WebhookEndpointSchema(ma.Schema):
    id = fields.String(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(validate=validate.OneOf(EVENT_TYPES)), required=True)
    app_id = fields.String(required=True, allow_none=True)
    description = fields.String(required=True)
    disabled = fields.Boolean(required=True, metadata={"description": "true after failing continuously for 5 days"})
    disabled_at = schemas.timestamp(allow_none=True)
    failing_since = schemas.timestamp(allow_none=True)
    secret = fields.String(metadata={"description": "`whsec_…`, only in the answer that created or rotated it"})
    created_at = schemas.timestamp()


class WebhookDeliverySchema(ma.Schema):
    id = fields.String(required=True)
    event_id = fields.String(required=True, metadata={"description": "the `webhook-id` header, stable across retries"})
    event_type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    endpoint_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(DELIVERY_STATUSES))
    attempts = fields.Integer(required=True)
    last_status_code = fields.Integer(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True)
    next_attempt_at = schemas.timestamp(allow_none=True, metadata={"description": "while pending; else null"})
    created_at = schemas.timestamp()


class DeliveryListArgs(PageArgs):
    endpoint_id = NonBlank()
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))


def _endpoint(endpoint_id: str) -> WebhookEndpoint:
    return webhooks.get_endpoint(g.org.id, endpoint_id)


def _delivery(delivery_id: str) -> WebhookDelivery:
    return webhooks.get_delivery(g.org.id, delivery_id)


@blp.route("/webhook-endpoints")
class Endpoints(MethodView):
    decorators = [require_access_key]

    @blp.operation("createWebhookEndpoint", 400, 401, 413, 415, security=ACCESS_KEY)
    @blp.arguments(EndpointCreateSchema)
    @blp.response(201, WebhookEndpointSchema)
    def post(self, data):
        """Create a webhook endpoint (its `secret` is shown only in this answer)"""
        return webhooks.endpoint_view(*webhooks.create_endpoint(g.org, data))

    @blp.operation("listWebhookEndpoints", 400, 401, security=ACCESS_KEY)
    @blp.arguments(PageArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(WebhookEndpointSchema))
    def get(self, **args):
        """List webhook endpoints"""
        rows, cursor = paginate(webhooks.org_endpoints(g.org.id), WebhookEndpoint, args)
        return {"data": [webhooks.endpoint_view(e) for e in rows], "next_cursor": cursor}


@blp.route("/webhook-endpoints/<string:endpoint_id>")
class EndpointItem(MethodView):
    decorators = [resolve_path(endpoint_id=_endpoint), require_access_key]

    @blp.operation("getWebhookEndpoint", 401, security=ACCESS_KEY)
    @blp.response(200, WebhookEndpointSchema)
    def get(self, endpoint):
        """Get a webhook endpoint (never its secret)"""
        return webhooks.endpoint_view(endpoint)

    @blp.operation("deleteWebhookEndpoint", 401, security=ACCESS_KEY)
    @blp.response(204)
    def delete(self, endpoint):
        """Delete a webhook endpoint and its deliveries"""
        webhooks.delete_endpoint(endpoint)


@blp.route("/webhook-endpoints/<string:endpoint_id>/rotate-secret")
class EndpointRotate(MethodView):
    decorators = [resolve_path(endpoint_id=_endpoint), require_access_key]

    @blp.operation("rotateWebhookEndpointSecret", 401, security=ACCESS_KEY)
    @blp.response(200, WebhookEndpointSchema)
    def post(self, endpoint):
        """Rotate the secret: the old one keeps signing beside the new one for 24 h"""
        return webhooks.endpoint_view(*webhooks.rotate_secret(endpoint))


@blp.route("/webhook-deliveries")
class Deliveries(MethodView):
    decorators = [require_access_key]

    @blp.operation("listWebhookDeliveries", 400, 401, security=ACCESS_KEY)
    @blp.arguments(DeliveryListArgs, location="query", as_kwargs=True)
    @blp.response(200, schemas.list_of(WebhookDeliverySchema))
    def get(self, **args):
        """List webhook deliveries (filters: endpoint_id, status)"""
        rows, cursor = paginate(webhooks.org_deliveries(g.org.id, args), WebhookDelivery, args)
        return {"data": [webhooks.delivery_view(d) for d in rows], "next_cursor": cursor}


@blp.route("/webhook-deliveries/<string:delivery_id>/retry")
class DeliveryRetry(MethodView):
    decorators = [resolve_path(delivery_id=_delivery), require_access_key]

    @blp.operation("retryWebhookDelivery", 401, 409, security=ACCESS_KEY)
    @blp.response(200, WebhookDeliverySchema)
    def post(self, delivery):
        """Queue a delivery again at once"""
        return webhooks.delivery_view(webhooks.retry_delivery(delivery))
