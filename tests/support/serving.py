"""Serve a test WSGI app on 127.0.0.1 from a daemon thread (shared by the test servers)."""
from __future__ import annotations

import threading

from werkzeug.serving import WSGIRequestHandler, make_server


class QuietHandler(WSGIRequestHandler):
    """No access-log line per request (test output stays readable)."""

    def log_request(self, code="-", size="-"):
        pass


class BackgroundWSGIServer:
    """Mixin: serves ``self.app`` on ``self.host``:``self._port`` (0 = a free port) in a daemon thread.

    ``start()`` sets ``port`` and ``url``, calls :meth:`_started`, then serves; ``stop()`` shuts down.
    Usable as a context manager.
    """

    thread_name = "test-server"
    _server = None
    _thread: threading.Thread | None = None

    def start(self):
        if self._server is not None:
            return self
        self._server = make_server(self.host, self._port, self.app, threaded=True, request_handler=QuietHandler)
        self.port = self._server.server_port
        self.url = f"http://{self.host}:{self.port}"
        self._started()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.thread_name}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _started(self) -> None:
        """Hook for subclasses: runs once ``port`` and ``url`` are known, before the first request."""

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
