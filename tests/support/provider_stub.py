"""A local provider API for the proxy tests: records every request and answers by path.

Paths (under any prefix): ``echo`` (200, JSON of what arrived, header *names* only so no
credential is echoed, plus ``Set-Cookie`` and ``X-Upstream``), ``protected`` (401 while the
bearer token is in ``rejected``, or always with ``reject_all``, else like ``echo``), ``limited`` (429 with ``Retry-After: 7``),
``big?size=N`` (N bytes, chunked, no Content-Length), ``declared?size=N`` (N bytes with
Content-Length), ``redirect?to=URL`` (302 to URL).
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

CHUNK = 64 * 1024


class ProviderStub:
    def __init__(self):
        self.requests: list[dict] = []
        self.rejected: set[str] = set()
        self.reject_all = False
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ProviderStub":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {"method": self.command, "path": parts.path, "query": parse_qsl(parts.query),
                          "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                stub.requests.append(record)
                name = parts.path.rsplit("/", 1)[-1]
                query = dict(record["query"])
                auth = record["headers"].get("authorization", "")
                if name == "protected" and (stub.reject_all or auth.removeprefix("Bearer ") in stub.rejected):
                    return self._reply(401, b'{"error": "invalid_token"}', [("WWW-Authenticate", "Bearer")])
                if name in ("echo", "protected"):
                    out = {"method": self.command, "path": parts.path, "query": record["query"],
                           "header_names": sorted(record["headers"]), "body": body.decode("utf-8", "replace")}
                    return self._reply(200, json.dumps(out).encode(), [("Set-Cookie", "session=provider"),
                                                                       ("X-Upstream", "yes")])
                if name == "limited":
                    return self._reply(429, b'{"error": "slow down"}', [("Retry-After", "7")])
                if name == "redirect":
                    return self._reply(302, b"", [("Location", query["to"])])
                if name == "declared":
                    size = int(query["size"])
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    return self._write_blocks(size, chunked=False)
                if name == "big":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    return self._write_blocks(int(query["size"]), chunked=True)
                return self._reply(404, b"{}")

            def _write_blocks(self, size: int, chunked: bool):
                block = b"x" * CHUNK
                sent = 0
                try:
                    while sent < size:
                        piece = block[:min(CHUNK, size - sent)]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                        sent += len(piece)
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the proxy stopped reading

            def _reply(self, status: int, body: bytes, headers=()):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers:
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
