"""A local Standard Webhooks receiver for the webhook tests: verifies every signature with the
``standardwebhooks`` package (as an app's receiver would) and records what it answered.

``stop()`` takes it down (connections are refused), ``start()`` brings it back on the same port.
``answer`` is the status it answers; ``hang_on`` makes the n-th request (1-based) block until
``release()``, after ``hanging`` is set, and then answer 503.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError


class WebhookReceiver:
    def __init__(self, secrets: list[str] | None = None):
        self.secrets = list(secrets or [])
        self.port = 0
        self.answer = 200
        self.hang_on: int | None = None
        self.hanging = threading.Event()
        self._release = threading.Event()
        self.requests: list[dict] = []   # every request that arrived: id, payload, verified secrets
        self.accepted: list[str] = []    # webhook-ids answered 2xx
        self.errors: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "WebhookReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                verified = []
                for secret in receiver.secrets:
                    try:
                        Webhook(secret).verify(body, dict(self.headers.items()))
                        verified.append(secret)
                    except WebhookVerificationError:
                        pass
                with receiver._lock:
                    receiver.requests.append({"id": self.headers.get("webhook-id"), "payload": json.loads(body),
                                              "raw": body.decode(), "headers": dict(self.headers.items()),
                                              "verified": verified})
                    number = len(receiver.requests)
                if not verified:
                    receiver.errors.append(f"signature not verified for {self.headers.get('webhook-id')}")
                    status = 400
                elif receiver.hang_on == number:
                    receiver.hanging.set()
                    receiver._release.wait(60)
                    status = 503
                else:
                    status = receiver.answer
                webhook_id = self.headers.get("webhook-id")
                accepted = 200 <= status < 300
                if accepted:  # recorded before the answer leaves: a sender that sees the 2xx finds it here
                    with receiver._lock:
                        receiver.accepted.append(webhook_id)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the sender is gone: nothing was answered, so nothing was accepted
                    if accepted:
                        with receiver._lock:
                            receiver.accepted.remove(webhook_id)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def release(self) -> None:
        self._release.set()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def payloads(self, event_type: str | None = None) -> list[dict]:
        return [r["payload"] for r in self.requests if event_type is None or r["payload"]["type"] == event_type]
