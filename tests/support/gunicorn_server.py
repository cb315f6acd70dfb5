"""Run the real service under gunicorn (``wsgi:app`` with ``deploy/gunicorn.conf.py``) for socket-level tests."""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GunicornServer:
    """``gunicorn -c deploy/gunicorn.conf.py wsgi:app`` on 127.0.0.1 with the given settings.

    ``config`` is a settings dict (as :func:`connect_service.testing.make_config` returns);
    each entry becomes a ``CONNECT_<NAME>`` env var. stdout/stderr go to ``log_path``.
    """

    def __init__(self, config: dict, log_path: str, workers: int = 1, extra_env: dict | None = None,
                 app: str = "wsgi:app"):
        self.app = app  # gunicorn's APP_MODULE, e.g. "tests.support.fault_app:build()"
        self.port = free_port()
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
        for name, value in config.items():
            if isinstance(value, list):
                value = ",".join(value)
            env[f"CONNECT_{name.upper()}"] = str(value)
        env.update({"CONNECT_BIND": f"127.0.0.1:{self.port}", "CONNECT_WORKERS": str(workers),
                    "CONNECT_THREADS": "2"})
        env.update(extra_env or {})
        self.env = env
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: float = 60.0) -> "GunicornServer":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "gunicorn"), "-c", os.path.join(ROOT, "deploy", "gunicorn.conf.py"), self.app],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}: {self.log()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not come up: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """One request on a fresh connection; returns ``(status, headers, body bytes)``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def __enter__(self) -> "GunicornServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
