"""Host names and a credential's ``allowed_hosts``.

A credential may carry ``allowed_hosts``: the domains it may be sent to. A
pattern is either an exact host (``api.example.com``, ``10.0.0.5``,
``bücher.example``) or a one-label wildcard (``*.example.com``). A wildcard
whose remainder is a public suffix (``*.com``, ``*.co.uk``, ``*.github.io``)
would hand the credential to anyone who can register a domain, so it is
refused; the check uses the Public Suffix List bundled with
``publicsuffixlist`` (ICANN and private sections, no network).

Matching is on the host a client would really connect to, after the same
normalisation on both sides (lower case, IDNA A-labels, no trailing dot).
URLs that hide their host (user-info such as ``https://example.com@evil.net/``,
backslashes, control characters) are never allowed.

Example::

    >>> validate_allowed_host_pattern("*.Example.COM.")
    '*.example.com'
    >>> is_host_allowed(["*.example.com"], "https://api.example.com/v1")
    True
    >>> is_host_allowed(["*.example.com"], "https://example.com/v1")
    False
    >>> is_host_allowed([], "https://anything.test/")   # no restriction
    True
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import urlsplit

import idna
from publicsuffixlist import PublicSuffixList

__all__ = [
    "host_matches",
    "is_host_allowed",
    "management_hosts",
    "parse_private_host",
    "private_host_allowed",
    "normalize_host",
    "url_host",
    "validate_allowed_host_pattern",
]

# An ASCII label after lower-casing. Underscores occur in real host names and
# requests accepts them, so they are allowed; IDNA rules apply to xn-- labels.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_HEX_OR_DEC = re.compile(r"(?:0[xX][0-9a-fA-F]*|[0-9]+)\Z")
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    # Unknown TLDs count as public suffixes (the PSL's implicit "*" rule), so
    # "*.localhost" or "*.internal" are refused too: name a subdomain instead.
    return PublicSuffixList(accept_unknown=True, only_icann=False)


def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if "%" in candidate:
        raise ValueError("IPv6 zone identifiers are not supported")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        return None


def normalize_host(host: str) -> str:
    """Return ``host`` in canonical form: lower case, IDNA A-labels, no trailing dot.

    IP addresses come back in their canonical text form (IPv6 without
    brackets). Numeric forms a resolver would accept but which are not a
    canonical dotted-quad (``2130706433``, ``0x7f000001``, ``0177.0.0.1``,
    ``127.1``) are refused rather than guessed at, as are wildcards, empty
    labels, ports and anything that is not a host name.

    Raises:
        ValueError: the host is empty or not a valid host name or address.
    """
    if not isinstance(host, str):
        raise ValueError("host must be a string")
    ip = _parse_ip(host)
    if ip is not None:
        return str(ip)
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise ValueError("empty host")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True, std3_rules=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"invalid internationalised host name: {exc}") from None
    host = host.lower()
    labels = host.split(".")
    # WHATWG: a host whose last label is a number is an IPv4 address; only the
    # canonical dotted-quad (already handled above) is accepted.
    if _HEX_OR_DEC.match(labels[-1]):
        raise ValueError("numeric host must be a dotted-decimal IPv4 address")
    for label in labels:
        if not _LABEL.match(label):
            raise ValueError("invalid host name")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise ValueError("invalid IDNA label") from None
    if len(host) > 253:
        raise ValueError("host name too long")
    return host


def url_host(url: str) -> str:
    """Return the normalised host an HTTP client would connect to for ``url``.

    Only ``http`` and ``https`` URLs are accepted. URLs with user-info
    (``https://example.com@evil.net/``), backslashes, whitespace or control
    characters are refused because parsers disagree on their host.

    Raises:
        ValueError: the URL is malformed or hides its host.
    """
    if not isinstance(url, str) or _UNSAFE_URL_CHARS.search(url):
        raise ValueError("URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on an invalid port
    except ValueError:
        # The parser's own message may quote parts of the URL.
        raise ValueError("malformed URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("only http and https URLs are allowed")
    if "@" in parts.netloc:
        raise ValueError("URLs with user credentials are not allowed")
    if not hostname:
        raise ValueError("URL has no host")
    return normalize_host(hostname)


def validate_allowed_host_pattern(pattern: str) -> str:
    """Check one ``allowed_hosts`` entry and return its normalised form.

    Accepts an exact host or IP address, or ``*.`` followed by a domain that is
    not a public suffix. Refuses ``*``, ``*.com``, ``*.co.uk``, ``*.github.io``,
    ``a.*.example.com``, and anything with a scheme, path, port or user-info.

    Raises:
        ValueError: with a message suitable for an API validation error.
    """
    if not isinstance(pattern, str):
        raise ValueError("host pattern must be a string")
    pattern = pattern.strip()
    if not pattern:
        raise ValueError("host pattern is empty")
    if _parse_ip(pattern) is not None:
        return normalize_host(pattern)
    if any(ch in pattern for ch in "/\\@?#:"):
        raise ValueError("host pattern must be a host name, without scheme, path, port or user-info")
    if pattern.startswith("*."):
        rest = pattern[2:]
        if "*" in rest:
            raise ValueError("only a single leading '*.' wildcard is allowed")
        rest = normalize_host(rest)
        if _parse_ip(rest) is not None:
            raise ValueError("wildcards cannot be combined with IP addresses")
        if _psl().is_public(rest):
            raise ValueError(f"'*.{rest}' would match a public suffix; name a registered domain")
        return "*." + rest
    if "*" in pattern:
        raise ValueError("a wildcard must be the whole first label, as in '*.example.com'")
    return normalize_host(pattern)


def _target_host(url_or_host: str) -> str | None:
    try:
        if "://" in url_or_host:
            return url_host(url_or_host)
        if any(ch in url_or_host for ch in "/\\@?#"):
            return None
        return normalize_host(url_or_host)
    except (ValueError, TypeError):
        return None


def _match(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        label = host[: -len(suffix)]
        return host.endswith(suffix) and bool(label) and "." not in label
    return host == pattern


def host_matches(pattern: str, url_or_host: str) -> bool:
    """Whether ``url_or_host`` (a URL or a bare host) matches one pattern.

    ``*.example.com`` matches ``a.example.com`` only: not ``example.com``,
    ``a.b.example.com``, ``evilexample.com`` or ``example.com.evil.net``.
    An invalid pattern or an unparsable or deceptive URL never matches.
    """
    try:
        pattern = validate_allowed_host_pattern(pattern)
    except (ValueError, TypeError):
        return False
    host = _target_host(url_or_host)
    return host is not None and _match(pattern, host)


def is_host_allowed(patterns: Iterable[str] | None, url: str) -> bool:
    """Whether a credential restricted to ``patterns`` may be sent to ``url``.

    An empty (or ``None``) pattern list means the credential has no
    restriction, and this returns ``True`` for any URL. Otherwise the URL's
    real host must match at least one pattern (see :func:`host_matches`).
    """
    patterns = list(patterns or ())
    if not patterns:
        return True
    host = _target_host(url)
    if host is None:
        return False
    for pattern in patterns:
        try:
            normalised = validate_allowed_host_pattern(pattern)
        except (ValueError, TypeError):
            continue
        if _match(normalised, host):
            return True
    return False


def routing_host(host_header: str) -> str:
    """A request's Host as host routing compares it with app hostnames and :func:`management_hosts`:
    the port dropped, lower case, no trailing dot."""
    return host_header.rsplit(":", 1)[0].lower().rstrip(".")


def management_hosts(settings: dict) -> frozenset[str]:
    """Hosts that serve the management API and never an app: ``public_url``'s, ``localhost``, ``management_hosts``.

    An app may not take one as its hostname, and a request to one is never
    routed as a request to an app host (even if an old row holds the name).
    """
    hosts = {"localhost", (urlsplit(settings["public_url"]).hostname or "").lower()}
    hosts.update(str(host).lower().rstrip(".") for host in settings.get("management_hosts") or ())
    hosts.discard("")
    return frozenset(hosts)


_PORT = re.compile(r"[0-9]{1,5}\Z", re.ASCII)


def parse_private_host(entry: str) -> tuple[str, int | None]:
    """One ``allowed_private_hosts`` entry as ``(host, port or None)``.

    ``"idp.internal"`` allows every port of that host; ``"127.0.0.1:9000"`` or
    ``"[::1]:9000"`` only that port (a bare IPv6 address has no port).

    Raises:
        ValueError: not a host, or a port outside 1..65535.
    """
    text = str(entry).strip()
    port_text: str | None = None
    if text.startswith("[") and "]:" in text:
        text, port_text = text[1:].split("]:", 1)
    elif text.count(":") == 1:
        text, port_text = text.split(":", 1)
    if port_text is not None and not (_PORT.match(port_text) and 1 <= int(port_text) <= 65535):
        raise ValueError("port must be a number from 1 to 65535")
    return normalize_host(text), int(port_text) if port_text is not None else None


def private_host_allowed(entries: Iterable[str], host: str, port: int) -> bool:
    """Whether ``host`` (normalised) on ``port`` may resolve to a private address (see :func:`parse_private_host`)."""
    for entry in entries:
        try:
            allowed_host, allowed_port = parse_private_host(entry)
        except ValueError:
            continue
        if allowed_host == host and allowed_port in (None, port):
            return True
    return False


def outbound_url_problem(value: str, allowed_private_hosts: Iterable[str]) -> str | None:
    """Why ``value`` cannot be a URL the service calls (credential endpoints, webhook receivers), or None.

    It must be an absolute https URL without user-info, backslashes or white space; plain http only
    for a host (and port, when the entry names one) in ``allowed_private_hosts`` (local servers).
    """
    parts = urlsplit(value)
    try:
        host = normalize_host(parts.hostname or "")
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password or "\\" in value \
            or any(ch.isspace() for ch in value):
        return "must be an absolute https URL"
    if parts.scheme == "http":
        try:
            port = parts.port or 80
        except ValueError:  # not a number: the guarded client refuses the URL when it is used
            port = 80
        if not private_host_allowed(allowed_private_hosts, host, port):
            return "must use https"
    return None

