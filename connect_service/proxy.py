"""``/v1/connections/{id}/proxy/{path}``: call a provider's API with the connection's credential injected.

The caller never handles the token. The request goes to the API base URL the
connection type declares (``ConnectionType.proxy_base_url``), the base path
kept; the secret is added as the type says (``proxy_injection``: a bearer
token, a named header or a query parameter). An OAuth token expiring within
the refresh margin is refreshed first, and a 401 from the provider forces one
refresh and one retry. Every hop goes through the guarded client (SSRF guard,
the credential's ``allowed_hosts``). The caller's ``Authorization`` and
``Cookie`` and hop-by-hop headers are never forwarded; the answer comes back
streamed, without ``Set-Cookie``, at most ``proxy_max_response_bytes`` long.
Each call writes an audit event ``proxy.request`` (method, host, path and
status; never the query).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests

from . import audit, errors, lifecycle
from .connection_types import ConnectionType
from .connections import read_settings
from .db import db_now, write_transaction
from .extensions import registry, settings
from .http import GuardedClient, OutboundError, redact_url
from .outbound import outbound_client
from .models import Connection, Credential, Requirement, WorkflowVersion

#: RFC 9110 §7.6.1 connection-specific headers, plus what the transport sets itself
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"})
#: never sent on: the caller's credentials for this service, and what only concerns the hop to us
DROPPED_REQUEST = HOP_BY_HOP | {"authorization", "cookie", "x-forwarded-for", "x-forwarded-host",
                                "x-forwarded-proto", "x-forwarded-port", "x-real-ip", "forwarded", "x-request-id"}
DROPPED_RESPONSE = HOP_BY_HOP | {"set-cookie", "set-cookie2"}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


@dataclass
class ProxyResponse:
    """What the provider answered: status, the headers passed on, and the body as it arrives."""

    status: int
    headers: list[tuple[str, str]]
    body: Iterable[bytes]


@dataclass
class _Target:
    cls: type[ConnectionType]
    base_url: str
    injection: tuple[str, str | None]
    allowed_hosts: list[str] | None


def _requirement_data(conn: Connection) -> Mapping[str, Any]:
    if not conn.app_id or not conn.requirement_id:
        return {}
    req = (Requirement.select(Requirement.spec).join(WorkflowVersion)
           .where(Requirement.public_id == conn.requirement_id, WorkflowVersion.app == conn.app_id)
           .order_by(WorkflowVersion.number.desc()).first())
    data = (req.spec or {}).get("data") if req is not None else None
    return data if isinstance(data, dict) else {}


def _target(conn: Connection) -> _Target:
    cls = registry().get(conn.type)
    if cls is None or cls.auth == "action_account":
        raise errors.Conflict({"connection": "its type cannot be proxied"})
    if conn.status != "active" or conn.disabled:
        raise errors.Conflict({"connection": f"is {'disabled' if conn.disabled else conn.status}, not active"})
    credential = Credential.get_or_none(Credential.id == conn.credential_id) if conn.credential_id else None
    config = read_settings(conn) if cls.auth == "credentials" else {}
    base = cls.proxy_base_url(config, (credential.settings or {}) if credential else {})
    if not base:
        raise errors.Conflict({"connection": "its connection type declares no API base URL"})
    allowed = list(credential.allowed_hosts or []) if credential is not None else []
    return _Target(cls, base, cls.proxy_injection(_requirement_data(conn)), allowed or None)


_SEGMENT_CHAR = r"[^/\\]"
_NOT_DOT = r"[^/\\.]"
_SEGMENT = rf"({_NOT_DOT}{_SEGMENT_CHAR}*|\.{_NOT_DOT}{_SEGMENT_CHAR}*|\.\.{_SEGMENT_CHAR}+)"
#: JSON Schema pattern of what :func:`_url` accepts as a path: no ``.`` or ``..`` segment, no backslash (and,
#: like the route, a first segment that is not empty)
PATH_PATTERN = rf"^{_SEGMENT}(/{_SEGMENT}?)*$"


def _url(base: str, path: str, query: list[tuple[str, str]]) -> str:
    segments = path.split("/")
    if any(s in (".", "..") for s in segments) or "\\" in path:
        raise errors.BadRequest({"path": "must not contain '.' or '..' segments"})
    url = base.rstrip("/") + "/" + path.lstrip("/")
    return url + ("?" + urlencode(query) if query else "")


def _secret(conn: Connection, cls: type[ConnectionType]) -> str:
    settings_ = read_settings(conn)
    if cls.auth == "oauth2":
        token = ((settings_.get("oauth") or {}).get("credentials") or {}).get("access_token")
    else:
        token = settings_.get(cls.proxy_secret_field)
    if not isinstance(token, str) or not token:
        raise errors.Conflict({"connection": "holds no secret to inject"})
    return token


def _client() -> GuardedClient:
    cfg = settings()
    return outbound_client(user_agent="connect-service-proxy", max_response_bytes=cfg["proxy_max_response_bytes"],
                           max_total_time=None)


def _send(client: GuardedClient, target: _Target, method: str, url: str, headers: dict[str, str],
          body: bytes, secret: str) -> requests.Response:
    headers = dict(headers)
    kind, name = target.injection
    if kind == "bearer":
        headers["Authorization"] = f"Bearer {secret}"
    elif kind == "header":
        headers[name] = secret
    else:
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name] + [(name, secret)]
        url = parts._replace(query=urlencode(query)).geturl()
    return client.request(method, url, headers=headers, data=body or None, allowed_hosts=target.allowed_hosts,
                          stream=True)


def forward(conn: Connection, method: str, path: str, query: list[tuple[str, str]],
            headers: Mapping[str, str], body: bytes) -> ProxyResponse:
    """Send the caller's request to the connection's API with its credential; the provider's answer, streamed.

    Errors before the provider answered are API errors: 409 (nothing to
    proxy), 400 (a bad path), 502 (refused destination, unreachable
    provider, refresh failure, body too large).
    """
    method = method.upper()
    target = _target(conn)
    url = _url(target.base_url, path, query)
    host = urlsplit(url).hostname or ""
    dropped = DROPPED_REQUEST | _connection_tokens(headers)
    sent = {k: v for k, v in headers.items() if k.lower() not in dropped}
    started = db_now()
    if target.cls.auth == "oauth2":
        conn = lifecycle.refreshed(conn, False, None)
    client = _client()
    try:
        resp = _send(client, target, method, url, sent, body, _secret(conn, target.cls))
        if resp.status_code == 401 and target.cls.auth == "oauth2":
            resp.close()
            conn = lifecycle.refreshed(conn, True, started)
            resp = _send(client, target, method, url, sent, body, _secret(conn, target.cls))
    except OutboundError as exc:
        client.close()
        _audit(conn, method, host, path, 502)
        raise errors.BadGateway({"proxy": exc.reason, "url": redact_url(exc.url)}) from None
    limit = client.max_response_bytes
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        resp.close()
        client.close()
        _audit(conn, method, host, path, 502)
        raise errors.BadGateway({"proxy": f"the response body is larger than {limit} bytes"})
    _audit(conn, method, host, path, resp.status_code)
    dropped = DROPPED_RESPONSE | _connection_tokens(resp.headers)
    passed = [(k, v) for k, v in resp.headers.items() if k.lower() not in dropped]
    if declared and declared.isdigit():
        passed.append(("Content-Length", declared))
    return ProxyResponse(resp.status_code, passed, _stream(client, resp))


def _connection_tokens(headers: Mapping[str, str]) -> set[str]:
    """Headers a ``Connection`` header names are hop-by-hop too (RFC 9110 §7.6.1)."""
    return {token.strip().lower() for token in (headers.get("Connection") or "").split(",") if token.strip()}


def _stream(client: GuardedClient, resp: requests.Response) -> Iterator[bytes]:
    # Beyond the limit (a body without Content-Length) the stream stops and the connection is cut: the
    # caller sees an incomplete body, never a complete-looking truncated one.
    try:
        yield from client.iter_body(resp)
    finally:
        client.close()


def _audit(conn: Connection, method: str, host: str, path: str, status: int) -> None:
    with write_transaction():
        audit.record("proxy.request", org_id=conn.org_id, target_type="connection", target_id=conn.id,
                     app_id=conn.app_id, details={"method": method, "host": host, "path": "/" + path.lstrip("/"),
                                                  "status": status})
