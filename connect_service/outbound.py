"""The guarded HTTP client built from the running service's settings.

Every outbound client of the core (OAuth token endpoints, the proxy, the
action-account facade's ``ctx.http``, webhook delivery) and of plugins (a
``validate`` that calls the service being connected) comes from
:func:`outbound_client`, so ``allowed_private_hosts`` and
``http_timeout_seconds`` are read in one place.
"""
from __future__ import annotations

from flask import has_app_context

from .extensions import settings
from .http import (DEFAULT_MAX_REDIRECTS, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_TOTAL_TIME, DEFAULT_USER_AGENT,
                   GuardedClient)

__all__ = ["outbound_client"]


def outbound_client(
    *,
    timeout: float | tuple[float, float] | None = None,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    user_agent: str = DEFAULT_USER_AGENT,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    max_total_time: float | None = DEFAULT_MAX_TOTAL_TIME,
) -> GuardedClient:
    """A :class:`~connect_service.http.GuardedClient` with the service's settings; close it (``with``).

    The client refuses loopback, private, link-local and other non-public
    destinations (SSRF) except the hosts the operator listed in the
    ``allowed_private_hosts`` setting, and applies ``http_timeout_seconds``
    to every socket operation; a call also has an overall deadline
    (``max_total_time``, 60 s), a response-size cap (``max_response_bytes``,
    10 MiB) and follows at most ``max_redirects`` (3) redirects, each
    checked again. The keyword arguments change those limits for one client
    (e.g. a shorter ``timeout`` for a quick check); which private hosts may be
    reached is the operator's setting and cannot be changed here.

    Call it while the service runs (inside a request, a CLI command or a
    worker: any Flask app context), e.g. in ``ConnectionType.validate``::

        from connect_service import OutboundError, ValidationError, outbound_client

        def validate(self, config):
            try:
                with outbound_client() as client:
                    resp = client.get("https://api.example.com/me",
                                      headers={"Authorization": "Bearer " + config["api_key"]})
            except OutboundError as exc:  # refused destination, timeout, TLS or connection error
                raise ValidationError(f"could not be checked: {exc.reason}", "api_key")
            if resp.status_code == 401:
                raise ValidationError("was rejected by the API", "api_key")

    The client's methods are those of ``requests`` (``get``, ``post``,
    ``request``); HTTP error statuses are returned, not raised; failures raise
    :class:`~connect_service.OutboundError`, whose message never contains the
    query string, headers or body.

    Raises:
        RuntimeError: called outside the running service (no app context).
    """
    if not has_app_context():
        raise RuntimeError("outbound_client() reads the settings of the running service: call it inside a "
                           "request, a CLI command or a worker (a Flask app context)")
    cfg = settings()
    return GuardedClient(
        allowed_private_hosts=cfg.get("allowed_private_hosts") or (),
        timeout=(cfg.get("http_timeout_seconds") or 10.0) if timeout is None else timeout,
        max_redirects=max_redirects,
        user_agent=user_agent,
        max_response_bytes=max_response_bytes,
        max_total_time=max_total_time,
    )
