"""The guarded outbound HTTP client (SSRF guard).

Every test talks only to servers on 127.0.0.1. Name resolution is faked (no
real DNS query leaves the machine) and an autouse guard fails any socket
connect to a non-loopback address, so "public" hosts are simulated by a fake
resolver plus a connection hook that records the pinned address and then
connects to the local server.
"""

from __future__ import annotations

import datetime
import gzip
import http.server
import ipaddress
import json
import socket
import ssl
import threading
import time
import traceback
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3.util.connection

from connect_service.http import (
    BlockedDestination,
    GuardedClient,
    OutboundError,
    ResponseTooLarge,
    TooManyRedirects,
    Unreachable,
    is_public_address,
    redact_url,
)

PUBLIC_IP = "93.184.216.34"
SECRET = "s3cr3t-VALUE"


# --------------------------------------------------------------------------
# safety nets: fake DNS, loopback-only sockets


class FakeDNS:
    """socket.getaddrinfo replacement: IP literals pass through, names come from ``answers``."""

    def __init__(self, real):
        self.real = real
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []

    def set(self, host, *answers):
        """Each positional argument is the answer to one successive lookup; the last repeats."""
        self.answers[host] = [list(a) for a in answers]

    def lookups(self, host):
        return self.calls.count(host)

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        host = host.decode() if isinstance(host, bytes) else host
        try:
            ipaddress.ip_address(str(host).split("%")[0])
        except ValueError:
            pass
        else:
            return self.real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        self.calls.append(host)
        queue = self.answers.get(host)
        if not queue:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        result = []
        for ip in answer:
            if ":" in ip:
                result.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port or 0, 0, 0)))
            else:
                result.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port or 0)))
        return result


@pytest.fixture(autouse=True)
def dns(monkeypatch):
    fake = FakeDNS(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail the test instead of sending a packet anywhere but loopback."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            ip = ipaddress.ip_address(address[0].split("%")[0])
            ip = getattr(ip, "ipv4_mapped", None) or ip
            if not ip.is_loopback:
                raise AssertionError(f"test tried to connect to non-loopback {address!r}")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


# --------------------------------------------------------------------------
# local servers


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.handle_any()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    def reply(self, status=200, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = {
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host"),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("latin1"),
            "peer": self.client_address,
        }
        self.server.seen.append(record)
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = parts.path
        if route == "/redirect":
            self.reply(int(query.get("code", 302)), headers=[("Location", query["to"])])
        elif route == "/loop":
            self.reply(302, headers=[("Location", "/loop")])
        elif route == "/slow":
            time.sleep(float(query.get("s", 2)))
            self.reply(200, b"late")
        elif route == "/big":
            self.reply(200, b"x" * int(query["n"]))
        elif route == "/gzip":
            data = gzip.compress(b"y" * int(query["n"]))
            self.reply(200, data, headers=[("Content-Encoding", "gzip")])
        elif route == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif route == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
        else:
            self.reply(200, json.dumps(record).encode(), headers=[("Content-Type", "application/json")])


class IPv6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


class LocalServer:
    def __init__(self, tls_context=None, bind="127.0.0.1"):
        server_class = IPv6Server if ":" in bind else http.server.ThreadingHTTPServer
        self.httpd = server_class((bind, 0), Handler)
        self.httpd.seen = []
        self.scheme = "http"
        if tls_context is not None:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def seen(self):
        return self.httpd.seen

    def url(self, path="/", host="127.0.0.1"):
        return f"{self.scheme}://{host}:{self.port}{path}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = LocalServer()
    yield srv
    srv.stop()


@pytest.fixture
def other_server():
    srv = LocalServer()
    yield srv
    srv.stop()


@pytest.fixture
def client():
    with GuardedClient(allowed_private_hosts=["127.0.0.1"], timeout=5) as c:
        yield c


def assert_no_secret(exc: BaseException, *secrets: str):
    text = "".join(traceback.format_exception(exc)) + repr(exc) + str(getattr(exc, "url", ""))
    for secret in secrets or (SECRET,):
        assert secret not in text


# --------------------------------------------------------------------------
# the allow-list


def test_loopback_blocked_without_allow_list(server):
    with pytest.raises(BlockedDestination) as info:
        GuardedClient().get(server.url("/echo"))
    assert info.value.reason == "address is not public"
    assert server.seen == []


def test_loopback_allowed_when_allow_listed(server, client):
    resp = client.get(server.url("/echo?x=1"))
    assert resp.status_code == 200
    body = resp.json()
    assert body["path"] == "/echo?x=1"
    assert body["host"] == f"127.0.0.1:{server.port}"
    assert body["headers"]["user-agent"] == "connect-service"
    assert resp.history == []
    assert isinstance(resp, requests.Response)
    assert isinstance(resp.elapsed, datetime.timedelta)


def test_ipv6_loopback_literal_when_allow_listed():
    try:
        srv = LocalServer(bind="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        url = f"http://[::1]:{srv.port}/echo"
        with pytest.raises(BlockedDestination):
            GuardedClient(allowed_private_hosts=["127.0.0.1"]).get(url)
        for entry in ("::1", "[::1]", "0:0:0:0:0:0:0:1"):
            resp = GuardedClient(allowed_private_hosts=[entry]).get(url)
            assert resp.json()["host"] == f"[::1]:{srv.port}"
    finally:
        srv.stop()


@pytest.mark.parametrize("entry", ["idp.internal", "IDP.Internal.", "  idp.internal "])
def test_allow_listed_name_resolving_to_loopback(server, dns, entry):
    dns.set("idp.internal", ["127.0.0.1"])
    with GuardedClient(allowed_private_hosts=[entry]) as c:
        resp = c.get(server.url("/echo", host="idp.internal"))
    assert resp.json()["host"] == f"idp.internal:{server.port}"


def test_allow_list_is_exact_host_match(server, dns):
    dns.set("localhost", ["127.0.0.1"])
    dns.set("sub.localhost", ["127.0.0.1"])
    c = GuardedClient(allowed_private_hosts=["localhost"])
    assert c.get(server.url("/", host="localhost")).status_code == 200
    for host in ("sub.localhost", "127.0.0.1"):
        with pytest.raises(BlockedDestination):
            c.get(server.url("/", host=host))


def test_allow_list_accepts_a_single_string(server):
    assert GuardedClient(allowed_private_hosts="127.0.0.1").get(server.url()).status_code == 200


@pytest.mark.parametrize("entry", ["", "*.internal", "http://idp.internal", "0x7f000001"])
def test_invalid_allow_list_entry_fails_at_construction(entry):
    with pytest.raises(ValueError):
        GuardedClient(allowed_private_hosts=[entry])


# --------------------------------------------------------------------------
# what counts as private


NON_PUBLIC = [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254", "169.254.0.1", "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3",
    "192.0.2.1", "198.18.0.1", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "fec0::1", "ff02::1", "ff0e::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1", "2002:7f00:1::1", "2002:a9fe:a9fe::1",
    "2001::1", "2001:db8::1", "100::1",
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
          "2002:808:808::1"]


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_non_public_addresses(address):
    assert is_public_address(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address):
    assert is_public_address(ipaddress.ip_address(address)) is True


def _literal_url(address, path="/"):
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:8080{path}"


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_ip_literal_urls_refused(address, dns):
    with pytest.raises(BlockedDestination) as info:
        GuardedClient().get(_literal_url(address))
    assert "not public" in info.value.reason
    assert dns.calls == []


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_names_resolving_to_non_public_addresses_refused(address, dns):
    dns.set("internal.example.com", [address])
    with pytest.raises(BlockedDestination) as info:
        GuardedClient().get("http://internal.example.com/")
    assert info.value.reason == "host resolves to an address that is not public"
    # the message does not disclose the internal address
    assert address not in str(info.value)


def test_every_resolved_address_is_checked(dns):
    dns.set("mixed.example.com", [PUBLIC_IP, "10.0.0.1"])
    with pytest.raises(BlockedDestination):
        GuardedClient().check_url("http://mixed.example.com/")


@pytest.mark.parametrize("address", PUBLIC)
def test_check_url_accepts_public_names(address, dns):
    dns.set("api.example.com", [address])
    GuardedClient().check_url("https://api.example.com/v1?token=x")
    assert dns.lookups("api.example.com") == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0X7F000001/",
        "http://0177.0.0.1/",
        "http://0x7f.0.0.1/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://127.0.1/",
        "http://017700000001/",
        "http://127.000.000.001/",
        "http://0251.0376.0251.0376/",  # 169.254.169.254 in octal
        "http://2852039166/",  # 169.254.169.254 in decimal
        "http://1.2.3.4.5/",
        "http://%31%32%37.0.0.1/",
    ],
)
def test_numeric_host_spellings_refused_before_resolution(url, dns, server):
    # even with 127.0.0.1 allow-listed, a non-canonical spelling never reaches a resolver
    with pytest.raises(BlockedDestination):
        GuardedClient(allowed_private_hosts=["127.0.0.1"]).get(url)
    assert dns.calls == []
    assert server.seen == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "ftp://example.com/",
        "dict://127.0.0.1:11211/",
        "ldap://127.0.0.1/",
        "data:text/plain,hello",
        "javascript:alert(1)",
        "//example.com/",
        "example.com/path",
        "http:///path",
        "",
    ],
)
def test_other_schemes_and_hostless_urls_refused(url, dns):
    with pytest.raises(BlockedDestination):
        GuardedClient(allowed_private_hosts=["127.0.0.1"]).get(url)
    assert dns.calls == []


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{SECRET}@127.0.0.1:{{port}}/",
        "http://127.0.0.1:{port}@evil.example/",
        "http://evil.example@127.0.0.1:{port}/",
        "http://127.0.0.1:{port}\\@evil.example/",
        "http://127.0.0.1:{port}\\/",
        "http://127.0.0.1:{port}/a b",
        "http://127.0.0.1:{port}/\r\nX-Injected: 1",
    ],
)
def test_userinfo_backslash_and_control_characters_refused(url, server, client):
    with pytest.raises(BlockedDestination) as info:
        client.get(url.format(port=server.port))
    assert server.seen == []
    assert_no_secret(info.value)


def test_dns_failure_is_unreachable(dns):
    with pytest.raises(Unreachable) as info:
        GuardedClient().get(f"https://nowhere.example.com/?token={SECRET}")
    assert info.value.reason == "could not resolve host"
    assert_no_secret(info.value)


# --------------------------------------------------------------------------
# pinning: resolve once, connect to the checked address


def test_connects_to_the_first_checked_address_not_a_second_lookup(server, dns):
    # A rebinding resolver: first answer loopback (allow-listed name), later
    # answers 127.0.0.2 where nothing listens. Success proves the checked
    # address was used and there was exactly one lookup.
    dns.set("pin.test", ["127.0.0.1"], ["127.0.0.2"])
    with GuardedClient(allowed_private_hosts=["pin.test"]) as c:
        resp = c.get(server.url("/echo", host="pin.test"))
    assert resp.status_code == 200
    assert resp.json()["host"] == f"pin.test:{server.port}"
    assert dns.lookups("pin.test") == 1


def test_next_checked_address_is_tried_when_connecting_fails(server, dns):
    # nothing listens on 127.0.0.2; the second checked address works
    dns.set("dual.test", ["127.0.0.2", "127.0.0.1"], ["10.0.0.1"])
    with GuardedClient(allowed_private_hosts=["dual.test"]) as c:
        assert c.get(server.url("/echo", host="dual.test")).json()["host"] == f"dual.test:{server.port}"
    assert dns.lookups("dual.test") == 1


@pytest.fixture
def connections(monkeypatch, server):
    """Record where urllib3 connects, then actually connect to the local server."""
    made = []
    real = urllib3.util.connection.create_connection

    def create_connection(address, *args, **kwargs):
        made.append(address)
        return real(("127.0.0.1", server.port), *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    return made


def test_dns_rebinding_to_private_address_cannot_happen(server, dns, connections):
    dns.set("rebind.example.com", [PUBLIC_IP], ["127.0.0.1"], ["169.254.169.254"])
    resp = GuardedClient().get(f"http://rebind.example.com:{server.port}/echo")
    assert resp.status_code == 200
    assert connections == [(PUBLIC_IP, server.port)]
    assert dns.lookups("rebind.example.com") == 1
    assert resp.json()["host"] == f"rebind.example.com:{server.port}"
    assert resp.url == f"http://rebind.example.com:{server.port}/echo"


def test_public_ipv6_address_is_pinned(server, dns, connections):
    dns.set("v6.example.com", ["2606:4700::1111"])
    GuardedClient().get("http://v6.example.com/")
    assert connections == [("2606:4700::1111", 80)]
    assert server.seen[-1]["host"] == "v6.example.com"


def test_host_header_cannot_be_overridden(server, client):
    resp = client.get(server.url("/echo"), headers={"Host": "metadata.google.internal"})
    assert resp.json()["host"] == f"127.0.0.1:{server.port}"


def test_unchecked_request_is_never_sent(server, client):
    prep = requests.Request("GET", server.url()).prepare()
    with pytest.raises(BlockedDestination):
        client._adapter.send(prep, timeout=1)
    assert server.seen == []


def test_environment_proxies_are_ignored(server, client, monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://10.1.2.3:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert client.get(server.url("/echo")).json()["path"] == "/echo"


# --------------------------------------------------------------------------
# redirects


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://localhost:{port}/",
        "http://2130706433:{port}/",
        "http://0x7f000001:{port}/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0:{port}/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://0251.0376.0251.0376/",
        "http://internal.example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{port}/",
        "http://evil@127.0.0.1:{port}/",
    ],
)
def test_redirect_to_forbidden_destination_refused(target, server, client, dns):
    dns.set("localhost", ["127.0.0.1"])
    dns.set("internal.example.com", ["10.0.0.5"])
    target = target.format(port=server.port)
    with pytest.raises(BlockedDestination) as info:
        client.get(server.url("/redirect"), params={"to": target})
    assert info.value.reason.startswith("redirect refused")
    assert len(server.seen) == 1  # only the first request reached the server


def test_redirect_to_public_host_that_resolves_privately_refused(server, client, dns):
    dns.set("sneaky.example.com", ["169.254.169.254"])
    with pytest.raises(BlockedDestination) as info:
        client.get(server.url("/redirect"), params={"to": f"http://sneaky.example.com/?token={SECRET}"})
    assert info.value.url == "http://sneaky.example.com/"
    assert_no_secret(info.value)


def test_allowed_redirect_is_followed_and_rechecked(server, other_server, client):
    resp = client.get(server.url("/redirect"), params={"to": other_server.url("/echo?step=2")})
    assert resp.status_code == 200
    assert resp.json()["path"] == "/echo?step=2"
    assert [r.status_code for r in resp.history] == [302]
    assert resp.url == other_server.url("/echo?step=2")


def test_relative_redirect(server, client):
    resp = client.get(server.url("/redirect"), params={"to": "/echo?rel=1"})
    assert resp.json()["path"] == "/echo?rel=1"


def test_redirects_not_followed_when_disabled(server, client):
    resp = client.get(server.url("/redirect"), params={"to": "http://169.254.169.254/"},
                      allow_redirects=False)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "http://169.254.169.254/"


def test_too_many_redirects(server):
    c = GuardedClient(allowed_private_hosts=["127.0.0.1"], max_redirects=3)
    with pytest.raises(TooManyRedirects):
        c.get(server.url("/loop"))
    assert len(server.seen) == 4  # the request and three redirects


def test_max_redirects_zero(server, other_server):
    c = GuardedClient(allowed_private_hosts=["127.0.0.1"], max_redirects=0)
    with pytest.raises(TooManyRedirects):
        c.get(server.url("/redirect"), params={"to": other_server.url()})
    assert other_server.seen == []


@pytest.mark.parametrize("code", [302, 303])
def test_post_redirected_with_302_303_becomes_bodyless_get(code, server, client):
    resp = client.post(server.url("/redirect"), params={"to": "/echo", "code": code}, data={"secret": SECRET})
    first, second = server.seen
    assert first["method"] == "POST" and SECRET in first["body"]
    assert second["method"] == "GET" and second["body"] == ""
    assert "content-type" not in second["headers"]
    assert resp.json()["method"] == "GET"


@pytest.mark.parametrize("code", [307, 308])
def test_same_origin_307_308_keep_method_and_body(code, server, client):
    resp = client.post(server.url("/redirect"), params={"to": "/echo", "code": code}, json={"a": 1})
    assert resp.json()["method"] == "POST"
    assert json.loads(resp.json()["body"]) == {"a": 1}


@pytest.mark.parametrize("code", [307, 308])
def test_cross_origin_307_308_with_body_refused(code, server, other_server, client):
    with pytest.raises(BlockedDestination):
        client.post(server.url("/redirect"), params={"to": other_server.url("/echo"), "code": code},
                    data={"client_secret": SECRET})
    assert other_server.seen == []


def test_cross_origin_redirect_drops_credentials(server, other_server, client):
    resp = client.get(
        server.url("/redirect"),
        params={"to": other_server.url("/echo")},
        headers={"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET, "Accept": "application/json"},
        cookies={"session": SECRET},
    )
    headers = resp.json()["headers"]
    assert server.seen[0]["headers"]["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in json.dumps(headers)
    assert headers["accept"] == "application/json"
    assert headers["user-agent"] == "connect-service"


def test_same_origin_redirect_keeps_credentials(server, client):
    resp = client.get(server.url("/redirect"), params={"to": "/echo"}, auth=("user", SECRET))
    assert resp.json()["headers"]["authorization"].startswith("Basic ")


def test_allowed_hosts_enforced_on_url_and_redirects(server, other_server, dns):
    dns.set("api.internal.test", ["127.0.0.1"])
    dns.set("evil.internal.test", ["127.0.0.1"])
    c = GuardedClient(allowed_private_hosts=["127.0.0.1", "api.internal.test", "evil.internal.test"])
    assert c.get(server.url("/echo", host="api.internal.test"), allowed_hosts=["api.internal.test"]).ok
    assert c.get(server.url("/echo", host="api.internal.test"), allowed_hosts=[]).ok  # no restriction
    with pytest.raises(BlockedDestination):
        c.get(server.url("/echo"), allowed_hosts=["api.internal.test"])
    with pytest.raises(BlockedDestination) as info:
        c.get(server.url("/redirect", host="api.internal.test"), allowed_hosts=["api.internal.test"],
              params={"to": other_server.url("/", host="evil.internal.test")})
    assert "allowed_hosts" in info.value.reason
    assert other_server.seen == []


# --------------------------------------------------------------------------
# TLS: SNI and certificate checked against the name while the socket uses the IP


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now, day = datetime.datetime.now(datetime.timezone.utc), datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - day).not_valid_after(now + day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pin.test")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - day).not_valid_after(now + day)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("pin.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder


@pytest.fixture
def tls_server(tls_files):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files / "leaf.pem", tls_files / "leaf.key")
    sni = []
    context.sni_callback = lambda sock, name, ctx: sni.append(name)
    srv = LocalServer(tls_context=context)
    srv.sni = sni
    yield srv
    srv.stop()


def test_tls_uses_hostname_for_sni_and_certificate(tls_server, tls_files, dns):
    dns.set("pin.test", ["127.0.0.1"], ["127.0.0.2"])
    with GuardedClient(allowed_private_hosts=["pin.test"]) as c:
        resp = c.get(tls_server.url("/echo", host="pin.test"), verify=str(tls_files / "ca.pem"))
    assert resp.json()["host"] == f"pin.test:{tls_server.port}"
    assert tls_server.sni == ["pin.test"]
    assert dns.lookups("pin.test") == 1


def test_tls_certificate_for_another_name_is_unreachable(tls_server, tls_files, dns):
    dns.set("other.test", ["127.0.0.1"])
    with GuardedClient(allowed_private_hosts=["other.test"]) as c, pytest.raises(Unreachable) as info:
        c.get(tls_server.url(f"/echo?token={SECRET}", host="other.test"), verify=str(tls_files / "ca.pem"))
    assert info.value.reason == "TLS certificate verification failed"
    assert_no_secret(info.value)
    assert tls_server.seen == []


def test_tls_untrusted_certificate_is_unreachable(tls_server, dns):
    dns.set("pin.test", ["127.0.0.1"])
    with pytest.raises(Unreachable) as info:
        GuardedClient(allowed_private_hosts=["pin.test"]).get(tls_server.url("/", host="pin.test"))
    assert info.value.reason == "TLS certificate verification failed"


def test_https_to_http_downgrade_refused(tls_server, tls_files, server, dns):
    dns.set("pin.test", ["127.0.0.1"])
    c = GuardedClient(allowed_private_hosts=["pin.test", "127.0.0.1"])
    with pytest.raises(BlockedDestination) as info:
        c.get(tls_server.url("/redirect", host="pin.test"), params={"to": server.url("/echo")},
              verify=str(tls_files / "ca.pem"))
    assert "downgrade" in info.value.reason
    assert server.seen == []


# --------------------------------------------------------------------------
# timeouts, failures and limits


def test_read_timeout_is_unreachable(server, client):
    started = time.monotonic()
    with pytest.raises(Unreachable) as info:
        client.get(server.url(f"/slow?s=3&token={SECRET}"), timeout=0.3)
    assert info.value.reason == "timed out"
    assert time.monotonic() - started < 2.5
    assert_no_secret(info.value)


def test_connect_timeout_is_unreachable(client, monkeypatch):
    def hang(*args, **kwargs):
        raise socket.timeout("timed out")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", hang)
    with pytest.raises(Unreachable) as info:
        client.get(f"http://127.0.0.1:9/?token={SECRET}")
    assert info.value.reason == "timed out"
    assert_no_secret(info.value)


def test_timeouts_are_always_set(server, client, monkeypatch):
    seen = []
    real_send = client._adapter.send

    def send(request, **kwargs):
        seen.append(kwargs["timeout"])
        return real_send(request, **kwargs)

    monkeypatch.setattr(client._adapter, "send", send)
    client.get(server.url())
    client.get(server.url(), timeout=None)
    client.get(server.url(), timeout=(1, 2))
    assert seen == [(5.0, 5.0), (5.0, 5.0), (1.0, 2.0)]
    assert GuardedClient().timeout == (10.0, 10.0)


@pytest.mark.parametrize("timeout", [None, 0, -1, (1, 0), "soon"])
def test_timeouts_cannot_be_disabled(timeout):
    with pytest.raises((TypeError, ValueError)):
        GuardedClient(timeout=timeout)


def test_slow_drip_body_hits_the_overall_deadline(server):
    c = GuardedClient(allowed_private_hosts=["127.0.0.1"], timeout=2, max_total_time=0.5)
    started = time.monotonic()
    with pytest.raises(Unreachable) as info:
        c.get(server.url("/drip"))
    assert info.value.reason == "timed out"
    assert time.monotonic() - started < 2


def test_connection_refused_is_unreachable(client):
    with socket.socket() as sock:  # find a free port, then leave it closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(Unreachable) as info:
        client.post(f"http://127.0.0.1:{port}/token?code={SECRET}", data={"client_secret": SECRET},
                    headers={"Authorization": SECRET})
    assert info.value.reason == "connection refused"
    assert info.value.url == f"http://127.0.0.1:{port}/token"
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert_no_secret(info.value)


def test_response_size_limit(server):
    c = GuardedClient(allowed_private_hosts=["127.0.0.1"], max_response_bytes=1000)
    assert c.get(server.url("/big?n=1000")).content == b"x" * 1000
    with pytest.raises(ResponseTooLarge):
        c.get(server.url("/big?n=1001"))


def test_response_size_limit_applies_after_decompression(server):
    c = GuardedClient(allowed_private_hosts=["127.0.0.1"], max_response_bytes=100_000)
    assert c.get(server.url("/gzip?n=1000")).content == b"y" * 1000
    with pytest.raises(ResponseTooLarge):
        c.get(server.url("/gzip?n=5000000"))


def test_chunked_and_head_responses(server, client):
    assert client.get(server.url("/chunked")).text == "hello chunked world"
    resp = client.request("HEAD", server.url("/big?n=10"))
    assert resp.status_code == 200 and resp.content == b""


def test_connection_is_reused(server, client):
    client.get(server.url("/echo"))
    client.get(server.url("/echo"))
    assert server.seen[0]["peer"] == server.seen[1]["peer"]


def test_http_errors_are_returned_not_raised(server, client):
    resp = client.get(server.url("/redirect"), params={"to": "/echo", "code": 300})
    assert resp.status_code == 300


# --------------------------------------------------------------------------
# errors never carry secrets


def test_error_attributes_and_hierarchy():
    err = BlockedDestination("https://example.com/x", "address is not public")
    assert isinstance(err, OutboundError)
    assert (err.url, err.reason, err.code) == ("https://example.com/x", "address is not public",
                                               "blocked_destination")
    assert str(err) == "address is not public (https://example.com/x)"
    assert Unreachable.code == "unreachable"
    for cls in (BlockedDestination, Unreachable, TooManyRedirects, ResponseTooLarge):
        assert issubclass(cls, OutboundError)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pw@example.com:8443/a/b?token=1#frag", "https://example.com:8443/a/b"),
        ("http://example.com/?code=abc", "http://example.com/"),
        ("http://[::1]:80/x?y", "http://[::1]:80/x"),
        ("http://[::1/x?y", "<invalid URL>"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/?code={s}",
        "http://user:{s}@example.com/",
        "http://10.0.0.1/path?client_secret={s}#{s}",
        "gopher://127.0.0.1/?{s}",
        "http://0x7f000001/?{s}",
        "http://example.com:{s}/",
        "http://[::1/?{s}",
    ],
)
def test_refusal_messages_contain_no_query_userinfo_body_or_headers(url, dns):
    with pytest.raises(OutboundError) as info:
        GuardedClient().post(url.format(s=SECRET), data={"client_secret": SECRET},
                             headers={"Authorization": f"Bearer {SECRET}"}, params={"state": SECRET})
    assert_no_secret(info.value)
    assert "?" not in str(info.value)
