"""Run the shipped nginx site (``deploy/nginx-connect.conf``) on loopback ports for deployment tests.

The file is copied with only deployment specifics substituted: listen ports (127.0.0.1), the
upstream port, ``server_name``, certificate and log paths (and, when a test asks,
``proxy_read_timeout``). Everything else (error pages, HSTS, forwarded headers, log format, body
limit) is tested exactly as shipped.
"""
from __future__ import annotations

import datetime
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

from .gunicorn_server import ROOT, free_port

SITE = os.path.join(ROOT, "deploy", "nginx-connect.conf")


def find_nginx() -> str | None:
    """Path of the nginx binary (``scripts/test.sh`` installs Debian's), or None."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if os.access(p, os.X_OK)), None)


def self_signed_certificate(directory: str, names: list[str]) -> tuple[str, str]:
    """A self-signed certificate for ``names`` (wildcards allowed); returns (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return cert_path, key_path


def site_for_test(text: str, *, http_port: int, https_port: int, upstream_port: int, server_names: str,
                  cert: str, key: str, log_dir: str, proxy_read_timeout: str | None = None) -> str:
    """The shipped site with ports, names and paths substituted; fails loudly when a pattern is gone.

    ``proxy_read_timeout`` (e.g. ``"2s"``) replaces the shipped value, so a test can reach the 504
    without waiting the production timeout out; None keeps the file's own.
    """
    subs = [
        (r"^\s*listen \[::\]:.*\n", ""),                       # no IPv6 needed on loopback
        (r"listen 80\b", f"listen 127.0.0.1:{http_port}"),
        (r"listen 443\b", f"listen 127.0.0.1:{https_port}"),
        (r"server 127\.0\.0\.1:8000;", f"server 127.0.0.1:{upstream_port};"),
        (r"server_name connect\.example\.com \*\.apps\.example\.com;", f"server_name {server_names};"),
        (r"/etc/ssl/certs/connect\.pem", cert),
        (r"/etc/ssl/private/connect\.key", key),
        (r"/var/log/nginx/", log_dir.rstrip("/") + "/"),
    ]
    if proxy_read_timeout is not None:
        subs.append((r"proxy_read_timeout \S+;", f"proxy_read_timeout {proxy_read_timeout};"))
    for pattern, repl in subs:
        text, n = re.subn(pattern, repl, text, flags=re.M)
        assert n, f"deploy/nginx-connect.conf no longer contains {pattern!r}"
    return text


class NginxSite:
    """nginx in the foreground serving the shipped site in ``directory``; ``start()``/``stop()``."""

    def __init__(self, directory: str, upstream_port: int, names: list[str],
                 proxy_read_timeout: str | None = None):
        self.dir = directory
        self.http_port, self.https_port = free_port(), free_port()
        self.names = names
        self.log_dir = os.path.join(directory, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.cert, self.key = self_signed_certificate(directory, names)
        with open(SITE, encoding="utf-8") as fh:
            site = site_for_test(fh.read(), http_port=self.http_port, https_port=self.https_port,
                                 upstream_port=upstream_port, server_names=" ".join(names),
                                 cert=self.cert, key=self.key, log_dir=self.log_dir,
                                 proxy_read_timeout=proxy_read_timeout)
        with open(os.path.join(directory, "site.conf"), "w", encoding="utf-8") as fh:
            fh.write(site)
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers keep access to the temp folder
        main = (f"{user}worker_processes 1;\npid {directory}/nginx.pid;\nerror_log {self.log_dir}/main.error.log;\n"
                "events { worker_connections 256; }\n"
                "http {\n"
                f"  client_body_temp_path {directory}/body; proxy_temp_path {directory}/proxy;\n"
                f"  fastcgi_temp_path {directory}/fcgi; uwsgi_temp_path {directory}/uwsgi; "
                f"scgi_temp_path {directory}/scgi;\n"
                f"  access_log off;\n  include {directory}/site.conf;\n}}\n")
        self.conf = os.path.join(directory, "nginx.conf")
        with open(self.conf, "w", encoding="utf-8") as fh:
            fh.write(main)
        self.proc: subprocess.Popen | None = None

    def start(self, wait: float = 20.0) -> "NginxSite":
        nginx = find_nginx()
        check = subprocess.run([nginx, "-t", "-p", self.dir, "-c", self.conf], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([nginx, "-p", self.dir, "-c", self.conf, "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.log_dir, "stderr"), "wb"))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log("stderr") + self.log("main.error.log")
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self, name: str) -> str:
        try:
            with open(os.path.join(self.log_dir, name), encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def request(self, method: str, host: str, path: str, body: bytes | None = None, headers: dict | None = None,
                https: bool = True, source: str = "127.0.0.1"):
        """One request to ``host`` (SNI and Host header) from loopback address ``source``.

        Returns ``(status, headers, body bytes)``; ``headers`` is an ``http.client.HTTPMessage``
        (case-insensitive ``[name]``, ``get_all("Set-Cookie")``). The certificate is verified.
        """
        if https:
            ctx = ssl.create_default_context(cafile=self.cert)
            conn = _PinnedHTTPS(host, self.https_port, context=ctx, timeout=30, source_address=(source, 0))
        else:
            conn = _PinnedHTTP(host, self.http_port, timeout=30, source_address=(source, 0))
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to 127.0.0.1 whatever ``host`` says (``host`` is only the Host header)."""

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), self.timeout, self.source_address)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """Connects to 127.0.0.1 and speaks TLS with SNI = ``host``, checking the certificate for it."""

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout, self.source_address)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
