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

Example, in a plugin's ``validate``::

    from connect_service.http import GuardedClient, OutboundError

    client = GuardedClient(allowed_private_hosts=config["ALLOWED_PRIVATE_HOSTS"])
    try:
        resp = client.get("https://api.example.com/me", headers={"Authorization": "Bearer " + token})
    except OutboundError as exc:
        raise ValueError(f"could not reach the API: {exc}")
    if resp.status_code != 200:
        raise ValueError("the API rejected the key")

Use ``resp.status_code`` rather than ``resp.raise_for_status()``: the latter's
message repeats the full URL, query string included.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_ACCEPT_ENCODING, requote_uri

from .hosts import is_host_allowed, normalize_host, parse_private_host, url_host

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

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers kept when a redirect leaves the origin; everything else the caller
# set (Authorization, API-key headers, cookies) may be a secret for the first host.
_CROSS_ORIGIN_SAFE_HEADERS = {"user-agent", "accept", "accept-encoding", "accept-language"}
_BODY_HEADERS = ("Content-Type", "Content-Length", "Transfer-Encoding")


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


def is_public_address(ip: _IP) -> bool:
    """Whether ``ip`` is a globally routable unicast address the service may call.

    Addresses that embed an IPv4 address (IPv4-mapped, NAT64 ``64:ff9b::/96``,
    6to4) are judged by the embedded address; Teredo is refused outright.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            return is_public_address(ip.sixtofour)
        if ip in _NAT64_LOCAL or ip.teredo is not None or ip.is_site_local:
            return False
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_private
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
    )


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # normalised host name or canonical IP text
    port: int
    ips: tuple[str, ...]  # every resolved address, all checked
    ip: str = ""  # the one address this connection attempt goes to

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


class _PinnedAdapter(HTTPAdapter):
    """Sends a prepared request to the address pinned on it by GuardedClient."""

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        target: _Target | None = getattr(request, "_connect_service_target", None)
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        try:
            host = normalize_host(host_params["host"] or "")
        except ValueError:
            host = None
        if (target is None or target.ip not in target.ips or host != target.host
                or host_params["scheme"] != target.scheme):
            # Never connect anywhere the guard has not checked.
            raise BlockedDestination(redact_url(request.url), "request was not checked by the guard")
        host_params = {"scheme": target.scheme, "host": target.ip, "port": target.port}
        if target.scheme == "https":
            # SNI and certificate verification use the name; the socket uses the IP.
            pool_kwargs["server_hostname"] = target.host
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)

    def get_connection(self, url, proxies=None):  # pragma: no cover - pre-2.32.2 API
        raise BlockedDestination(redact_url(url), "request was not checked by the guard")


def _exception_chain(exc: BaseException) -> Iterable[BaseException]:
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


def _unreachable_reason(exc: BaseException) -> str:
    chain = list(_exception_chain(exc))
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


def _normalise_timeout(timeout: Any) -> tuple[float, float]:
    if isinstance(timeout, tuple):
        connect, read = timeout
    else:
        connect = read = timeout
    connect, read = float(connect), float(read)
    if not (connect > 0 and read > 0):
        raise ValueError("timeouts must be positive numbers")
    return connect, read


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
        max_redirects: int = 3,
        user_agent: str = "connect-service",
        *,
        max_response_bytes: int = 10 * 1024 * 1024,
        max_total_time: float | None = 60.0,
    ) -> None:
        if isinstance(allowed_private_hosts, str):
            allowed_private_hosts = [allowed_private_hosts]
        # (host, port or None for every port); a malformed entry raises ValueError here
        self.allowed_private_hosts = frozenset(parse_private_host(h) for h in allowed_private_hosts)
        self.timeout = _normalise_timeout(timeout)
        self.max_redirects = int(max_redirects)
        self.user_agent = user_agent
        self.max_response_bytes = int(max_response_bytes)
        self.max_total_time = max_total_time
        self._adapter = _PinnedAdapter(max_retries=0)

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
        self._check(url, allowed_hosts=None, redirected=False)

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
        connect_read = self.timeout if timeout is None else _normalise_timeout(timeout)
        deadline = None if self.max_total_time is None else time.monotonic() + self.max_total_time
        self._host_of(url)
        merged_headers = CaseInsensitiveDict(
            {"User-Agent": self.user_agent, "Accept-Encoding": DEFAULT_ACCEPT_ENCODING, "Accept": "*/*"}
        )
        merged_headers.update(headers or {})
        merged_headers.pop("Host", None)  # always the checked host, never a caller's choice
        request = requests.Request(
            method=method.upper(), url=url.strip(), headers=merged_headers, files=files,
            data=data or {}, json=json, params=params or {}, auth=auth, cookies=cookies,
        )
        prep = self._prepare(url, request.prepare)
        self._same_host(url, prep)
        history: list[requests.Response] = []
        redirected = False
        while True:
            target = self._check(prep.url, allowed_hosts, redirected)
            resp = self._send(prep, target, connect_read, verify, cert)
            if not (allow_redirects and resp.is_redirect):
                if stream:
                    resp.history = history
                    return resp
                self._read_body(resp, deadline)
                resp.history = history
                return resp
            resp.close()
            history.append(resp)
            if len(history) > self.max_redirects:
                raise TooManyRedirects(redact_url(prep.url), f"more than {self.max_redirects} redirects")
            if deadline is not None and time.monotonic() > deadline:
                raise Unreachable(redact_url(prep.url), "timed out")
            prep = self._follow(prep, resp, target)
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
                    reason = _unreachable_reason(exc)
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

    # -- internals ------------------------------------------------------

    @staticmethod
    def _host_of(url: str, redirected: bool = False) -> str:
        """The normalised host of ``url``, or BlockedDestination for a refused URL."""
        try:
            return url_host(url.strip() if isinstance(url, str) else url)
        except ValueError as exc:
            reason = str(exc)
        # Raised outside the handler: no chained exception repeats the URL.
        raise BlockedDestination(redact_url(url), ("redirect refused: " if redirected else "") + reason)

    @staticmethod
    def _prepare(url: str, build: Any) -> Any:
        try:
            return build()
        except (requests.exceptions.RequestException, ValueError, UnicodeError):
            reason = "malformed request"
        raise BlockedDestination(redact_url(url), reason)

    def _same_host(self, url: str, prep: requests.PreparedRequest, redirected: bool = False) -> None:
        # requests/urllib3 parse the URL again; refuse it if they see another host.
        if self._host_of(url, redirected) != self._host_of(prep.url, redirected):
            raise BlockedDestination(redact_url(url), "ambiguous URL")

    def _check(self, url: str, allowed_hosts: Iterable[str] | None, redirected: bool) -> _Target:
        """Validate ``url`` and resolve its host once; return the address to connect to."""
        safe = redact_url(url)
        prefix = "redirect refused: " if redirected else ""
        host = self._host_of(url, redirected)
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_PORTS[scheme]
        if allowed_hosts is not None and not is_host_allowed(allowed_hosts, url.strip()):
            raise BlockedDestination(safe, prefix + "host is not in the credential's allowed_hosts")
        try:
            literal: _IP | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        addresses = [literal] if literal is not None else self._resolve(host, port, safe)
        if (host, None) not in self.allowed_private_hosts and (host, port) not in self.allowed_private_hosts:
            for address in addresses:
                if not is_public_address(address):
                    what = "address" if literal is not None else "host resolves to an address that"
                    raise BlockedDestination(safe, f"{prefix}{what} is not public")
        return _Target(scheme=scheme, host=host, port=port, ips=tuple(str(a) for a in addresses))

    @staticmethod
    def _resolve(host: str, port: int, safe_url: str) -> list[_IP]:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            infos = []
        addresses: list[_IP] = []
        for family, _type, _proto, _canon, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            except ValueError:
                continue
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise Unreachable(safe_url, "could not resolve host")
        return addresses

    def _send(self, prep: requests.PreparedRequest, target: _Target, timeout: tuple[float, float],
              verify: bool | str, cert: Any) -> requests.Response:
        """Send to the checked addresses in resolver order; the next is tried only if connecting failed."""
        prep.headers["Host"] = target.host_header
        started = time.monotonic()
        error: OutboundError | None = None
        for ip in target.ips:
            prep._connect_service_target = replace(target, ip=ip)  # type: ignore[attr-defined]
            try:
                resp = self._adapter.send(prep, stream=True, timeout=timeout, verify=verify, cert=cert)
            except OutboundError:
                raise
            except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader, ValueError):
                error = BlockedDestination(redact_url(prep.url), "malformed request")
                break
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                error = Unreachable(redact_url(prep.url), _unreachable_reason(exc))
                # Nothing was sent if the connection itself failed: safe to try the next address.
                if any(isinstance(e, urllib3.exceptions.NewConnectionError) for e in _exception_chain(exc)):
                    continue
                break
            else:
                resp.elapsed = datetime.timedelta(seconds=time.monotonic() - started)
                return resp
        # Raised outside the handler so no underlying exception (whose text may
        # include the full URL) is chained onto ours.
        assert error is not None
        raise error

    def _read_body(self, resp: requests.Response, deadline: float | None) -> None:
        # read1 makes one socket read per call, each bounded by the read timeout,
        # so the size limit and the overall deadline are checked as data arrives.
        chunks: list[bytes] = []
        size = 0
        error: OutboundError | None = None
        try:
            while chunk := resp.raw.read1(64 * 1024, decode_content=True):
                size += len(chunk)
                if size > self.max_response_bytes:
                    error = ResponseTooLarge(redact_url(resp.url),
                                             f"response body larger than {self.max_response_bytes} bytes")
                    break
                if deadline is not None and time.monotonic() > deadline:
                    error = Unreachable(redact_url(resp.url), "timed out")
                    break
                chunks.append(chunk)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            error = Unreachable(redact_url(resp.url), _unreachable_reason(exc))
        if error is not None:
            resp.close()
            raise error
        resp._content = b"".join(chunks)
        resp._content_consumed = True
        resp.close()  # the connection has gone back to the pool; the content stays

    def _follow(self, prep: requests.PreparedRequest, resp: requests.Response,
                target: _Target) -> requests.PreparedRequest:
        """Build the next request of a redirect chain, as a browser would but stricter."""
        location = resp.headers["location"]
        try:
            location = location.encode("latin1").decode("utf8")
        except UnicodeError:
            pass
        next_url = urljoin(prep.url, location.strip())
        new_host = self._host_of(next_url, redirected=True)
        next_url = requote_uri(next_url)
        new = prep.copy()
        self._prepare(next_url, lambda: new.prepare_url(next_url, None))
        self._same_host(next_url, new, redirected=True)
        parts = urlsplit(new.url)
        scheme = parts.scheme.lower()
        if target.scheme == "https" and scheme == "http":
            raise BlockedDestination(redact_url(new.url), "redirect refused: https to http downgrade")
        cross_origin = (scheme, new_host, parts.port or _DEFAULT_PORTS[scheme]) != target.origin
        status, method = resp.status_code, (new.method or "GET")
        if (status in (302, 303) and method != "HEAD") or (status == 301 and method == "POST"):
            new.method, new.body = "GET", None
            for name in _BODY_HEADERS:
                new.headers.pop(name, None)
        elif cross_origin and new.body is not None:
            raise BlockedDestination(redact_url(new.url),
                                     "redirect refused: would resend the request body to another host")
        new.headers.pop("Host", None)
        if cross_origin:
            for name in list(new.headers):
                if name.lower() not in _CROSS_ORIGIN_SAFE_HEADERS:
                    del new.headers[name]
        return new
