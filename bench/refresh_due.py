"""refresh-due throughput: N due OAuth connections, R parallel ``connect-service refresh-due`` runners.

    .venv/bin/python bench/bench_api.py --refresh-due [--connections 20000] [--runners 4] [--concurrency 8]
    .venv/bin/python bench/refresh_due.py [same options] [--pg-url URL]

Drops and recreates the PostgreSQL database of ``--pg-url`` and seeds it with one generic OAuth2
credential (the built-in ``dynamiq.connections.OAuth2`` type) whose token URL is a local token
endpoint in this process, and ``--connections`` active connections whose access tokens expired,
each with its own refresh token. Starts the runners together and reports:

- **refreshes/s** = connections refreshed (summed over the runners' summaries) over the **wall
  time**: from just before the first runner process is started until the last one has exited,
  so process start-up (imports, app factory, about a second each on a loaded machine) is
  included; keep ``--connections`` large (10 000–20 000) so it does not dominate. The rate
  between the first and the last token call the endpoint saw is printed too (start-up excluded);
- token endpoint calls, and **double refreshes**: refresh tokens presented to the endpoint more
  than once (each refresh rotates the token, so a second use means two runners refreshed one
  connection; the endpoint answers it anyway, so the count cannot hide behind an error);
- each runner's summary (refreshed / failed / skipped) and the load average before and after.

``--profile FILE`` runs the first runner under pyinstrument (main thread), ``--py-spy FILE`` under
py-spy (every thread; ``.venv/bin/pip install py-spy``) and prints the functions with the most
samples of their own.

The token endpoint is a small asyncio HTTP/1.1 server (a Protocol: keep-alive, one thread): an RFC 6749
§6 refresh endpoint that checks the grant type and the client's Basic credentials and answers
every refresh with a new access token and a rotated refresh token. It is cheap enough that it
is not what the runners wait for (thread-per-connection ``http.server`` was).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from urllib.parse import parse_qs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seed as bench_seed  # noqa: E402  (bench/seed.py, beside this file; this module has a function named seed)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TYPE = "dynamiq.connections.OAuth2"
CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-secret"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/cs_refresh_bench"


class TokenEndpoint:
    """A minimal RFC 6749 token endpoint on asyncio: every refresh_token grant rotates the refresh token.

    ``presented`` counts each refresh token presented; ``first_call``/``last_call`` are
    ``time.monotonic()`` of the first and the last refresh answered.
    """

    def __init__(self):
        self.presented: Counter[str] = Counter()
        self.first_call: float | None = None
        self.last_call: float | None = None
        self.errors = 0
        self._basic = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}/token"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _TokenProtocol(self), "127.0.0.1", 0, backlog=512))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    def answer(self, request_line: bytes, headers: dict[bytes, bytes], body: bytes) -> tuple[str, dict]:
        """(status line, JSON body) for one request."""
        if not request_line.startswith(b"POST /token "):
            return "404 Not Found", {"error": "not_found"}
        form = parse_qs(body.decode())
        if headers.get(b"authorization", b"").decode() != self._basic:
            return "401 Unauthorized", {"error": "invalid_client"}
        if form.get("grant_type") != ["refresh_token"] or not form.get("refresh_token"):
            return "400 Bad Request", {"error": "unsupported_grant_type"}
        self.presented[form["refresh_token"][0]] += 1
        now = time.monotonic()
        self.first_call = self.first_call or now
        self.last_call = now
        return "200 OK", {"access_token": secrets.token_hex(16), "token_type": "Bearer", "expires_in": 3600,
                          "refresh_token": secrets.token_hex(16), "scope": "read offline_access"}


class _TokenProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive for :class:`TokenEndpoint`: requests with a Content-Length body, in order."""

    def __init__(self, endpoint: TokenEndpoint):
        self.endpoint = endpoint
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].split(b"\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return  # the body is still on its way
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            status, answer = self.endpoint.answer(lines[0], headers, body)
            if not status.startswith("200"):
                self.endpoint.errors += 1
            payload = json.dumps(answer).encode()
            self.transport.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                                 f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            if headers.get(b"connection", b"").lower() == b"close":
                self.transport.close()
                return


def seed(pg_url: str, count: int, token_url: str) -> dict:
    """A fresh database with the credential and ``count`` due connections; returns the service config."""
    sys.path.insert(0, ROOT)
    from connect_service import create_app
    from connect_service.config import generate_key, generate_secret
    from connect_service.connections import seal_settings
    from connect_service.db import database
    from connect_service.models import Connection, Credential, Organization, utcnow
    from connect_service.testing import make_config, reset_database

    bench_seed.recreate_pg_database(pg_url)
    cfg = make_config(tempfile.mkdtemp(prefix="connect-bench-"), database_url=pg_url,
                      encryption_keys=[generate_key()], secret_key=generate_secret(), log_level="WARNING")
    app = create_app(cfg)
    with app.app_context():
        reset_database()
    with app.app_context(), database.connection_context():
        org = Organization.create(name="bench")
        cred = Credential(org=org.id, name="bench oauth", connector_name="oauth2", oauth_url=token_url,
                          oauth_token_url=token_url, oauth_client_id=CLIENT_ID, oauth_scope="read",
                          token_endpoint_auth_method="client_secret_basic")
        cred.oauth_client_secret_encrypted = app.extensions["connect_keyring"].encrypt_json(
            CLIENT_SECRET, "credential", "oauth_client_secret", cred.id)
        cred.save(force_insert=True)
        now = utcnow()
        expired = now - datetime.timedelta(seconds=60)
        rows = []
        for i in range(count):
            conn = Connection(org=org.id, type=TYPE, connector_name="oauth2", integration_id=TYPE,
                              credential=cred.id, status="active", expires_at=expired, customer_id=f"user-{i}")
            creds = {"access_token": secrets.token_hex(16), "refresh_token": secrets.token_hex(16),
                     "token_type": "Bearer", "scope": "read", "expires_in": 3600, "client_id": CLIENT_ID,
                     "expires_at": expired.replace(microsecond=0).isoformat() + "Z"}
            conn.settings_encrypted = seal_settings(conn, {"oauth": {
                "credentials": creds, "created_at": now.isoformat() + "Z", "updated_at": now.isoformat() + "Z",
                "last_fetched_at": None, "metadata": {}}})
            rows.append(conn)
        with database.atomic():
            Connection.bulk_create(rows, batch_size=500)
        database.execute_sql("ANALYZE connection")
    return cfg


def top_frames(collapsed: str, count: int = 25) -> list[tuple[str, float]]:
    """The functions with the most samples of their own (leaf frames) in a py-spy ``raw`` file."""
    own: Counter[str] = Counter()
    for line in open(collapsed):
        stack, _, samples = line.rstrip().rpartition(" ")
        if stack and samples.isdigit():
            own[stack.split(";")[-1]] += int(samples)
    total = sum(own.values()) or 1
    return [(name, n / total) for name, n in own.most_common(count)]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(pg_url: str = DEFAULT_PG, count: int = 20000, runners: int = 4, concurrency: int | None = None,
         batch_size: int = 100, profile: str | None = None, py_spy: str | None = None) -> dict:
    """Seed, run ``runners`` refresh-due processes at once, print the results; returns them as a dict.

    ``profile``: a file name; the first runner then runs under pyinstrument (its main thread),
    which writes a text report there. ``py_spy``: a file name; the first runner then runs under
    ``py-spy record`` (every thread, native-speed sampling), which writes collapsed stacks there,
    and the functions with the most samples of their own are printed.
    """
    endpoint = TokenEndpoint()
    print(f"seeding {count} due connections into {pg_url.rsplit('/', 1)[1]} …", flush=True)
    cfg = seed(pg_url, count, endpoint.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update({f"CONNECT_{k.upper()}": (",".join(v) if isinstance(v, list) else str(v))
                for k, v in dict(cfg, env="development").items() if v is not None})
    cli = os.path.join(os.path.dirname(sys.executable), "connect-service")
    args = [cli, "refresh-due", "--batch-size", str(batch_size)]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    load_before = _load()
    children_before, self_before = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    profiled = args
    if profile:
        profiled = [sys.executable, "-m", "pyinstrument", "-r", "text", "--no-color", "-o", profile, *args]
    elif py_spy:
        spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
        profiled = [spy, "record", "--format", "raw", "--rate", "250", "--gil", "--nonblocking", "--output", py_spy, "--", *args]
    procs = [subprocess.Popen(profiled if i == 0 else args, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(runners)]
    outputs = [p.communicate(timeout=1800) for p in procs]
    wall = time.monotonic() - started
    load_after = _load()
    children, own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    runner_cpu = (children.ru_utime + children.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    endpoint_cpu = (own.ru_utime + own.ru_stime) - (self_before.ru_utime + self_before.ru_stime)
    summaries, finals = [], []
    for p, (out, err) in zip(procs, outputs):
        summary = None
        for line in reversed(out.strip().splitlines()):  # the last JSON line (py-spy prints its own lines)
            try:
                summary = json.loads(line)
                break
            except ValueError:
                continue
        summaries.append(summary if isinstance(summary, dict) else {"exit": p.returncode, "stderr": err[-500:]})
        finals.append(([line for line in err.splitlines() if line.startswith("refresh-due: processed")] or [""])[-1])
    refreshed = sum(s.get("refreshed", 0) for s in summaries)
    calls = sum(endpoint.presented.values())
    doubles = sum(1 for n in endpoint.presented.values() if n > 1)
    window = (endpoint.last_call - endpoint.first_call) if endpoint.first_call and endpoint.last_call else 0.0
    print(f"\nrefresh-due, PostgreSQL, {runners} runners"
          f"{'' if concurrency is None else f' × concurrency {concurrency}'}, batch size {batch_size}, "
          f"{count} due connections, local token endpoint")
    print(f"load average before {load_before}; after {load_after}")
    for i, (s, final) in enumerate(zip(summaries, finals)):
        print(f"  runner {i + 1}: {s}  {final.removeprefix('refresh-due: ')}")
    print(f"{'refreshed':>10} {'wall s':>7} {'refreshes/s':>12} {'calls-window s':>15} {'calls/s':>8} "
          f"{'token calls':>12} {'doubles':>8} {'endpoint errors':>16}")
    rate = refreshed / wall if wall else 0.0
    window_rate = calls / window if window else 0.0
    print(f"{refreshed:>10} {wall:>7.1f} {rate:>12.0f} {window:>15.1f} {window_rate:>8.0f} {calls:>12} "
          f"{doubles:>8} {endpoint.errors:>16}")
    print(f"CPU: runners {runner_cpu:.1f} s in all ({1000 * runner_cpu / max(refreshed, 1):.2f} ms per refresh); "
          f"token endpoint (this process) {endpoint_cpu:.1f} s; PostgreSQL not counted")
    print("wall s: first runner started → last runner exited (process start-up included); "
          "calls-window s: first → last token call at the endpoint")
    if profile:
        print(f"profile of runner 1 (pyinstrument, main thread): {profile}")
    if py_spy and os.path.exists(py_spy):
        print(f"profile of runner 1 (py-spy, all threads): {py_spy}; top functions by own samples:")
        for name, share in top_frames(py_spy):
            print(f"  {share:5.1%}  {name}")
    return {"refreshed": refreshed, "wall": wall, "rate": rate, "calls": calls, "doubles": doubles,
            "window_rate": window_rate, "runner_cpu": runner_cpu, "runners": summaries, "load_before": load_before, "load_after": load_after}


def cli_main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", default=os.environ.get("CONNECT_BENCH_PG_URL", DEFAULT_PG))
    add_arguments(parser)
    args = parser.parse_args()
    main(args.pg_url, args.connections, args.runners, args.concurrency, args.batch_size, args.profile, args.py_spy)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The refresh-due options (shared with bench_api.py)."""
    parser.add_argument("--connections", type=int, default=int(os.environ.get("CONNECT_BENCH_REFRESH_CONNECTIONS") or 20000),
                        help="due connections to seed (refresh-due mode)")
    parser.add_argument("--runners", type=int, default=4, help="parallel refresh-due processes (refresh-due mode)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="refresh-due --concurrency per runner (default: the command's own default)")
    parser.add_argument("--batch-size", type=int, default=100, help="refresh-due --batch-size (refresh-due mode)")
    parser.add_argument("--profile", metavar="FILE", default=None,
                        help="run the first refresh-due runner under pyinstrument, text report to FILE")
    parser.add_argument("--py-spy", metavar="FILE", default=None,
                        help="run the first refresh-due runner under py-spy (all threads), collapsed stacks to FILE")


if __name__ == "__main__":
    cli_main()
