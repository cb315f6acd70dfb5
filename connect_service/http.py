"""The one guarded HTTP client for user- and admin-supplied URLs.

Every outbound call to a URL that came from a user, an admin or a plugin
setting (OAuth token and revoke endpoints, plugin validation calls, the
action-connector platform API) goes through :class:`GuardedClient`, so that
nobody can make the service reach its own loopback, private network or cloud
metadata endpoint (SSRF).

For each request, and again for each redirect it follows, the client:

1. accepts only ``http``/``https`` URLs without user-info, backslashes or
   control characters, and refuses numeric host spellings such as
   ``http://2130706433/``, ``http://0x7f000001/`` or ``http://0177.0.0.1/``;
2. resolves the host once and refuses it if *any* address is not public
   (loopback, RFC 1918, link-local incl. ``169.254.169.254``, CGNAT,
   multicast, reserved, IPv6 ULA/link-local, IPv4-mapped/NAT64/6to4 forms of
   those, ...), unless the host is listed in ``allowed_private_hosts``;
3. connects to exactly the address it checked (no DNS-rebinding window) while
   the ``Host`` header, TLS SNI and certificate check use the real host name.

Environment proxies and ``.netrc`` are ignored: a proxy would resolve names
itself and defeat the address check.

The checks live in :mod:`connect_service.destinations` (address policy,
redirect rules), the pinned connection in :mod:`connect_service.pinned_transport`
and the errors in :mod:`connect_service.outbound_errors`; this module keeps the
client and re-exports the public names, so ``connect_service.http`` stays the
one import.

Plugins do not build one: :func:`connect_service.outbound_client` returns a
client configured from the service's settings (``allowed_private_hosts``,
``http_timeout_seconds``), e.g. in a ``ConnectionType.validate``, whose
``config`` holds the submitted form values::

    from connect_service import OutboundError, ValidationError, outbound_client

    def validate(self, config):
        try:
            with outbound_client() as client:
                resp = client.get("https://api.example.com/me",
                                  headers={"Authorization": "Bearer " + config["api_key"]})
        except OutboundError as exc:
            raise ValidationError(f"could not be checked: {exc.reason}", "api_key")
        if resp.status_code != 200:
            raise ValidationError("was rejected by the API", "api_key")

Use ``resp.status_code`` rather than ``resp.raise_for_status()``: the latter's
message repeats the full URL, query string included.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import requests
import urllib3
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_ACCEPT_ENCODING

from .destinations import check_destination, follow_redirect, host_of, is_public_address, prepare, same_host
from .hosts import parse_private_host
from .outbound_errors import (BlockedDestination, OutboundError, ResponseTooLarge, TooManyRedirects, Unreachable,
                              redact_url, unreachable_reason)
from .pinned_transport import PinnedAdapter, normalise_timeout, read_body, send_pinned

__all__ = [
    "BlockedDestination",
    "GuardedClient",
    "OutboundError",
    "ResponseTooLarge",
    "TooManyRedirects",
    "Unreachable",
    "is_public_address",
    "redact_url",
]


#: the limits a client has unless its builder sets others (``timeout`` comes from ``http_timeout_seconds``
#: when :func:`connect_service.outbound_client` builds it)
DEFAULT_MAX_REDIRECTS = 3
DEFAULT_USER_AGENT = "connect-service"
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_TOTAL_TIME = 60.0


class GuardedClient:
    """HTTP client that refuses non-public destinations and pins checked addresses.

    Args:
        allowed_private_hosts: host names or IP addresses (exact match after
            normalisation, e.g. ``"127.0.0.1"``, ``"localhost"``,
            ``"idp.internal"``) that may resolve to loopback or private
            addresses, for on-premise providers and tests. An entry with a
            port (``"127.0.0.1:9000"``) allows only that port.
        timeout: seconds, or a ``(connect, read)`` tuple, applied to every
            socket operation. Always set; a call may pass its own.
        max_redirects: redirects followed, each re-checked like the first URL.
        user_agent: the ``User-Agent`` header unless the caller sets one.
        max_response_bytes: a larger (decoded) body raises :class:`ResponseTooLarge`.
        max_total_time: seconds a whole call (all redirects and reading the
            bodies) may take; ``None`` for no overall limit.

    Redirects are followed by the client itself: ``303`` (and ``301``/``302``
    after a POST) become a body-less GET; a redirect to another origin drops
    every header except User-Agent/Accept*; a ``307``/``308`` that would
    resend a body to another origin, and any https-to-http redirect, are
    refused. Response hooks (e.g. ``HTTPDigestAuth``) are not run.

    One instance may be shared between threads; it keeps no cookies.
    """

    def __init__(
        self,
        allowed_private_hosts: Iterable[str] = (),
        timeout: float | tuple[float, float] = 10.0,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        user_agent: str = DEFAULT_USER_AGENT,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_total_time: float | None = DEFAULT_MAX_TOTAL_TIME,
    ) -> None:
        if isinstance(allowed_private_hosts, str):
            allowed_private_hosts = [allowed_private_hosts]
        # (host, port or None for every port); a malformed entry raises ValueError here
        self.allowed_private_hosts = frozenset(parse_private_host(h) for h in allowed_private_hosts)
        self.timeout = normalise_timeout(timeout)
        self.max_redirects = int(max_redirects)
        self.user_agent = user_agent
        self.max_response_bytes = int(max_response_bytes)
        self.max_total_time = max_total_time
        self._adapter = PinnedAdapter(max_retries=0)

    def close(self) -> None:
        """Close pooled connections."""
        self._adapter.close()

    def __enter__(self) -> GuardedClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public API -----------------------------------------------------

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        """``request("GET", url, **kwargs)``."""
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        """``request("POST", url, **kwargs)``."""
        return self.request("POST", url, **kwargs)

    def check_url(self, url: str) -> None:
        """Resolve and check ``url`` without sending anything (e.g. to validate a setting).

        Raises:
            BlockedDestination: the URL is refused by policy.
            Unreachable: the host does not resolve.
        """
        check_destination(url, None, False, self.allowed_private_hosts)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Any = None,
        data: Any = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        auth: Any = None,
        files: Any = None,
        cookies: Any = None,
        timeout: float | tuple[float, float] | None = None,
        allow_redirects: bool = True,
        verify: bool | str = True,
        cert: Any = None,
        allowed_hosts: Iterable[str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send a request and return the final :class:`requests.Response`, body read.

        Keyword arguments are those of :func:`requests.request` (``params``,
        ``data``, ``json``, ``headers``, ``auth``, ``files``, ``cookies``,
        ``timeout``, ``allow_redirects``, ``verify``, ``cert``) plus
        ``allowed_hosts``: a credential's host patterns (see
        :func:`connect_service.hosts.is_host_allowed`), enforced on the URL and
        on every redirect. HTTP error statuses are returned, not raised.
        With ``stream=True`` the final response's body is left unread: read it
        with :meth:`iter_body` (which enforces ``max_response_bytes``) and close it.

        Raises:
            BlockedDestination: scheme, host, address or redirect refused.
            Unreachable: DNS failure, connect/read timeout, connection or TLS error.
            TooManyRedirects: more than ``max_redirects`` redirects.
            ResponseTooLarge: body larger than ``max_response_bytes``.
        """
        connect_read = self.timeout if timeout is None else normalise_timeout(timeout)
        deadline = None if self.max_total_time is None else time.monotonic() + self.max_total_time
        host_of(url)
        merged_headers = CaseInsensitiveDict(
            {"User-Agent": self.user_agent, "Accept-Encoding": DEFAULT_ACCEPT_ENCODING, "Accept": "*/*"}
        )
        merged_headers.update(headers or {})
        merged_headers.pop("Host", None)  # always the checked host, never a caller's choice
        request = requests.Request(
            method=method.upper(), url=url.strip(), headers=merged_headers, files=files,
            data=data or {}, json=json, params=params or {}, auth=auth, cookies=cookies,
        )
        prep = prepare(url, request.prepare)
        same_host(url, prep)
        history: list[requests.Response] = []
        redirected = False
        while True:
            target = check_destination(prep.url, allowed_hosts, redirected, self.allowed_private_hosts)
            resp = send_pinned(self._adapter, prep, target, connect_read, verify, cert)
            if not (allow_redirects and resp.is_redirect):
                if stream:
                    resp.history = history
                    return resp
                read_body(resp, deadline, self.max_response_bytes)
                resp.history = history
                return resp
            resp.close()
            history.append(resp)
            if len(history) > self.max_redirects:
                raise TooManyRedirects(redact_url(prep.url), f"more than {self.max_redirects} redirects")
            if deadline is not None and time.monotonic() > deadline:
                raise Unreachable(redact_url(prep.url), "timed out")
            prep = follow_redirect(prep, resp, target)
            redirected = True

    def iter_body(self, resp: requests.Response, chunk_size: int = 64 * 1024) -> Iterable[bytes]:
        """The body of a ``stream=True`` response as it arrives, undecoded (as sent, e.g. gzip).

        Raises :class:`ResponseTooLarge` once more than ``max_response_bytes``
        arrived and :class:`Unreachable` when the connection fails; closes the
        response in any case.
        """
        size = 0
        try:
            while True:
                try:
                    chunk = resp.raw.read1(chunk_size, decode_content=False)
                except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                    reason = unreachable_reason(exc)
                    break
                if not chunk:
                    return
                size += len(chunk)
                if size > self.max_response_bytes:
                    reason = None
                    break
                yield chunk
        finally:
            resp.close()
        if reason is None:
            raise ResponseTooLarge(redact_url(resp.url), f"response body larger than {self.max_response_bytes} bytes")
        raise Unreachable(redact_url(resp.url), reason)
