"""Profile the hot endpoints in-process (Flask test client) with pyinstrument; prints the top frames.

    .venv/bin/pip install pyinstrument
    .venv/bin/python bench/profile_hot.py [--db sqlite|postgresql] [--requests 2000] [--html DIR]

Also prints the mean in-process cost per request of each endpoint (no profiler attached).
"""
from __future__ import annotations

import argparse
import os
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/cs_perf_bench")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--only", default="")
    parser.add_argument("--no-profile", action="store_true", help="only the µs per request")
    args = parser.parse_args()
    f = seed.Fixture(args.db, args.pg_url)
    client = f.app.test_client()
    token = {"Authorization": f"Bearer {f.token}"}
    cases = {
        "statuses": lambda: client.get("/v1/connect/requirements/statuses", headers=token),
        "requirements": lambda: client.get("/v1/connect/requirements", headers=token),
        "tokens": lambda: client.post("/v1/connect/tokens", json={"user_id": "bench-user"},
                                      headers={"Host": f.hostname}),
        "include_secrets": lambda: client.get(f"/v1/connections/{f.connection_id}?include_secrets=true",
                                              headers={"Authorization": f"Bearer {f.access_key}"}),
        "bare-404": lambda: client.get("/nothing-here"),
    }
    for name, call in cases.items():
        if args.only and name not in args.only.split(","):
            continue
        for _ in range(50):
            assert call().status_code < 500
        t0 = time.perf_counter()
        for _ in range(args.requests):
            call()
        per = (time.perf_counter() - t0) / args.requests * 1e6
        if args.no_profile:
            print(f"{name:16} {args.db:10} {per:7.0f} µs per request in-process", flush=True)
            continue
        profiler = Profiler(interval=0.0002)
        profiler.start()
        for _ in range(args.requests):
            call()
        profiler.stop()
        print(f"===== {name} ({args.db}): {per:.0f} µs per request in-process")
        print(profiler.output_text(unicode=True, color=False, show_all=False, timeline=False)[:6000])


if __name__ == "__main__":
    main()
