"""``connect-service deliver-webhooks``: send the outbox's pending deliveries, signed per Standard Webhooks.

Any number of deliverers may run on any number of hosts. Each claims a batch
of due deliveries by writing a lease (owner and expiry, on the database
clock) in a short transaction; on PostgreSQL the candidate rows are read
``FOR UPDATE SKIP LOCKED`` so deliverers never wait for each other, on SQLite
the ``BEGIN IMMEDIATE`` write lock serialises the claims. No transaction is
open while a receiver is called. The outcome of each delivery is committed
as soon as it is known, so a deliverer killed mid-batch loses at most the
one in flight: its lease runs out and another deliverer sends it again (the
same ``webhook-id``, so receivers can deduplicate), while deliveries a
receiver already answered 2xx stay delivered.

A 2xx answer means delivered; anything else (another status, a redirect, a
timeout, a refused address) is retried after :data:`RETRY_DELAYS` with
jitter, then the delivery is ``failed``. An endpoint that has failed without
a single success for :data:`DISABLE_AFTER` is disabled (``disabled_at``).
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import logging
import random
import time
from typing import Any, Callable

from .db import is_postgres, write_transaction, db_now
from .extensions import settings
from .http import GuardedClient, OutboundError
from .outbound import outbound_client
from .models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from .refresh import lease_owner
from .webhooks import signing_secrets

log = logging.getLogger(__name__)

#: seconds to wait after the 1st, 2nd, … failed attempt; after the last the delivery is failed
RETRY_DELAYS = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600)
#: each delay is multiplied by a random factor in this range, so retries of many events spread out
JITTER = (0.8, 1.2)
#: an endpoint failing continuously (no 2xx in between) this long is disabled
DISABLE_AFTER = datetime.timedelta(days=5)
#: seconds a receiver has to answer
TIMEOUT_SECONDS = 10.0
#: a receiver's answer body is not used: read at most this much of it
MAX_RESPONSE_BYTES = 64 * 1024


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``"{msg_id}.{timestamp}.{body}"`` keyed by the base64-decoded secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers; several secrets (during a rotation) give several signatures."""
    return {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets)}


def retry_delay(attempts: int) -> float | None:
    """Seconds until the next attempt after ``attempts`` failed ones (with jitter), or None: give up."""
    if attempts > len(RETRY_DELAYS):
        return None
    return RETRY_DELAYS[attempts - 1] * random.uniform(*JITTER)


def _due(now: datetime.datetime):
    disabled = WebhookEndpoint.select(WebhookEndpoint.id).where(WebhookEndpoint.disabled_at.is_null(False))
    return ((WebhookDelivery.status == "pending") & (WebhookDelivery.next_attempt_at <= now)
            & (WebhookDelivery.lease_until.is_null() | (WebhookDelivery.lease_until < now))
            & WebhookDelivery.endpoint.not_in(disabled))


def claim(owner: str, batch_size: int, lease_seconds: int) -> list[str]:
    """Lease up to ``batch_size`` due deliveries to ``owner``; their ids, oldest due first."""
    with write_transaction():
        now = db_now()
        query = (WebhookDelivery.select(WebhookDelivery.id).where(_due(now))
                 .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(batch_size))
        if is_postgres():
            query = query.for_update("FOR UPDATE", skip_locked=True)
        ids = [row.id for row in query]
        if not ids:
            return []
        WebhookDelivery.update(lease_until=now + datetime.timedelta(seconds=lease_seconds), lease_owner=owner).where(
            WebhookDelivery.id.in_(ids), _due(now)).execute()
    return [row.id for row in WebhookDelivery.select(WebhookDelivery.id).where(
        WebhookDelivery.id.in_(ids), WebhookDelivery.lease_owner == owner)]


def release(owner: str) -> int:
    """Give back every lease ``owner`` still holds (deliveries it will not send now)."""
    return WebhookDelivery.update(lease_until=None, lease_owner=None).where(
        WebhookDelivery.lease_owner == owner, WebhookDelivery.status == "pending").execute()


def _send(client: GuardedClient, delivery: WebhookDelivery) -> tuple[bool, int | None, str | None]:
    event: WebhookEvent = delivery.event
    endpoint: WebhookEndpoint = delivery.endpoint
    body = json.dumps(event.payload, separators=(",", ":")).encode()
    headers = signed_headers(signing_secrets(endpoint, db_now()), event.id, int(time.time()), body)
    try:
        resp = client.post(endpoint.url, data=body, headers=headers, allow_redirects=False)
    except OutboundError as exc:
        return False, None, f"{exc.code}: {exc.reason}"[:500]
    if 200 <= resp.status_code < 300:
        return True, resp.status_code, None
    return False, resp.status_code, f"the receiver answered HTTP {resp.status_code}"


def _record(delivery: WebhookDelivery, owner: str, ok: bool, status_code: int | None, error: str | None) -> str:
    """Commit one attempt's outcome (only while ``owner`` still holds the lease); the new status."""
    with write_transaction():
        now = db_now()
        attempts = delivery.attempts + 1
        mine = (WebhookDelivery.id == delivery.id) & (WebhookDelivery.lease_owner == owner)
        if ok:
            WebhookDelivery.update(status="delivered", attempts=attempts, last_status_code=status_code,
                                   last_error=None, delivered_at=now, lease_until=None, lease_owner=None,
                                   updated_at=now).where(mine).execute()
            WebhookEndpoint.update(failing_since=None).where(WebhookEndpoint.id == delivery.endpoint_id).execute()
            return "delivered"
        delay = retry_delay(attempts)
        status = "pending" if delay is not None else "failed"
        next_at = now + datetime.timedelta(seconds=delay) if delay is not None else now
        WebhookDelivery.update(status=status, attempts=attempts, last_status_code=status_code, last_error=error,
                               next_attempt_at=next_at, lease_until=None, lease_owner=None,
                               updated_at=now).where(mine).execute()
        endpoint = WebhookEndpoint.get_by_id(delivery.endpoint_id)
        if endpoint.failing_since is None:
            WebhookEndpoint.update(failing_since=now).where(WebhookEndpoint.id == endpoint.id,
                                                            WebhookEndpoint.failing_since.is_null()).execute()
        elif now - endpoint.failing_since >= DISABLE_AFTER and endpoint.disabled_at is None:
            WebhookEndpoint.update(disabled_at=now, updated_at=now).where(WebhookEndpoint.id == endpoint.id).execute()
            WebhookDelivery.update(status="failed", last_error="the endpoint was disabled after failing for 5 days",
                                   updated_at=now).where(WebhookDelivery.endpoint == endpoint.id,
                                                         WebhookDelivery.status == "pending").execute()
            log.warning("webhook endpoint disabled after failing for 5 days",
                        extra={"fields": {"endpoint_id": endpoint.id}})
            return "failed"
        return status


def deliver_batch(client: GuardedClient, owner: str, ids: list[str], lease_seconds: int) -> dict[str, int]:
    """Send each claimed delivery and commit its outcome at once; stop (and release) when the lease runs short."""
    counts = {"delivered": 0, "pending": 0, "failed": 0}
    started = time.monotonic()
    for delivery_id in ids:
        if time.monotonic() - started > lease_seconds - 2 * TIMEOUT_SECONDS:
            break  # another deliverer may claim the rest once the lease ends: do not race it
        delivery = (WebhookDelivery.select(WebhookDelivery, WebhookEvent, WebhookEndpoint).join(WebhookEvent)
                    .switch(WebhookDelivery).join(WebhookEndpoint)
                    .where(WebhookDelivery.id == delivery_id, WebhookDelivery.lease_owner == owner,
                           WebhookDelivery.status == "pending").first())
        if delivery is None:
            continue  # retried, deleted or re-claimed meanwhile
        ok, status_code, error = _send(client, delivery)
        counts[_record(delivery, owner, ok, status_code, error)] += 1
    release(owner)
    return counts


def run(*, once: bool, batch_size: int = 10, interval: float = 2.0,
        echo: Callable[[str], Any] = print, should_stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
    """Deliver until nothing is due (``once``) or forever, polling every ``interval`` seconds; the totals."""
    cfg = settings()
    lease_seconds = max(int(cfg["webhook_lease_seconds"]), int(batch_size * TIMEOUT_SECONDS * 2))
    owner = lease_owner("webhooks")
    totals = {"delivered": 0, "pending": 0, "failed": 0}
    with outbound_client(timeout=TIMEOUT_SECONDS, max_redirects=0, user_agent="connect-service-webhooks",
                         max_response_bytes=MAX_RESPONSE_BYTES, max_total_time=TIMEOUT_SECONDS * 2) as client:
        while not should_stop():
            ids = claim(owner, batch_size, lease_seconds)
            if not ids:
                if once:
                    break
                time.sleep(interval)
                continue
            counts = deliver_batch(client, owner, ids, lease_seconds)
            for key, value in counts.items():
                totals[key] += value
            echo(f"deliver-webhooks: {counts['delivered']} delivered, {counts['pending']} to retry, "
                 f"{counts['failed']} failed")
    return totals
