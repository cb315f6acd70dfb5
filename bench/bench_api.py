"""Throughput and latency of the hot endpoints against a bare Flask baseline, same gunicorn settings.

    .venv/bin/python bench/bench_api.py [--requests 2000] [--concurrency 8] [--workers 2]

Starts two gunicorn servers on 127.0.0.1 (the bare app and connect-service on a fresh SQLite
database, or PostgreSQL with --database-url), seeds an org, app, user connection, and drives each
endpoint with a bounded number of requests from a thread pool. Prints a table; nothing is
asserted (benchmarks are not tests).
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(module: str, port: int, workers: int, env: dict, cwd: str) -> subprocess.Popen:
    cmd = [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "--workers", str(workers),
           "--worker-class", "gthread", "--threads", "4", "--bind", f"127.0.0.1:{port}",
           "--log-level", "warning", module]
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except requests.ConnectionError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{module} did not start")


def drive(method: str, url: str, total: int, concurrency: int, **kwargs) -> dict:
    session_local = {}

    def one(_):
        import threading

        s = session_local.setdefault(threading.get_ident(), requests.Session())
        t0 = time.perf_counter()
        r = s.request(method, url, timeout=30, **kwargs)
        return time.perf_counter() - t0, r.status_code

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(total)))
    elapsed = time.perf_counter() - start
    lat = sorted(r[0] for r in results)
    codes = {c for _, c in results}
    return {"rps": total / elapsed, "p50": statistics.median(lat) * 1000,
            "p99": lat[int(len(lat) * 0.99) - 1] * 1000, "codes": ",".join(map(str, sorted(codes)))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    from connect_service import create_app
    from connect_service.config import generate_key
    from connect_service.testing import make_config, reset_database

    tmp = tempfile.mkdtemp(prefix="connect-bench-")
    svc_port, bare_port = free_port(), free_port()
    cfg = make_config(tmp, public_url=f"http://127.0.0.1:{svc_port}", encryption_keys=[generate_key()],
                      rate_limit_tokens_per_minute=10**9, rate_limit_credentials_per_minute=10**9)
    if args.database_url:
        cfg["database_url"] = args.database_url
    app = create_app(cfg)
    with app.app_context():
        reset_database()
    from connect_service.testing import ConnectHarness
    from connect_service.api.access_keys import create_access_key
    from connect_service.models import Organization

    with app.app_context():
        org = Organization.create(name="bench")
        _, key = create_access_key(org)
    h = ConnectHarness(app=app, client=app.test_client(), org_id=org.id, access_key=key)
    demo = h.create_app_with_requirements([
        {"key": "helpdesk", "type": "connection", "title": "Helpdesk",
         "spec": {"type": "connection", "data": {"type": "dynamiq.connections.HttpApiKey"}}}])
    token = h.token(demo, "bench-user")
    rid = h.requirement_id(demo, "helpdesk")
    assert h.submit_credentials(token, rid, "dynamiq.connections.HttpApiKey",
                                {"url": "https://h.example", "api_key": "k"}).status_code == 201

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update({f"CONNECT_{k.upper()}": (",".join(v) if isinstance(v, list) else str(v))
                for k, v in cfg.items() if v is not None})
    procs = [start_gunicorn("bare_app:app", bare_port, args.workers, env, os.path.join(ROOT, "bench")),
             start_gunicorn("wsgi:app", svc_port, args.workers, env, ROOT)]
    try:
        base = f"http://127.0.0.1:{svc_port}"
        auth = {"Authorization": f"Bearer {token}"}
        cases = [
            ("bare Flask GET /ping (baseline)", "GET", f"http://127.0.0.1:{bare_port}/ping", {}),
            ("GET /healthz", "GET", f"{base}/healthz", {}),
            ("GET /v1/connect/requirements", "GET", f"{base}/v1/connect/requirements", {"headers": auth}),
            ("GET /v1/connect/requirements/statuses", "GET", f"{base}/v1/connect/requirements/statuses",
             {"headers": auth}),
            ("POST /v1/connect/tokens", "POST", f"{base}/v1/connect/tokens",
             {"headers": {"Host": demo["hostname"]}, "json": {"user_id": "bench-user"}}),
            ("POST …/credentials (encrypt+write)", "POST", f"{base}/v1/connect/requirements/{rid}/credentials",
             {"headers": auth, "json": {"type": "dynamiq.connections.HttpApiKey",
                                        "config": {"url": "https://h.example", "api_key": "k2"}}}),
        ]
        drive("GET", cases[0][2], 50, 2)  # warm-up
        rows = []
        for label, method, url, kwargs in cases:
            rows.append((label, drive(method, url, args.requests, args.concurrency, **kwargs)))
        baseline = rows[0][1]["rps"]
        db = "PostgreSQL" if args.database_url else "SQLite"
        print(f"\n{args.requests} requests per row, concurrency {args.concurrency}, gunicorn gthread "
              f"{args.workers} workers x 4 threads, {db}\n")
        print(f"{'endpoint':42} {'req/s':>8} {'vs bare':>8} {'p50 ms':>8} {'p99 ms':>8}  status")
        print("-" * 88)
        for label, r in rows:
            print(f"{label:42} {r['rps']:8.0f} {r['rps'] / baseline:8.2f} {r['p50']:8.2f} {r['p99']:8.2f}  "
                  f"{r['codes']}")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
