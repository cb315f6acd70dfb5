"""A TCP proxy the tests can cut and restore: a database outage without touching the real server.

``cut()`` closes every forwarded connection and refuses new ones (the port
stays bound, connections are accepted and dropped at once); ``cut(silent=True)``
instead holds new connections open without ever answering (a database host
that vanished: connects hang until the client's own timeout). ``restore()``
forwards again (and closes the held ones, so they fail rather than hang).
Used in front of the shared PostgreSQL, which must never be stopped (the other
test pass is using it).
"""
from __future__ import annotations

import socket
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._held: list[socket.socket] = []
        self._cut = False
        self._silent = False
        self._stopped = False
        #: connections accepted and forwarded so far
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def cut(self, silent: bool = False) -> None:
        """Drop every forwarded connection; until :meth:`restore`, drop new ones (or hold them, ``silent``)."""
        with self._lock:
            self._cut, self._silent = True, silent
            for sock in list(self._open):
                _close(sock)
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self._cut = False
            held, self._held = self._held, []
        for sock in held:
            _close(sock)

    def stop(self) -> None:
        self._stopped = True
        self.cut()
        self.restore()  # closes held connections
        _close(self._listener)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut, silent = self._cut, self._silent
                if cut and silent:
                    self._held.append(client)
                    continue
            if cut:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self.accepted += 1
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                _close(sock)
                with self._lock:
                    self._open.discard(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
