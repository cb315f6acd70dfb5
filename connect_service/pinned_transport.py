"""The guarded client's transport: connect only to the address the guard checked, read bodies in bounds.

:class:`PinnedAdapter` sends a prepared request to the address pinned on it by
:func:`send_pinned` (the ``Host`` header, TLS SNI and certificate check use the
real host name), so there is no DNS-rebinding window between the check in
:mod:`connect_service.destinations` and the connection. :func:`read_body` reads
a response under the size limit and the overall deadline.
"""
from __future__ import annotations

import datetime
import time
from dataclasses import replace
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

from .destinations import Target
from .hosts import normalize_host
from .outbound_errors import (BlockedDestination, OutboundError, ResponseTooLarge, Unreachable, exception_chain,
                              redact_url, unreachable_reason)


class PinnedAdapter(HTTPAdapter):
    """Sends a prepared request to the address pinned on it by :func:`send_pinned`."""

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        target: Target | None = getattr(request, "_connect_service_target", None)
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


def normalise_timeout(timeout: Any) -> tuple[float, float]:
    """``(connect, read)`` seconds from a number or a pair; both must be positive."""
    if isinstance(timeout, tuple):
        connect, read = timeout
    else:
        connect = read = timeout
    connect, read = float(connect), float(read)
    if not (connect > 0 and read > 0):
        raise ValueError("timeouts must be positive numbers")
    return connect, read


def send_pinned(adapter: PinnedAdapter, prep: requests.PreparedRequest, target: Target,
                timeout: tuple[float, float], verify: bool | str, cert: Any) -> requests.Response:
    """Send to the checked addresses in resolver order; the next is tried only if connecting failed."""
    prep.headers["Host"] = target.host_header
    started = time.monotonic()
    error: OutboundError | None = None
    for ip in target.ips:
        prep._connect_service_target = replace(target, ip=ip)  # type: ignore[attr-defined]
        try:
            resp = adapter.send(prep, stream=True, timeout=timeout, verify=verify, cert=cert)
        except OutboundError:
            raise
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader, ValueError):
            error = BlockedDestination(redact_url(prep.url), "malformed request")
            break
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            error = Unreachable(redact_url(prep.url), unreachable_reason(exc))
            # Nothing was sent if the connection itself failed: safe to try the next address.
            if any(isinstance(e, urllib3.exceptions.NewConnectionError) for e in exception_chain(exc)):
                continue
            break
        else:
            resp.elapsed = datetime.timedelta(seconds=time.monotonic() - started)
            return resp
    # Raised outside the handler so no underlying exception (whose text may
    # include the full URL) is chained onto ours.
    assert error is not None
    raise error


def read_body(resp: requests.Response, deadline: float | None, max_response_bytes: int) -> None:
    """Read the decoded body into ``resp.content``; past a limit, ResponseTooLarge or Unreachable (timed out)."""
    # read1 makes one socket read per call, each bounded by the read timeout,
    # so the size limit and the overall deadline are checked as data arrives.
    chunks: list[bytes] = []
    size = 0
    error: OutboundError | None = None
    try:
        while chunk := resp.raw.read1(64 * 1024, decode_content=True):
            size += len(chunk)
            if size > max_response_bytes:
                error = ResponseTooLarge(redact_url(resp.url),
                                         f"response body larger than {max_response_bytes} bytes")
                break
            if deadline is not None and time.monotonic() > deadline:
                error = Unreachable(redact_url(resp.url), "timed out")
                break
            chunks.append(chunk)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        error = Unreachable(redact_url(resp.url), unreachable_reason(exc))
    if error is not None:
        resp.close()
        raise error
    resp._content = b"".join(chunks)
    resp._content_consumed = True
    resp.close()  # the connection has gone back to the pool; the content stays
