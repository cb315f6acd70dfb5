"""Profile the hot endpoints in-process (one WSGI call per request, no HTTP server) with pyinstrument.

    .venv/bin/pip install pyinstrument
    .venv/bin/python bench/profile_hot.py [--db sqlite|postgresql] [--requests 1000] [--only statuses,tokens]
    .venv/bin/python bench/profile_hot.py --no-profile     # only the cost per request, beside bare Flask

Each request is the app's WSGI callable on a prebuilt environ, with the Host wrk sends (the
service's own for connect-token and Access Key calls, the app's hostname for tokens), so what is
measured is Flask, the hooks and the view, not a test client; the access log is on, as in
production, written to /dev/null. ``bare`` is bench/bare_app.py's
``GET /ping`` measured the same way. Per request: CPU µs (best of 3 rounds) and Python function
calls (cProfile, a count that does not depend on the machine's load).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import seed  # noqa: E402
try:
    from pyinstrument import Profiler  # noqa: E402
except ImportError:  # --no-profile works without it
    Profiler = None


def wsgi_call(app, path: str, host: str, method: str = "GET", headers: dict | None = None, json=None):
    """A function that runs one request through ``app`` and returns its status line."""
    from werkzeug.test import EnvironBuilder

    builder = EnvironBuilder(path=path, method=method, headers=headers or {}, json=json, base_url=f"http://{host}")
    environ = builder.get_environ()
    body = environ["wsgi.input"].read()

    def call() -> str:
        env = dict(environ, **{"wsgi.input": io.BytesIO(body)})
        status = []
        result = app(env, lambda line, headers, exc_info=None: status.append(line))
        for _ in result:
            pass
        if hasattr(result, "close"):
            result.close()
        return status[0]

    return call


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/cs_perf_bench")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--only", default="")
    parser.add_argument("--no-profile", action="store_true", help="only the cost per request")
    args = parser.parse_args()
    import bare_app  # bench/bare_app.py

    f = seed.Fixture(args.db, args.pg_url)
    # as under gunicorn: the access log on, one JSON line per request (here to /dev/null, not the terminal)
    import logging

    service_log = logging.getLogger("connect_service")
    service_log.setLevel(logging.INFO)
    for handler in service_log.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))
    own = f"127.0.0.1:{f.svc_port}"
    token = {"Authorization": f"Bearer {f.token}"}
    cases = {
        "bare": wsgi_call(bare_app.app, "/ping", own),
        "statuses": wsgi_call(f.app, "/v1/connect/requirements/statuses", own, headers=token),
        "requirements": wsgi_call(f.app, "/v1/connect/requirements", own, headers=token),
        "tokens": wsgi_call(f.app, "/v1/connect/tokens", f.hostname, "POST", json={"user_id": "bench-user"}),
        "include_secrets": wsgi_call(f.app, f"/v1/connections/{f.connection_id}?include_secrets=true", own,
                                     headers={"Authorization": f"Bearer {f.access_key}"}),
    }
    for name, call in cases.items():
        if args.only and name not in args.only.split(","):
            continue
        for _ in range(50):
            status = call()
            assert status[0] in "2", (name, status)
        rounds = []
        for _ in range(3):
            started = time.process_time()
            for _ in range(args.requests):
                call()
            rounds.append((time.process_time() - started) / args.requests * 1e6)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(200):
            call()
        profile.disable()
        calls = pstats.Stats(profile).total_calls / 200
        print(f"{name:16} {args.db:10} {min(rounds):7.0f} µs CPU per request (best of 3), {calls:6.0f} calls",
              flush=True)
        if args.no_profile or name == "bare":
            continue
        profiler = Profiler(interval=0.0002)
        profiler.start()
        for _ in range(args.requests):
            call()
        profiler.stop()
        print(profiler.output_text(unicode=True, color=False, show_all=False, timeline=False)[:6000])


if __name__ == "__main__":
    main()
