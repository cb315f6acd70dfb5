"""What can go wrong with an outbound call, told without leaking it.

The :class:`OutboundError` family is what :class:`connect_service.http.GuardedClient`
raises (plugins catch ``connect_service.OutboundError``). Every message is built
from :func:`redact_url` and a short reason, never from an underlying exception,
whose text may repeat the full URL, query string included.
"""
from __future__ import annotations

import ssl
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3


class OutboundError(Exception):
    """An outbound request failed or was refused.

    ``url`` is the target without user-info, query string or fragment and
    ``reason`` a short human text; neither ever contains request bodies,
    headers or query strings. ``code`` is a stable machine-readable name.
    """

    code = "outbound_error"

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{reason} ({url})")


class BlockedDestination(OutboundError):
    """The destination is refused by policy (scheme, host, address, redirect)."""

    code = "blocked_destination"


class Unreachable(OutboundError):
    """DNS failure, connection error, timeout or TLS error."""

    code = "unreachable"


class TooManyRedirects(OutboundError):
    """More redirects than ``max_redirects``."""

    code = "too_many_redirects"


class ResponseTooLarge(OutboundError):
    """The response body exceeded ``max_response_bytes``."""

    code = "response_too_large"


def redact_url(url: str) -> str:
    """Return ``url`` without user-info, query string and fragment, for messages and logs."""
    try:
        parts = urlsplit(str(url).strip())
        host = parts.hostname or ""
    except ValueError:
        return "<invalid URL>"
    try:
        port = parts.port
    except ValueError:
        port = None  # an unparsable "port" may be a secret that slipped in
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) or "<empty URL>"


def exception_chain(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and the exceptions behind it (causes, contexts, urllib3 reasons), at most 20."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 20:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        for nxt in (cur.__cause__, cur.__context__, getattr(cur, "reason", None), *cur.args[:1]):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def unreachable_reason(exc: BaseException) -> str:
    """A short reason for a failed connection, judged from the whole chain (never its text)."""
    chain = list(exception_chain(exc))
    def has(*types: type[BaseException]) -> bool:
        return any(isinstance(e, types) for e in chain)

    # urllib3's NewConnectionError subclasses its TimeoutError for history's sake.
    if any(isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError))
           and not isinstance(e, urllib3.exceptions.NewConnectionError) for e in chain):
        return "timed out"
    if has(ssl.SSLCertVerificationError):
        return "TLS certificate verification failed"
    if has(requests.exceptions.SSLError, urllib3.exceptions.SSLError, ssl.SSLError):
        return "TLS error"
    if has(ConnectionRefusedError):
        return "connection refused"
    if has(urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError):
        return "connection broken while reading the response"
    return "connection failed"
