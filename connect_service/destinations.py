"""Where the guarded client may go: the address policy and the redirect rules.

:func:`check_destination` judges a URL (scheme, host spelling, a credential's
``allowed_hosts``) and resolves its host once, refusing it if *any* address is
not public (:func:`is_public_address`) unless the operator allows that host;
the :class:`Target` it returns is the set of checked addresses the transport
may connect to. :func:`follow_redirect` builds the next request of a redirect
chain, stricter than a browser. Used by :class:`connect_service.http.GuardedClient`.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.utils import requote_uri

from .hosts import is_host_allowed, url_host
from .outbound_errors import BlockedDestination, Unreachable, redact_url

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
DEFAULT_PORTS = {"http": 80, "https": 443}
# Headers kept when a redirect leaves the origin; everything else the caller
# set (Authorization, API-key headers, cookies) may be a secret for the first host.
_CROSS_ORIGIN_SAFE_HEADERS = {"user-agent", "accept", "accept-encoding", "accept-language"}
_BODY_HEADERS = ("Content-Type", "Content-Length", "Transfer-Encoding")


def is_public_address(ip: IP) -> bool:
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
class Target:
    """A checked destination: every address its host resolved to, and the one a connection attempt uses."""

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
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def host_of(url: str, redirected: bool = False) -> str:
    """The normalised host of ``url``, or BlockedDestination for a refused URL."""
    try:
        return url_host(url.strip() if isinstance(url, str) else url)
    except ValueError as exc:
        reason = str(exc)
    # Raised outside the handler: no chained exception repeats the URL.
    raise BlockedDestination(redact_url(url), ("redirect refused: " if redirected else "") + reason)


def prepare(url: str, build: Any) -> Any:
    """``build()`` (a request's ``prepare``), or BlockedDestination for a malformed request."""
    try:
        return build()
    except (requests.exceptions.RequestException, ValueError, UnicodeError):
        reason = "malformed request"
    raise BlockedDestination(redact_url(url), reason)


def same_host(url: str, prep: requests.PreparedRequest, redirected: bool = False) -> None:
    # requests/urllib3 parse the URL again; refuse it if they see another host.
    if host_of(url, redirected) != host_of(prep.url, redirected):
        raise BlockedDestination(redact_url(url), "ambiguous URL")


def check_destination(url: str, allowed_hosts: Iterable[str] | None, redirected: bool,
                      allowed_private_hosts: frozenset[tuple[str, int | None]]) -> Target:
    """Validate ``url`` and resolve its host once; return the addresses to connect to.

    ``allowed_private_hosts``: ``(host, port or None)`` pairs that may resolve to non-public addresses.
    """
    safe = redact_url(url)
    prefix = "redirect refused: " if redirected else ""
    host = host_of(url, redirected)
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    port = parts.port or DEFAULT_PORTS[scheme]
    if allowed_hosts is not None and not is_host_allowed(allowed_hosts, url.strip()):
        raise BlockedDestination(safe, prefix + "host is not in the credential's allowed_hosts")
    try:
        literal: IP | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    addresses = [literal] if literal is not None else resolve(host, port, safe)
    if (host, None) not in allowed_private_hosts and (host, port) not in allowed_private_hosts:
        for address in addresses:
            if not is_public_address(address):
                what = "address" if literal is not None else "host resolves to an address that"
                raise BlockedDestination(safe, f"{prefix}{what} is not public")
    return Target(scheme=scheme, host=host, port=port, ips=tuple(str(a) for a in addresses))


def resolve(host: str, port: int, safe_url: str) -> list[IP]:
    """Every IPv4/IPv6 address ``host`` resolves to, in resolver order; Unreachable if none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        infos = []
    addresses: list[IP] = []
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


def follow_redirect(prep: requests.PreparedRequest, resp: requests.Response,
                    target: Target) -> requests.PreparedRequest:
    """Build the next request of a redirect chain, as a browser would but stricter."""
    location = resp.headers["location"]
    try:
        location = location.encode("latin1").decode("utf8")
    except UnicodeError:
        pass
    next_url = urljoin(prep.url, location.strip())
    new_host = host_of(next_url, redirected=True)
    next_url = requote_uri(next_url)
    new = prep.copy()
    prepare(next_url, lambda: new.prepare_url(next_url, None))
    same_host(next_url, new, redirected=True)
    parts = urlsplit(new.url)
    scheme = parts.scheme.lower()
    if target.scheme == "https" and scheme == "http":
        raise BlockedDestination(redact_url(new.url), "redirect refused: https to http downgrade")
    cross_origin = (scheme, new_host, parts.port or DEFAULT_PORTS[scheme]) != target.origin
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
