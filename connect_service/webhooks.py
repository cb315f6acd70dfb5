"""Webhook endpoints and their deliveries (Standard Webhooks): the rules behind ``/v1/webhook-endpoints``.

An endpoint receives the org's events (:mod:`connect_service.outbox`), or one
app's when it names ``app_id``. Its secret (``whsec_`` + base64 of 32 random
bytes) is shown once, when created or rotated, and stored encrypted. After a
rotation the previous secret keeps signing beside the new one for
:data:`ROTATION_OVERLAP`. Sending is :mod:`connect_service.webhook_delivery`.
"""
from __future__ import annotations

import base64
import datetime
import secrets
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from . import audit, errors
from .db import write_transaction
from .extensions import keyring, settings
from .fields import HTTP_URL, NonBlank
from .hosts import outbound_url_problem
from .models import App, Organization, WebhookDelivery, WebhookEndpoint, WebhookEvent, utcnow
from .outbox import EVENT_TYPES
from .timestamps import iso

TABLE = "webhook_endpoint"
#: how long a rotated-out secret still signs beside the new one
ROTATION_OVERLAP = datetime.timedelta(hours=24)
SECRET_PREFIX = "whsec_"
DELIVERY_STATUSES = ("pending", "delivered", "failed")


#: OpenAPI: what _check_url accepts (plain http is for the operator's private hosts, which the document cannot know)
URL_DOC = {"format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]" + HTTP_URL[len("^[Hh][Tt][Tt][Pp][Ss]?"):]}


class EndpointCreateSchema(ma.Schema):
    """``POST /v1/webhook-endpoints``."""

    url = fields.String(required=True, validate=validate.Length(min=1, max=2000), metadata={
        "description": "https URL (http only for hosts in allowed_private_hosts)",
        "example": "https://example.com/webhooks/connect", **URL_DOC})
    events = fields.List(fields.String(validate=validate.OneOf(EVENT_TYPES)), load_default=list, metadata={
        "description": "event types to receive; empty or absent: all"})
    app_id = NonBlank(load_default=None, allow_none=True, metadata={
        "description": "only this app's events; absent: every app of the organization"})
    description = fields.String(load_default="", validate=validate.Length(max=500))


def _check_url(value: str) -> None:
    if problem := outbound_url_problem(value, settings()["allowed_private_hosts"]):
        raise errors.BadRequest({"url": problem})


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes (the Standard Webhooks form)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _seal(endpoint_id: str, column: str, secret: str) -> str:
    return keyring().encrypt(secret.encode(), TABLE, column, endpoint_id)


def signing_secrets(endpoint: WebhookEndpoint, now: datetime.datetime) -> list[str]:
    """The secrets that sign a delivery now: the current one, plus the previous one during its overlap."""
    out = [keyring().decrypt(endpoint.secret_encrypted, TABLE, "secret", endpoint.id).decode()]
    if endpoint.previous_secret_encrypted and endpoint.previous_secret_until and endpoint.previous_secret_until > now:
        out.append(keyring().decrypt(endpoint.previous_secret_encrypted, TABLE, "previous_secret",
                                     endpoint.id).decode())
    return out


def endpoint_view(endpoint: WebhookEndpoint, secret: str | None = None) -> dict[str, Any]:
    """The public view; ``secret`` only in the answer that created or rotated it."""
    out = {"id": endpoint.id, "url": endpoint.url, "events": list(endpoint.events or EVENT_TYPES),
           "app_id": endpoint.app_id, "description": endpoint.description,
           "disabled": endpoint.disabled_at is not None, "disabled_at": iso(endpoint.disabled_at),
           "failing_since": iso(endpoint.failing_since), "created_at": iso(endpoint.created_at)}
    if secret is not None:
        out["secret"] = secret
    return out


def create_endpoint(org: Organization, data: dict[str, Any]) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (shown once)."""
    _check_url(data["url"])
    if data.get("app_id") is not None and App.get_or_none(App.id == data["app_id"], App.org == org.id) is None:
        raise errors.BadRequest({"app_id": "is not an app of this organization"})
    secret = new_secret()
    endpoint = WebhookEndpoint(org=org.id, app=data.get("app_id"), url=data["url"],
                               events=sorted(set(data.get("events") or [])), description=data.get("description", ""))
    endpoint.secret_encrypted = _seal(endpoint.id, "secret", secret)
    with write_transaction():
        endpoint.save(force_insert=True)
        audit.record("webhook_endpoint.created", org_id=org.id, target_type="webhook_endpoint",
                     target_id=endpoint.id, app_id=endpoint.app_id)
    return endpoint, secret


def get_endpoint(org_id: str, endpoint_id: str) -> WebhookEndpoint:
    """An endpoint of the org, else 404."""
    endpoint = WebhookEndpoint.get_or_none(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.org == org_id)
    if endpoint is None:
        raise errors.NotFound()
    return endpoint


def org_endpoints(org_id: str):
    """The org's endpoints (a query, for pagination)."""
    return WebhookEndpoint.select().where(WebhookEndpoint.org == org_id)


def delete_endpoint(endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint and its deliveries."""
    with write_transaction():
        WebhookEndpoint.delete().where(WebhookEndpoint.id == endpoint.id).execute()
        audit.record("webhook_endpoint.deleted", org_id=endpoint.org_id, target_type="webhook_endpoint",
                     target_id=endpoint.id, app_id=endpoint.app_id)


def rotate_secret(endpoint: WebhookEndpoint) -> tuple[WebhookEndpoint, str]:
    """A new secret; the current one keeps signing beside it for :data:`ROTATION_OVERLAP`."""
    secret = new_secret()
    now = utcnow()
    with write_transaction():
        current = WebhookEndpoint.get_by_id(endpoint.id)
        old = keyring().decrypt(current.secret_encrypted, TABLE, "secret", current.id).decode()
        current.previous_secret_encrypted = _seal(current.id, "previous_secret", old)
        current.previous_secret_until = now + ROTATION_OVERLAP
        current.secret_encrypted = _seal(current.id, "secret", secret)
        current.updated_at = now
        current.save()
        audit.record("webhook_endpoint.secret_rotated", org_id=current.org_id, target_type="webhook_endpoint",
                     target_id=current.id, app_id=current.app_id)
    return current, secret


# --- deliveries ---------------------------------------------------------------------------------

def delivery_view(delivery: WebhookDelivery) -> dict[str, Any]:
    """``GET /v1/webhook-deliveries`` item."""
    return {"id": delivery.id, "event_id": delivery.event_id, "event_type": delivery.event.type,
            "endpoint_id": delivery.endpoint_id, "status": delivery.status, "attempts": delivery.attempts,
            "last_status_code": delivery.last_status_code, "last_error": delivery.last_error,
            "next_attempt_at": iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
            "created_at": iso(delivery.created_at)}


def org_deliveries(org_id: str, filters: dict[str, Any]):
    """The org's deliveries, filtered by ``endpoint_id`` and ``status`` (a query, for pagination)."""
    query = (WebhookDelivery.select(WebhookDelivery, WebhookEvent).join(WebhookEvent)
             .where(WebhookEvent.org == org_id))
    if filters.get("endpoint_id"):
        query = query.where(WebhookDelivery.endpoint == filters["endpoint_id"])
    if filters.get("status"):
        query = query.where(WebhookDelivery.status == filters["status"])
    return query


def get_delivery(org_id: str, delivery_id: str) -> WebhookDelivery:
    """A delivery of the org, else 404."""
    found = org_deliveries(org_id, {}).where(WebhookDelivery.id == delivery_id).first()
    if found is None:
        raise errors.NotFound()
    return found


def retry_delivery(delivery: WebhookDelivery) -> WebhookDelivery:
    """Queue the delivery again at once (pending, due now, any lease dropped); 409 for a disabled endpoint."""
    endpoint = WebhookEndpoint.get_by_id(delivery.endpoint_id)
    if endpoint.disabled_at is not None:
        raise errors.Conflict({"endpoint_id": "is disabled after failing for days; create a new endpoint"})
    now = utcnow()
    WebhookDelivery.update(status="pending", next_attempt_at=now, lease_until=None, lease_owner=None,
                           updated_at=now).where(WebhookDelivery.id == delivery.id).execute()
    return get_delivery(endpoint.org_id, delivery.id)
